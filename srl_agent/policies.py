"""Policies for the agent loop (`srl_agent.agent`), behind the `Policy` Protocol (`srl_agent.protocols`).

- `ModelPolicy`: a `Generator` behind the SWE SRL stage's prompts. Each turn renders the step example
  exactly as training does (the stage's system prompt, its user turn, the chat template, then
  `prompt.prefill`) and decodes one completion, greedy or sampled, ending at the task's stop string
  (`</function>`). A prompt longer than `max_prompt_tokens` raises `PromptTooLong`. Its turns carry
  the prompt and completion token ids as sampled, with the sampler's log-probs (what RL trains on).
- `BatchedPolicy`: one `ModelPolicy` shared by episodes running in threads, their turns generated
  in one batch (SWE RLVR's G episodes per task).
- `ReplayPolicy` (`replay:PATH`): writes the recorded actions of trajectories, one per turn, in the
  canonical form (`<think>{thought}</think>` then `render_action`), for deterministic episodes and
  to check expert data through the same loop. PATH is a trajectory file or a folder of them (any
  format `trajectories` reads); each episode replays the trajectory of its own instance id, and an
  instance without one is an error naming the instance and what PATH holds. After the last recorded
  action it submits: a trajectory recorded without a submit is graded on the repository's diff, as
  `environments.replay` grades it.

`make_policy(model, ...)` turns a model string (`replay:PATH`, `openai:MODEL@URL` for a model behind an
OpenAI-compatible chat API (`srl_agent.remote.RemotePolicy`), a model name, HF id, local folder or
checkpoint) into a policy: `srl_agent.evaluate --model MODEL` takes the same strings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from environments.chat_api import ChatAPIConfig, is_chat_model
from srl_agent.config import AgentConfig, GenerationConfig, ModelConfig, PromptConfig
from srl_agent.prompts import PromptCache, sft_target
from srl_agent.protocols import PromptTooLong, Turn
from srl_agent.rewards import THINK_CLOSE, THINK_OPEN
from srl_agent.tasks import SWE
from trajectories.actions import render_action
from trajectories.config import ConfigError
from trajectories.errors import SourceError
from trajectories.record import ToolCall, Trajectory
from trajectories.sources import read_source

if TYPE_CHECKING:
    from srl_agent.protocols import Generator, Policy
    from srl_agent.tasks import StageSpec
    from trajectories.record import StepExample

REPLAY_PREFIX = "replay:"


class PolicyError(ValueError):
    """A policy cannot act on this instance (no trajectory for it, an unreadable path); says why."""


class ModelPolicy:
    """One completion per turn from `generator` for the prompt `prompts` renders (see the module)."""

    def __init__(
        self,
        generator: Generator,
        prompts: PromptCache,
        *,
        max_new_tokens: int,
        max_prompt_tokens: int,
        temperature: float = 1.0,
        greedy: bool = True,
    ) -> None:
        self.generator, self.prompts = generator, prompts
        self.max_new_tokens, self.max_prompt_tokens = max_new_tokens, max_prompt_tokens
        self.temperature, self.greedy = temperature, greedy

    def check_instance(self, instance_id: str) -> None:
        """A model acts on any instance."""

    def episode(self) -> AbstractContextManager[Policy]:
        """One episode at a time needs no batching: the policy itself."""
        return nullcontext(self)

    def act(self, example: StepExample) -> Turn:
        [turn] = self.act_batch([example])
        if isinstance(turn, PromptTooLong):
            raise turn
        return turn

    def act_batch(self, examples: list[StepExample]) -> list[Turn | PromptTooLong]:
        """One turn per example from one `generate` call (the concurrent episodes of RL rollouts);
        an example whose prompt does not fit gets its `PromptTooLong` instead of a turn."""
        prompts = [self.prompts.render(ex) for ex in examples]
        fits = [i for i, ids in enumerate(prompts) if len(ids) <= self.max_prompt_tokens]
        out: list[Turn | PromptTooLong] = [PromptTooLong(len(ids), self.max_prompt_tokens) for ids in prompts]
        if not fits:
            return out
        generated = self.generator.generate(
            [prompts[i] for i in fits], 1, self.max_new_tokens, self.temperature, greedy=self.greedy
        )
        for i, [completion] in zip(fits, generated, strict=True):
            out[i] = Turn(
                self.prompts.cfg.prefill + completion.text,  # the contract applies to the whole output
                prompt_tokens=len(prompts[i]),
                completion_tokens=len(completion.token_ids),
                truncated=completion.truncated,
                prompt_ids=prompts[i],
                token_ids=completion.token_ids,
                logprobs=completion.logprobs,
            )
        return out


class BatchedPolicy:
    """A `ModelPolicy` shared by concurrent episodes (one thread each), whose turns are generated together.

    Each episode runs inside `with batched.episode():`. A turn waits until every running episode is
    waiting for one too (the others are in their tools), or `max_wait` seconds passed since it asked,
    then all waiting turns go to the model in one `act_batch` call: with G episodes of a task the
    model decodes a batch of up to G (and B x G across tasks) instead of one sequence at a time.
    Only one batch runs at a time (one model). Which turns share a batch depends on how long tools
    take, so sampling is not reproducible from the seed alone.
    """

    def __init__(self, policy: ModelPolicy, max_wait: float = 0.5) -> None:
        self.policy, self.max_wait = policy, max_wait
        self._cond = threading.Condition()
        self._waiting: list[_Request] = []
        self._running_episodes = 0
        self._generating = False
        self.batches: list[int] = []
        """The size of every batch generated so far (for the rollout metrics)."""
        self.seconds = 0.0
        """Wall-clock seconds spent generating so far."""

    def check_instance(self, instance_id: str) -> None:
        self.policy.check_instance(instance_id)

    @contextmanager
    def episode(self) -> Iterator[Policy]:
        """Register one running episode; the policy its loop calls."""
        with self._cond:
            self._running_episodes += 1
        try:
            yield self
        finally:
            with self._cond:
                self._running_episodes -= 1
                self._cond.notify_all()

    def act(self, example: StepExample) -> Turn:
        request = _Request(example, time.monotonic())
        with self._cond:
            self._waiting.append(request)
            self._cond.notify_all()
            while request.result is None:
                due = request.asked + self.max_wait - time.monotonic()
                if (
                    not self._generating
                    and self._waiting
                    and (len(self._waiting) >= self._running_episodes or due <= 0)
                ):
                    batch, self._waiting, self._generating = self._waiting, [], True
                    self._cond.release()
                    try:
                        results = self._generate(batch)
                    finally:
                        self._cond.acquire()
                        self._generating = False
                    for r, result in zip(batch, results, strict=True):
                        r.result = result
                    self.batches.append(len(batch))
                    self._cond.notify_all()
                else:
                    self._cond.wait(timeout=None if self._generating else max(due, 0.01))
        if isinstance(request.result, BaseException):
            raise request.result
        return request.result

    def _generate(self, batch: list[_Request]) -> list[Turn | BaseException]:
        started = time.perf_counter()
        try:
            turns = list(self.policy.act_batch([r.example for r in batch]))
            if len(turns) != len(batch):
                raise RuntimeError(f"the policy answered {len(turns)} of {len(batch)} turns")
            return turns
        except Exception as e:  # noqa: BLE001 - every turn of the batch fails with the model's error
            return [e] * len(batch)
        finally:
            self.seconds += time.perf_counter() - started


@dataclass
class _Request:
    example: StepExample
    asked: float
    result: Turn | BaseException | None = None


class ReplayPolicy:
    """Recorded actions, one per turn, from the trajectory of the episode's instance (see the module)."""

    def __init__(self, trajectories: dict[str, Trajectory], source: str) -> None:
        self.trajectories, self.source = trajectories, source

    @classmethod
    def from_path(cls, path: str | Path) -> ReplayPolicy:
        """The trajectories in a file or a folder, by instance id; PolicyError when one has no
        instance id, two share one, or nothing is there."""
        if not Path(path).exists():  # read_source would take a missing `owner/name` for a Hub dataset
            raise PolicyError(f"{REPLAY_PREFIX}{path}: no such file or folder")
        try:
            result = read_source(path)
        except SourceError as e:
            raise PolicyError(f"{REPLAY_PREFIX}{path}: {e}") from None
        by_id: dict[str, Trajectory] = {}
        for traj in (item for item in result.items if isinstance(item, Trajectory)):
            where = traj.meta.get("position", path)
            if not traj.instance_id:
                raise PolicyError(f"{where}: the trajectory names no instance id, so no episode can use it")
            if traj.instance_id in by_id:
                first = by_id[traj.instance_id].meta.get("position", path)
                raise PolicyError(f"two trajectories for {traj.instance_id}: {first} and {where}")
            by_id[traj.instance_id] = traj
        if not by_id:
            why = "; ".join(f"{s.record}: {s.reason}" for s in result.skipped[:3])
            raise PolicyError(
                f"{REPLAY_PREFIX}{path}: no SWE trajectory" + (f" (skipped: {why})" if why else "")
            )
        return cls(by_id, str(path))

    def check_instance(self, instance_id: str) -> None:
        """PolicyError naming both ids when no trajectory of `instance_id` is held."""
        self.trajectory_for(instance_id)

    def episode(self) -> AbstractContextManager[Policy]:
        return nullcontext(self)

    def trajectory_for(self, instance_id: str | None) -> Trajectory:
        """The trajectory replayed for `instance_id`; PolicyError naming both ids when there is none."""
        if instance_id in self.trajectories:
            return self.trajectories[instance_id]
        held = sorted(self.trajectories)
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise PolicyError(
            f"{REPLAY_PREFIX}{self.source} holds no trajectory for {instance_id} (it has {shown})"
        )

    def act(self, example: StepExample) -> Turn:
        steps = self.trajectory_for(example.meta.get("instance_id")).steps
        if example.step_index >= len(steps):
            return Turn(sft_target(render_action(ToolCall("submit")), "The recorded actions are done."))
        step = steps[example.step_index]
        # the contract allows one pair of think tags: the ones wrapping the thought
        thought = step.thought.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
        return Turn(sft_target(render_action(step.action), thought))


