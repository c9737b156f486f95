"""From step examples to scored rollout groups: prompt, generate G each, reward, filter, refill.

`collect_groups` is the paper's dynamic sampling: it samples prompts, keeps a prompt only if its group
of G rewards passes the filter (`std`: population std > eps; `dapo`: neither all right nor all wrong),
and samples again for the prompts still missing until the batch of kept prompts is full or
`max_rounds` rounds have run (then it trains on the partial batch and says so in the metrics).
`dynamic_sampling` is that loop for any kind of group (SWE RLVR's groups of agent episodes use it too).
`evaluate_examples` is the held-out measurement shared by validation and `srl_agent.evaluate`.
Prompts come from `srl_agent.prompts`, rewards from the task spec (`srl_agent.tasks`); pure rewards
are called without an environment here (an environment reward needs the agent loop's rollouts).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch

from srl_agent import grpo
from srl_agent.config import GRPOConfig
from srl_agent.data import DataStream
from srl_agent.distributed import ONE_PROCESS, World
from srl_agent.protocols import Completion, Generator, Reward, Scored
from trajectories.record import StepExample

if TYPE_CHECKING:
    from srl_agent.runlog import SamplingConsole

Prompts = Callable[[StepExample], list[int]]
"""An example's prompt token ids (`srl_agent.prompts.PromptCache`)."""


@dataclass
class Group:
    """One prompt's G rollouts with their rewards (and advantages, once the group is kept)."""

    example: StepExample
    prompt: list[int]
    completions: list[Completion]
    scores: list[Scored]
    advantages: list[float] = field(default_factory=list)


class Judged(Protocol):
    """A group of rollouts of one prompt (or task): their rewards, and the advantages once it is kept."""

    scores: list[Scored]
    advantages: list[float]


G = TypeVar("G", bound=Judged)


@dataclass
class Collected(Generic[G]):
    """What one step's dynamic sampling produced, for groups of step completions (`Group`) and of
    agent episodes (`swe_rlvr.EpisodeGroup`) alike: the kept groups, every group sampled, the rounds
    and the seconds it took. `step_stats` and `swe_rlvr.collected_stats` are their metrics."""

    kept: list[G]
    sampled: list[G]
    rounds: int
    seconds_generation: float = 0.0
    seconds_reward: float = 0.0
    """Scoring the completions (step groups; episodes are graded within their rollouts)."""
    seconds_rollouts: float = 0.0
    """The episodes, generation and grading included (episode groups)."""
    batch_sizes: list[int] = field(default_factory=list)
    """The size of each batched generate call of the episodes' turns (episode groups)."""

    def everywhere(self, world: World) -> Collected[G]:
        """The groups of every rank (this rank's alone on one process), for the step's metrics: the
        rounds (the same on all), the seconds of the slowest rank. A collective."""
        if world.size == 1:
            return self
        parts = world.gather(self)
        return Collected(
            kept=[g for p in parts for g in p.kept],
            sampled=[g for p in parts for g in p.sampled],
            rounds=self.rounds,
            seconds_generation=max(p.seconds_generation for p in parts),
            seconds_reward=max(p.seconds_reward for p in parts),
            seconds_rollouts=max(p.seconds_rollouts for p in parts),
            batch_sizes=[b for p in parts for b in p.batch_sizes],
        )


def step_stats(collected: Collected[Group], eps: float) -> dict[str, Any]:
    """The metrics of a step's groups of completions (`eps`: the filter's, for `zero_std_fraction`)."""
    sampled = collected.sampled
    rewards = [s.reward for g in sampled for s in g.scores]
    zero_std = [statistics.pstdev([s.reward for s in g.scores]) <= eps for g in sampled]
    completions = [c for g in sampled for c in g.completions]
    return {
        "reward_mean": statistics.fmean(rewards),
        "reward_std": statistics.pstdev(rewards),
        "format_error_rate": sum(s.format_error is not None for g in sampled for s in g.scores)
        / len(rewards),
        "zero_std_fraction": sum(zero_std) / len(zero_std),
        "masked_rate": sum(s.masked is not None for g in sampled for s in g.scores) / len(rewards),
        "truncated_rate": sum(c.truncated for c in completions) / len(completions),
        "completion_tokens_mean": statistics.fmean(len(c.token_ids) for c in completions),
        "completion_tokens": sum(len(c.token_ids) for c in completions),
        "kept_prompts": len(collected.kept),
        "sampled_prompts": len(sampled),
        "sampling_rounds": collected.rounds,
    }


def sample_groups(
    examples: list[StepExample],
    prompts: Prompts,
    generator: Generator,
    reward: Reward,
    n: int,
    max_new_tokens: int,
    temperature: float,
    timings: dict[str, float] | None = None,
) -> list[Group]:
    """`n` scored completions for each example; `timings` accumulates generation and reward seconds."""
    timings = {} if timings is None else timings
    started = time.perf_counter()
    ids = [prompts(ex) for ex in examples]
    outs = generator.generate(ids, n, max_new_tokens, temperature)
    generated = time.perf_counter()
    groups = [
        Group(ex, p, comps, [reward(c.text, ex) for c in comps])
        for ex, p, comps in zip(examples, ids, outs, strict=True)
    ]
    timings["generation"] = timings.get("generation", 0.0) + generated - started
    timings["reward"] = timings.get("reward", 0.0) + time.perf_counter() - generated
    return groups


