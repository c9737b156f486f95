"""From step examples to scored rollout groups: prompt, generate G each, reward, filter, refill.

`collect_groups` is the paper's dynamic sampling: it samples prompts, keeps a prompt only if its group
of G rewards passes the filter (`std`: population std > eps; `dapo`: neither all right nor all wrong),
and samples again for the prompts still missing until the batch of kept prompts is full or
`max_rounds` rounds have run (then it trains on the partial batch and says so in the metrics).
`evaluate_examples` is the held-out measurement shared by validation and `srl_agent.evaluate`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from srl_agent import grpo
from srl_agent.config import GRPOConfig, PromptConfig, RewardConfig
from srl_agent.data import DataStream
from srl_agent.generation import Completion, Generator
from srl_agent.prompts import messages, prompt_ids
from srl_agent.rewards import Scored, math_outcome_reward, step_reward
from trajectories.record import StepExample

Scorer = Callable[[str, StepExample], Scored]


def make_scorer(task: str, stage: str, cfg: RewardConfig, prefill: str = "") -> Scorer:
    """The reward of one completion for an example: outcome for rlvr, step similarity otherwise.

    `prefill` (the prompt's opening of the assistant turn) is put back in front of the completion: the
    format check sees the whole output.
    """
    if stage == "rlvr":
        if task != "math":
            raise ValueError("the SWE outcome reward (tests pass in a sandbox) arrives with the agent issue")
        return lambda text, ex: math_outcome_reward(prefill + text, ex.answer, cfg.allow_preamble)
    similarity = (
        cfg.similarity if cfg.similarity != "auto" else ("difflib" if task == "math" else "rapidfuzz")
    )
    return lambda text, ex: step_reward(
        prefill + text, ex.target, ex.kind, similarity, cfg.autojunk, cfg.strip, cfg.allow_preamble
    )


def rlvr_examples(examples: list[StepExample]) -> list[StepExample]:
    """RLVR trains on whole problems: the first step example of each group that carries an answer."""
    first: dict[str, StepExample] = {}
    for ex in examples:
        if ex.answer is not None and (
            ex.group_id not in first or ex.step_index < first[ex.group_id].step_index
        ):
            first[ex.group_id] = ex
    return list(first.values())


@dataclass
class Group:
    example: StepExample
    prompt: list[int]
    completions: list[Completion]
    scores: list[Scored]
    advantages: list[float] = field(default_factory=list)


@dataclass
class Collected:
    kept: list[Group]
    sampled: list[Group]
    rounds: int
    seconds_generation: float = 0.0
    seconds_reward: float = 0.0

    def stats(self, eps: float) -> dict[str, Any]:
        rewards = [s.reward for g in self.sampled for s in g.scores]
        zero_std = [statistics.pstdev([s.reward for s in g.scores]) <= eps for g in self.sampled]
        completions = [c for g in self.sampled for c in g.completions]
        return {
            "reward_mean": statistics.fmean(rewards),
            "reward_std": statistics.pstdev(rewards),
            "format_error_rate": sum(s.format_error is not None for g in self.sampled for s in g.scores)
            / len(rewards),
            "zero_std_fraction": sum(zero_std) / len(zero_std),
            "truncated_rate": sum(c.truncated for c in completions) / len(completions),
            "completion_tokens_mean": statistics.fmean(len(c.token_ids) for c in completions),
            "kept_prompts": len(self.kept),
            "sampled_prompts": len(self.sampled),
            "sampling_rounds": self.rounds,
        }


class PromptCache:
    """Token ids of each example's prompt, rendered once per example (chat templates are slow)."""

    def __init__(self, tokenizer: Any, task: str, stage: str, cfg: PromptConfig):
        self.tokenizer, self.task, self.stage, self.cfg = tokenizer, task, stage, cfg
        self._ids: dict[str, list[int]] = {}

    def __call__(self, example: StepExample) -> list[int]:
        key = example.example_id
        if key not in self._ids:
            chat = messages(
                example, self.task, self.stage, self.cfg.system_prompt, self.cfg.omitted_steps_note
            )
            prefill = (
                self.tokenizer(self.cfg.prefill, add_special_tokens=False)["input_ids"]
                if self.cfg.prefill
                else []
            )
            self._ids[key] = prompt_ids(self.tokenizer, chat) + prefill
        return self._ids[key]


def sample_groups(
    examples: list[StepExample],
    prompts: PromptCache,
    generator: Generator,
    scorer: Scorer,
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
        Group(ex, p, comps, [scorer(c.text, ex) for c in comps])
        for ex, p, comps in zip(examples, ids, outs, strict=True)
    ]
    timings["generation"] = timings.get("generation", 0.0) + generated - started
    timings["reward"] = timings.get("reward", 0.0) + time.perf_counter() - generated
    return groups


def collect_groups(
    stream: DataStream,
    batch_size: int,
    prompts: PromptCache,
    generator: Generator,
    scorer: Scorer,
    cfg: GRPOConfig,
    filter_name: str,
    max_new_tokens: int,
    temperature: float,
) -> Collected:
    """Sample and filter groups until `batch_size` prompts are kept or `cfg.max_sampling_rounds` ran."""
    keep_fn = grpo.FILTERS[filter_name]
    advantage_fn = grpo.ADVANTAGES[cfg.advantage]
    kept: list[Group] = []
    sampled: list[Group] = []
    rounds = 0
    timings: dict[str, float] = {}
    while len(kept) < batch_size and rounds < max(1, cfg.max_sampling_rounds):
        rounds += 1
        groups = sample_groups(
            stream.take(batch_size - len(kept)),
            prompts,
            generator,
            scorer,
            cfg.group_size,
            max_new_tokens,
            temperature,
            timings,
        )
        sampled += groups
        rewards = torch.tensor([[s.reward for s in g.scores] for g in groups], dtype=torch.float64)
        keep = keep_fn(rewards, cfg.filter_eps)
        advantages = advantage_fn(rewards, cfg.advantage_eps)
        for g, k, adv in zip(groups, keep.tolist(), advantages.tolist(), strict=True):
            if k:
                g.advantages = adv
                kept.append(g)
    return Collected(kept, sampled, rounds, timings.get("generation", 0.0), timings.get("reward", 0.0))


def evaluate_examples(
    examples: list[StepExample],
    prompts: PromptCache,
    generator: Generator,
    scorer: Scorer,
    max_new_tokens: int,
    temperature: float,
    greedy: bool = True,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean reward and format-error rate of one completion per example (greedy by default)."""
    ids = [prompts(ex) for ex in examples]
    outs = generator.generate(ids, 1, max_new_tokens, temperature, greedy=greedy)
    rows = []
    for ex, comps in zip(examples, outs, strict=True):
        scored = scorer(comps[0].text, ex)
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
    n = max(len(rows), 1)
    summary = {
        "reward_mean": sum(r["reward"] for r in rows) / n,
        "format_error_rate": sum(r["format_error"] is not None for r in rows) / n,
        "truncated_rate": sum(r["truncated"] for r in rows) / n,
        "examples": len(rows),
    }
    return summary, rows
