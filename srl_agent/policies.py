"""Policies for the agent loop (`srl_agent.agent`), behind the `Policy` Protocol (`srl_agent.protocols`).

- `ModelPolicy`: a `Generator` behind the SWE SRL stage's prompts. Each turn renders the step example
  exactly as training does (the stage's system prompt, its user turn, the chat template, then
  `prompt.prefill`) and decodes one completion, greedy or sampled, ending at the task's stop string
  (`</function>`). A prompt longer than `max_prompt_tokens` raises `PromptTooLong`.
- `ReplayPolicy` (`replay:PATH`): writes the recorded actions of trajectories, one per turn, in the
  canonical form (`<think>{thought}</think>` then `render_action`), for deterministic episodes and
  to check expert data through the same loop. PATH is a trajectory file or a folder of them (any
  format `trajectories` reads); each episode replays the trajectory of its own instance id, and an
  instance without one is an error naming the instance and what PATH holds. After the last recorded
  action it submits: a trajectory recorded without a submit is graded on the repository's diff, as
  `environments.replay` grades it.

`make_policy(model, ...)` turns a model string (`replay:PATH`, a model name, HF id, local folder or
checkpoint) into a policy: the later `srl_agent.evaluate --model MODEL` takes the same strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from srl_agent.config import AgentConfig, GenerationConfig, ModelConfig, PromptConfig
from srl_agent.prompts import PromptCache, sft_target
from srl_agent.protocols import PromptTooLong, Turn
from srl_agent.rewards import THINK_CLOSE, THINK_OPEN
from srl_agent.tasks import SWE
from trajectories.actions import render_action
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

    def act(self, example: StepExample) -> Turn:
        ids = self.prompts.render(example)
        if len(ids) > self.max_prompt_tokens:
            raise PromptTooLong(len(ids), self.max_prompt_tokens)
        [[completion]] = self.generator.generate(
            [ids], 1, self.max_new_tokens, self.temperature, greedy=self.greedy
        )
        return Turn(
            self.prompts.cfg.prefill + completion.text,  # the contract applies to the whole output
            prompt_tokens=len(ids),
            completion_tokens=len(completion.token_ids),
            truncated=completion.truncated,
        )


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
) -> Policy:
    """The policy a model string names: `replay:PATH`, else a model loaded by name or path.

    A model is loaded with `model_cfg`'s dtype and device, decodes with `generation` (its `stop` must be
    resolved: `srl_agent.tasks.resolve`, or given) and `agent.greedy`, and prompts with `stage` (default:
    the SWE SRL stage) and `prompt`. `agent.max_prompt_tokens` null: the model's context length minus
    `generation.max_new_tokens`.
    """
    if model.startswith(REPLAY_PREFIX):
        return ReplayPolicy.from_path(model.removeprefix(REPLAY_PREFIX))
    from srl_agent.generation import make_generator
    from srl_agent.models import device_of, load_model_and_tokenizer

    agent, model_cfg, prompt = agent or AgentConfig(), model_cfg or ModelConfig(), prompt or PromptConfig()
    generation = generation or GenerationConfig(
        stop=list(SWE.stop), stop_at_step_end=False, max_new_tokens=SWE.max_new_tokens
    )
    if "auto" in (generation.stop, generation.stop_at_step_end, generation.max_new_tokens):
        raise ValueError("resolve the generation section first (srl_agent.tasks.resolve)")
    stage = stage or SWE.stage("srl")
    net, tokenizer = load_model_and_tokenizer(model, model_cfg.dtype, device_of(model_cfg), seed)
    limit = agent.max_prompt_tokens or context_length(net) - generation.max_new_tokens
    return ModelPolicy(
        make_generator(net, tokenizer, generation, model_cfg.dtype, prompt.prefill),
        PromptCache(tokenizer, stage.system_prompt, stage.user_turn, prompt),
        max_new_tokens=generation.max_new_tokens,
        max_prompt_tokens=limit,
        temperature=generation.temperature,
        greedy=agent.greedy,
    )


def context_length(model: Any) -> int:
    """The most positions the model takes (its config's `max_position_embeddings`)."""
    return int(model.config.max_position_embeddings)
