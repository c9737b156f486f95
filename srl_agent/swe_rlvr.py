"""SWE RLVR rollouts: agent episodes in the environment pool, rewarded by the task's tests.

`python -m srl_agent.train --task swe --stage rlvr` trains on whole episodes. Per training step
(`EpisodeRunner.collect`, the paper's dynamic sampling through `rollouts.dynamic_sampling`):
1. B tasks from the stream, G episodes each, all at once on threads: each episode takes a warm
   environment of its task's image from the pool (reset to the base commit, the git history past it
   hidden: `EnvConfig.hide_history`) and runs the agent loop (`srl_agent.agent.run_episode`) with the
   policy sampling. The episodes' turns are generated together (`policies.BatchedPolicy`).
2. The episode's patch is graded by the one grading path (`environments.episodes.run_graded`, the
   `grading` section, as evaluation grades): the fast runner in the same environment, reset first, so
   the task's test patch is applied only then, never in the agent's view; tasks without the bundled
   layout go to the official harness. Reward 1 when every FAIL_TO_PASS and PASS_TO_PASS test passes,
   else 0 (`outcome_score`).
3. Groups that are all right or all wrong carry no signal and are dropped (DAPO's filter); the step
   samples more tasks for the missing ones, up to `grpo.max_sampling_rounds` rounds.

Infrastructure failures are masked, never scored: a missing image, an engine or container that fails
(the episode's `environment_error`), a policy whose model call raised, a grading run that could not
produce test results. Such an episode gets `Scored.masked` (its reason) and takes no part in the
filter, the advantages or the loss; the metrics count it, and a task all of whose episodes were masked
is named (`infrastructure_failed_tasks`).

What is trained is what was sampled: each turn of an episode keeps the prompt token ids the model
was given and the completion token ids it wrote (`protocols.Turn`); the trainer packs exactly those
(`update.episode_sequences`), the loss mask covering only the completion. The observation, the
context and the chat template are in the prompt of the next turn, so they never carry gradient, and
nothing is re-tokenized between sampling and training. Every turn of an episode shares the episode's
advantage, format errors included (the policy wrote them).
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srl_agent import rollouts
from srl_agent.distributed import ONE_PROCESS, World
from srl_agent.protocols import Scored

if TYPE_CHECKING:
    from environments.config import EnvConfig, GradingConfig
    from environments.grading import GradeResult
    from environments.protocol import TaskInstance
    from srl_agent.config import AgentConfig, GRPOConfig, ResolvedTrainConfig, TrainConfig
    from srl_agent.data import DataStream
    from srl_agent.generation.loader import Inference
    from srl_agent.policies import BatchedPolicy
    from srl_agent.protocols import Turn
    from trajectories.build import BuildConfig

log = logging.getLogger(__name__)


def outcome_score(grade: GradeResult) -> Scored:
    """The outcome reward of a graded patch: 1 resolved; 0 unresolved, not applying, empty or hanging the
    tests (`timeout`: the policy's doing); masked when the grader could not run the tests (`error`: no verdict)."""
    from environments.episodes import grading_failure

    if (why := grading_failure(grade)) is not None:
        return Scored(0.0, None, masked=why)
    return Scored(1.0 if grade.resolved else 0.0, None)


@dataclass
class EpisodeRollout:
    """One episode of one task: its reward and the policy's turns as sampled."""

    instance_id: str
    score: Scored
    turns: list[Turn] = field(default_factory=list, repr=False)
    exit_status: str | None = None
    """The episode's exit status; None when no episode ran (no image, no environment)."""
    grade: str | None = None
    """The grader's status (`resolved`, `unresolved`, `patch_failed`, `empty_patch`, `timeout`, `error`)."""
    steps: int = 0
    """Tool calls that ran (format errors excluded)."""
    format_errors: int = 0
    seconds_tools: float = 0.0
    seconds_grading: float = 0.0


@dataclass
class EpisodeGroup:
    """The G episodes of one task (and their advantages, once the group is kept)."""

    task: TaskInstance
    rollouts: list[EpisodeRollout]
    advantages: list[float] = field(default_factory=list)

    @property
    def scores(self) -> list[Scored]:
        return [r.score for r in self.rollouts]


CollectedEpisodes = rollouts.Collected[EpisodeGroup]
"""One step's episode groups: the collected type of step groups too (`rollouts.Collected`)."""


def collected_stats(collected: CollectedEpisodes) -> dict[str, Any]:
    """The metrics of one step's episode groups: `episode_stats` of those sampled, and what was kept,
    the rounds and the seconds."""
    return episode_stats(collected.sampled) | {
        "kept_prompts": len(collected.kept),
        "sampled_prompts": len(collected.sampled),
        "sampling_rounds": collected.rounds,
        "seconds_generation": collected.seconds_generation,
        "seconds_rollouts": collected.seconds_rollouts,
        "generation_batch_mean": statistics.fmean(collected.batch_sizes) if collected.batch_sizes else 0.0,
    }


def episode_stats(groups: list[EpisodeGroup]) -> dict[str, Any]:
    """The metrics of a set of episode groups (pure): rewards over the episodes that were scored,
    masked episodes and their reasons, filtered and infrastructure-failed tasks by name, episode
    lengths, exit statuses, tokens, and the tools' and grading's seconds (summed over episodes)."""
    episodes = [r for g in groups for r in g.rollouts]
    scored = [r for r in episodes if r.score.masked is None]
    rewards = [r.score.reward for r in scored]
    turns = [t for r in episodes for t in r.turns]
    filtered: dict[str, list[str]] = {"all_right": [], "all_wrong": []}
    infrastructure_failed = []
    for g in groups:
        valid = [s.reward for s in g.scores if s.masked is None]
        if not valid:
            infrastructure_failed.append(g.task.instance_id)
        elif len(set(valid)) == 1:  # one value, as a single valid reward is too
            filtered["all_right" if valid[0] >= 1.0 else "all_wrong"].append(g.task.instance_id)
    reasons = Counter(r.score.masked.split(":")[0] for r in episodes if r.score.masked is not None)
    return {
        "reward_mean": statistics.fmean(rewards) if rewards else None,
        "reward_std": statistics.pstdev(rewards) if rewards else None,
        "resolved": sum(r.grade == "resolved" for r in scored),
        "episodes": len(episodes),
        "masked_episodes": len(episodes) - len(scored),
        "masked_rate": (len(episodes) - len(scored)) / max(len(episodes), 1),
        "masked_reasons": dict(reasons),
        "infrastructure_failed_tasks": infrastructure_failed,
        "filtered_tasks": filtered,
        "zero_std_fraction": sum(map(len, filtered.values())) / max(len(groups), 1),
        "format_error_rate": sum(r.format_errors for r in episodes) / max(len(turns), 1),
        "episode_turns_mean": statistics.fmean(len(r.turns) for r in episodes) if episodes else 0.0,
        "episode_steps_mean": statistics.fmean(r.steps for r in episodes) if episodes else 0.0,
        "exit_statuses": dict(Counter(r.exit_status or "not_started" for r in episodes)),
        "grades": dict(Counter(r.grade or "not_graded" for r in episodes)),
        "truncated_rate": sum(t.truncated for t in turns) / max(len(turns), 1),
        "completion_tokens": sum(t.completion_tokens for t in turns),
        "prompt_tokens": sum(t.prompt_tokens for t in turns),
        "seconds_tools": sum(r.seconds_tools for r in episodes),
        "seconds_grading": sum(r.seconds_grading for r in episodes),
    }


class EpisodeRunner:
    """Runs and grades episodes of tasks on `pool`, `pool.size` at a time, with one shared policy."""

    def __init__(
        self,
        policy: BatchedPolicy,
        pool: Any,
        agent: AgentConfig,
        build: BuildConfig,
        env_cfg: EnvConfig,
        grading: GradingConfig,
        work_dir: Path,
    ) -> None:
        self.policy, self.pool, self.agent, self.build = policy, pool, agent, build
        self.env_cfg, self.grading, self.work_dir = env_cfg, grading, work_dir

    def collect(
        self, stream: DataStream, batch_size: int, grpo: GRPOConfig, world: World = ONE_PROCESS
    ) -> CollectedEpisodes:
        """Dynamic sampling over tasks: groups of `grpo.group_size` episodes until `batch_size` tasks
        are kept (or `grpo.max_sampling_rounds` ran); on several ranks, this rank's share of the tasks
        and `batch_size` counted over all ranks."""
        started, generated, batches = time.perf_counter(), self.policy.seconds, len(self.policy.batches)

        def sample(tasks: list[TaskInstance]) -> list[EpisodeGroup]:
            round_started = time.perf_counter()
            groups = self.groups(tasks, grpo.group_size)
            stats = episode_stats(groups)
            print(
                f"  episodes: {stats['episodes']} of {len(tasks)} tasks in "
                f"{time.perf_counter() - round_started:.0f} s, {stats['resolved']} resolved, "
                f"{stats['masked_episodes']} masked, exits {stats['exit_statuses']}",
                file=sys.stderr,
                flush=True,
            )
            return groups

        kept, sampled, rounds = rollouts.dynamic_sampling(stream, batch_size, sample, grpo, world)
        return CollectedEpisodes(
            kept,
            sampled,
            rounds,
            seconds_generation=self.policy.seconds - generated,
            seconds_rollouts=time.perf_counter() - started,
            batch_sizes=self.policy.batches[batches:],
        )

    def validate(self, tasks: list[TaskInstance]) -> dict[str, Any]:
        """One episode per held-out task (greedy unless `agent.greedy` is off): `val_reward_mean` is
        the resolved rate over the episodes that could be scored."""
        started = time.perf_counter()
        stats = episode_stats(self.groups(tasks, 1))
        keys = ("reward_mean", "resolved", "episodes", "masked_episodes", "format_error_rate",
                "episode_turns_mean", "exit_statuses")  # fmt: skip
        return {f"val_{k}": stats[k] for k in keys} | {"seconds_validation": time.perf_counter() - started}

    def groups(self, tasks: list[TaskInstance], group_size: int) -> list[EpisodeGroup]:
        """`group_size` episodes of each task, run concurrently; groups in task order."""
        jobs = [task for task in tasks for _ in range(group_size)]
        with ThreadPoolExecutor(max_workers=self.pool.size, thread_name_prefix="episode") as executor:
            done = list(executor.map(self.rollout, jobs))
        return [
            EpisodeGroup(task, done[i * group_size : (i + 1) * group_size]) for i, task in enumerate(tasks)
        ]

    def rollout(self, task: TaskInstance) -> EpisodeRollout:
        """One graded episode of `task`; an infrastructure failure anywhere is a masked rollout.

        The episode counts as running (for batching its turns) from before its container starts."""
        with self.policy.episode() as policy:
            return self._run(task, policy)

    def _run(self, task: TaskInstance, policy: Any) -> EpisodeRollout:
        from environments.episodes import Acted, run_graded
        from srl_agent.agent import run_episode

        def act(env: Any) -> Acted:  # the agent loop turns the environment's faults into an exit status
            episode = run_episode(
                policy, env, task.problem_statement, task.instance_id, self.agent, self.build
            )
            return Acted(episode, episode.patch, episode.detail if episode.infrastructure_error else None)

        done = run_graded(
            task, act, self.pool, self.grading, env_cfg=self.env_cfg, work_dir=self.work_dir / "harness",
            act_name="policy",
        )  # fmt: skip
        if done.masked is not None:
            return self._rollout(task.instance_id, done.episode, Scored(0.0, None, masked=done.masked))
        assert done.grade is not None  # graded at once: nothing is deferred here
        rollout = self._rollout(task.instance_id, done.episode, outcome_score(done.grade))
        rollout.grade, rollout.seconds_grading = done.grade.status, done.seconds_grading
        return rollout

    @staticmethod
    def _rollout(iid: str, episode: Any, score: Scored) -> EpisodeRollout:
        if episode is None:
            return EpisodeRollout(iid, score)
        return EpisodeRollout(
            iid,
            score,
            list(episode.outputs),
            episode.exit_status,
            steps=len(episode.trajectory.steps),
            format_errors=sum(t.format_error is not None for t in episode.turns),
            seconds_tools=sum(t.environment_seconds for t in episode.turns),
        )


def load_tasks(cfg: TrainConfig, run_dir: Path, resume: bool) -> tuple[list[Any], list[Any]]:
    """The training and validation tasks of `data.source` (`auto`: the bundled tasks; else task
    folders, SWE-bench / SWE-smith instance files or an HF dataset, as `evaluate --instances` takes).

    The split (`episodes.val_tasks` held out, a seeded choice) is saved in `<run>/data/tasks.json`;
    a resumed run reads it back, so it goes on with the tasks it started with.
    """
    import json
    import random

    from environments.grader import refused
    from environments.tasks.sources import TaskSourceError, load_task_source
    from trajectories.config import ConfigError

    episodes, source = cfg.episodes, cfg.data.source
    try:
        tasks, skipped = load_task_source(
            None if source in ("auto", "bundled") else source,
            split=episodes.split,
            instance_ids=episodes.instance_ids or None,
        )
    except TaskSourceError as e:
        raise ConfigError(f"data.source: {e}") from None
    ungradable = refused(tasks, cfg.grading)
    skipped = [*skipped, *ungradable]
    tasks = [t for t in tasks if t.instance_id not in dict(ungradable)]
    for iid, reason in skipped:
        print(f"data: {iid} skipped: {reason}", file=sys.stderr)
    by_id = {t.instance_id: t for t in tasks}
    saved = run_dir / "data" / "tasks.json"
    if resume and saved.is_file():
        split = json.loads(saved.read_text(encoding="utf-8"))
        gone = [iid for iid in split["train"] + split["validation"] if iid not in by_id]
        if gone:
            raise ConfigError(f"data.source: the run was started with tasks it no longer has: {gone[:5]}")
    else:
        ids = sorted(by_id)
        random.Random(cfg.seed).shuffle(ids)
        if ids and episodes.val_tasks >= len(ids):
            raise ConfigError(
                f"episodes.val_tasks: {episodes.val_tasks} of {len(ids)} tasks leaves none to train on"
            )
        train = sorted(ids[episodes.val_tasks :])[: cfg.data.max_train_examples]
        split = {"train": train, "validation": sorted(ids[: episodes.val_tasks])}
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")
    if not split["train"]:
        raise ConfigError(f"data.source: {source} has no task an episode can be graded on")
    label = "the bundled tasks" if source in ("auto", "bundled") else source
    print(f"data: {len(split['train'])} train / {len(split['validation'])} validation tasks from {label}")
    return [by_id[i] for i in split["train"]], [by_id[i] for i in split["validation"]]


def make_runners(
    cfg: ResolvedTrainConfig, run_dir: Path, inference: Inference, closing: ExitStack
) -> tuple[EpisodeRunner, EpisodeRunner]:
    """The runner of training episodes (sampled) and of validation episodes (greedy) of the policy
    `inference` samples from, sharing one environment pool that `closing` removes."""
    from environments.pool import open_pool
    from srl_agent.policies import BatchedPolicy, ModelPolicy

    pool = closing.enter_context(open_pool(cfg.environment))
    max_new = cfg.generation.max_new_tokens
    limit = cfg.agent.max_prompt_tokens or inference.context_length - max_new

    def runner(greedy: bool) -> EpisodeRunner:
        policy = ModelPolicy(
            inference.generator,
            inference.prompts,
            max_new_tokens=max_new,
            max_prompt_tokens=limit,
            temperature=cfg.generation.temperature,
            greedy=greedy,
        )
        return EpisodeRunner(
            BatchedPolicy(policy), pool, cfg.agent, cfg.data.build, cfg.environment, cfg.grading, run_dir
        )

    return runner(greedy=False), runner(greedy=cfg.agent.greedy)