def collect_groups(
    stream: DataStream,
    batch_size: int,
    prompts: Prompts,
    generator: Generator,
    reward: Reward,
    cfg: GRPOConfig,
    max_new_tokens: int,
    temperature: float,
    world: World = ONE_PROCESS,
    console: SamplingConsole | None = None,
) -> Collected[Group]:
    """Sample and filter groups until `batch_size` prompts are kept or `cfg.max_sampling_rounds` ran
    (on several ranks: this rank's groups, `batch_size` counted over all ranks). `console` (if any)
    shows each round's generation and a line when it is judged.

    `cfg.filter` must be resolved (not `auto`: see `srl_agent.tasks.resolve`).
    """
    timings: dict[str, float] = {}

    def sample(examples: list[StepExample]) -> list[Group]:
        with console.generating(len(examples)) if console else contextlib.nullcontext():
            return sample_groups(
                examples, prompts, generator, reward, cfg.group_size, max_new_tokens, temperature, timings
            )

    on_round = console.round_done if console else None
    kept, sampled, rounds = dynamic_sampling(stream, batch_size, sample, cfg, world, on_round)
    return Collected(kept, sampled, rounds, timings.get("generation", 0.0), timings.get("reward", 0.0))


def dynamic_sampling(
    stream: DataStream,
    batch_size: int,
    sample: Callable[[list[Any]], list[G]],
    cfg: GRPOConfig,
    world: World = ONE_PROCESS,
    on_round: Callable[[int, int, int, int, int, float], None] | None = None,
) -> tuple[list[G], list[G], int]:
    """The paper's dynamic sampling, for any kind of group: `sample` the groups of the next items of
    `stream`, keep those the filter passes (their advantages set), and sample again for the items
    still missing until `batch_size` are kept or `cfg.max_sampling_rounds` ran.

    On several ranks every rank draws the same items from its copy of the stream and samples its
    `world.shard` of them; the kept count is summed over the ranks, so all run the same rounds and
    `batch_size` is the batch of all ranks together.

    `on_round(round, items, kept, total kept, batch_size, start time)` is called after each round.

    Returns (this rank's kept groups, every group it sampled, rounds).
    """
    keep_fn = grpo.FILTERS[cfg.filter]
    advantage_fn = grpo.ADVANTAGES[cfg.advantage]
    kept: list[G] = []
    sampled: list[G] = []
    rounds = total_kept = 0
    while total_kept < batch_size and rounds < max(1, cfg.max_sampling_rounds):
        rounds += 1
        started, before = time.perf_counter(), len(kept)
        mine = world.shard(stream.take(batch_size - total_kept))
        groups = sample(mine) if mine else []  # (no generate call for nothing)
        sampled += groups
        for g, k, adv in zip(groups, *judge(groups, keep_fn, advantage_fn, cfg), strict=True):
            if k:
                g.advantages = adv
                kept.append(g)
        total_kept = int(world.sum(len(kept)))
        if on_round is not None:
            on_round(rounds, len(mine), len(kept) - before, total_kept, batch_size, started)
    return kept, sampled, rounds


def judge(
    groups: list[Judged], keep_fn: Callable, advantage_fn: Callable, cfg: GRPOConfig
) -> tuple[list[bool], list[list[float]]]:
    """Per group: whether the filter keeps it, and each rollout's advantage.

    Masked rollouts (no reward could be computed) take no part: the filter and the advantages see only
    the group's other rollouts, a masked one gets advantage 0 (and is not trained on), and a group
    with fewer than two rewarded rollouts is dropped.
    """
    if not groups:  # a rank given no items in a refill round
        return [], []
    rewards = torch.tensor([[s.reward for s in g.scores] for g in groups], dtype=torch.float64)
    valid = [[s.masked is None for s in g.scores] for g in groups]
    if all(all(v) for v in valid):
        keep = keep_fn(rewards, cfg.filter_eps).tolist()
        return keep, advantage_fn(rewards, cfg.advantage_eps).tolist()
    keep, advantages = [], []
    for row, ok in zip(rewards, valid, strict=True):
        mask = torch.tensor(ok)
        adv = [0.0] * len(ok)
        kept = int(mask.sum()) >= 2 and bool(keep_fn(row[mask][None], cfg.filter_eps)[0])
        if kept:
            for i, a in zip(
                mask.nonzero().flatten().tolist(),
                advantage_fn(row[mask][None], cfg.advantage_eps)[0].tolist(),
                strict=True,
            ):
                adv[i] = a
        keep.append(kept)
        advantages.append(adv)
    return keep, advantages


@dataclass
class Evaluation:
    """Held-out results: `summary` (means over examples) and one row per example."""

    summary: dict[str, float]
    rows: list[dict[str, Any]]


def evaluate_examples(
    examples: list[StepExample],
    prompts: Prompts,
    generator: Generator,
    reward: Reward,
    max_new_tokens: int,
    temperature: float,
    greedy: bool = True,
) -> Evaluation:
    """Mean reward and format-error rate of one completion per example (greedy by default)."""
    ids = [prompts(ex) for ex in examples]
    outs = generator.generate(ids, 1, max_new_tokens, temperature, greedy=greedy)
    rows = []
    for ex, comps in zip(examples, outs, strict=True):
        scored = reward(comps[0].text, ex)
        rows.append(
            {
                "example_id": ex.example_id,
                "reward": scored.reward,
                "format_error": scored.format_error,
                "completion": comps[0].text,
                "target": ex.target,
                "truncated": comps[0].truncated,
            }
        )
    return Evaluation(summarize(rows), rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The means of `evaluate_examples` rows (of one process or gathered from several)."""
    n = max(len(rows), 1)
    return {
        "reward_mean": sum(r["reward"] for r in rows) / n,
        "format_error_rate": sum(r["format_error"] is not None for r in rows) / n,
        "truncated_rate": sum(r["truncated"] for r in rows) / n,
        "examples": len(rows),
    }