def make_policy(
    model: str,
    agent: AgentConfig | None = None,
    *,
    model_cfg: ModelConfig | None = None,
    generation: GenerationConfig | None = None,
    prompt: PromptConfig | None = None,
    stage: StageSpec | None = None,
    seed: int = 0,
    api: ChatAPIConfig | None = None,
) -> Policy:
    """The policy a model string names: `replay:PATH` (a `ReplayPolicy`), `openai:MODEL@URL` (a
    `RemotePolicy` asking the server, with `api`'s timeout and retries), else a model loaded by name or
    path (a `ModelPolicy` in a `BatchedPolicy`, so that episodes run at once share its batches).

    A model is loaded with `model_cfg`'s dtype and device, decodes with `generation` (its `stop` must be
    resolved: `srl_agent.tasks.resolve`, or given) and `agent.greedy`, and prompts with `stage` (default:
    the SWE SRL stage) and `prompt`. `agent.max_prompt_tokens` null: the model's context length minus
    `generation.max_new_tokens`.
    """
    if model.startswith(REPLAY_PREFIX):
        try:
            return ReplayPolicy.from_path(replay_path(model))
        except PolicyError as e:  # a bad --model, not a failure of any one episode
            raise ConfigError(f"model.name (--model): {e}") from None
    agent, model_cfg, prompt = agent or AgentConfig(), model_cfg or ModelConfig(), prompt or PromptConfig()
    generation = generation or GenerationConfig(
        stop=list(SWE.stop), stop_at_step_end=False, max_new_tokens=SWE.max_new_tokens
    )
    if "auto" in (generation.stop, generation.stop_at_step_end, generation.max_new_tokens):
        raise ValueError("resolve the generation section first (srl_agent.tasks.resolve)")
    stage = stage or SWE.stage("srl")
    if is_chat_model(model):
        from srl_agent.remote import remote_policy

        return remote_policy(model, agent, generation, prompt, stage, api or ChatAPIConfig())
    from srl_agent.generation.loader import load_inference

    inference = load_inference(model, model_cfg, stage, generation, prompt, seed)
    limit = agent.max_prompt_tokens or inference.context_length - generation.max_new_tokens
    model_policy = ModelPolicy(
        inference.generator,
        inference.prompts,
        max_new_tokens=generation.max_new_tokens,
        max_prompt_tokens=limit,
        temperature=generation.temperature,
        greedy=agent.greedy,
    )
    return BatchedPolicy(model_policy)  # concurrent episodes' turns go to the model in one batch


def replay_path(model: str) -> str:
    """The PATH of a `replay:PATH` model string; ConfigError naming the flag when it is empty."""
    path = model.removeprefix(REPLAY_PREFIX)
    if not path.strip():
        raise ConfigError(
            f"model.name (--model): {model!r} names no path: {REPLAY_PREFIX}PATH, a recorded file or folder"
        )
    return path
