"""One spec per task: everything that differs between `--task math` and `--task swe`, in one table.

A `TaskSpec` owns what the rest of the code would otherwise branch on: the stages the task trains
with and, per stage, the system prompt, the user turn, the reward and which step examples it uses;
the stop strings its completions end at; what its `auto` config values mean; where its default data
comes from. Nothing outside this module compares a task or stage name: code asks the spec.

`resolve` fills every `auto` of a resolved config from the spec (`reward.similarity`,
`generation.stop`, `generation.stop_at_step_end`, `generation.max_new_tokens`, `grpo.filter`,
`trainer.micro_batch_tokens`), so
the `config.yaml` a run writes and `--dry-run` prints record what ran, and refuses a stage the task
does not have with a message that says why. What it returns is the config's resolved twin
(`config.ResolvedTrainConfig`, `config.ResolvedEvalConfig`): the same fields, those that were `auto`
typed as they are used (`generation.max_new_tokens` an int, ...), so no caller casts.

A new task is one more `TaskSpec` in `TASKS` (and its name in the configs' `task` field).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, overload

from srl_agent import prompts
from srl_agent.config import EvalConfig, ResolvedEvalConfig, ResolvedTrainConfig, TrainConfig
from srl_agent.data import bundled_math_source, shared_swe_source, whole_problems
from srl_agent.rewards import MathAnswerReward, StepSimilarityReward
from trajectories.actions import CALL_END
from trajectories.config import ConfigError

if TYPE_CHECKING:
    from srl_agent.config import RewardConfig
    from srl_agent.protocols import Reward
    from trajectories.record import StepExample

RewardFactory = Callable[["RewardConfig", str], "Reward"]
"""(reward section, prompt prefill) -> the stage's reward."""


@dataclass(frozen=True)
class StageSpec:
    """How one task trains in one stage."""

    system_prompt: str
    user_turn: prompts.UserTurn
    reward: RewardFactory | None
    """The reward of one completion; None for a stage of whole agent episodes, which the task's tests
    reward in the episode's environment (`episodes`)."""
    filter: str
    """What `grpo.filter: auto` means here (`std`: dynamic sampling on reward spread; `dapo`: drop
    groups all right or all wrong)."""
    examples: Callable[[list[StepExample]], list[StepExample]] = list
    """Which step examples the stage trains and validates on (all of them, or whole problems)."""
    rollouts: bool = True
    """True: the policy samples and GRPO learns from the rewards; False: supervised learning of the
    expert's step (SFT), no sampling in training."""
    step_end: bool = False
    """What `generation.stop_at_step_end: auto` means: completions end where their step ends (math
    steps have no stop string of their own)."""
    episodes: bool = False
    """Rollouts are whole agent episodes in environments, rewarded by the task's tests (SWE RLVR,
    `srl_agent.swe_rlvr`): the data are tasks, not step examples. Each turn is prompted as an SRL step."""
    micro_batch_tokens: int | None = None
    """What `trainer.micro_batch_tokens: auto` means (a cap on a micro-batch's padded tokens)."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    stages: Mapping[str, StageSpec]
    similarity: str
    """What `reward.similarity: auto` means for this task."""
    stop: tuple[str, ...]
    """What `generation.stop: auto` means: the strings a completion ends at (kept in it)."""
    max_new_tokens: int
    """What `generation.max_new_tokens: auto` means."""
    default_source: Callable[[], str]
    """What `data.source: auto` means (may raise ConfigError when that data is absent here)."""
    missing_stages: Mapping[str, str]
    """Stages this task does not have yet, with the reason the error message gives."""
    agent: bool = False
    """The task is solved by acting in an environment (SWE): `evaluate --instances` runs it as an agent."""
    final_answers: bool = False
    """Solutions end in a checkable final answer (math): `evaluate --samples` grades responses."""

    def data_source(self, source: str) -> str:
        """`data.source` resolved: `auto` is the task's default data."""
        return self.default_source() if source == "auto" else source

    def stage(self, name: str) -> StageSpec:
        if name in self.stages:
            return self.stages[name]
        why = self.missing_stages.get(name, "")
        raise ConfigError(
            f"stage: {name} is not available for --task {self.name}"
            + (f" ({why})" if why else "")
            + f"; use one of: {', '.join(self.stages)}"
        )


# SFT learns the same step examples as SRL with the same prompts; its validation scores them with the
# SRL step reward, so its curves compare with SRL's.
_MATH_SRL = StageSpec(
    system_prompt=prompts.MATH_SYSTEM,
    user_turn=prompts.math_user_turn,
    reward=StepSimilarityReward.from_config,
    filter="std",
    step_end=True,
)
_MATH_SFT = replace(_MATH_SRL, rollouts=False)
MATH = TaskSpec(
    name="math",
    stages={
        "srl": _MATH_SRL,
        "sft": _MATH_SFT,
        "rlvr": StageSpec(
            system_prompt=prompts.MATH_RLVR_SYSTEM,
            user_turn=prompts.problem_user_turn,
            reward=MathAnswerReward.from_config,
            filter="dapo",
            examples=whole_problems,
        ),
    },
    similarity="difflib",  # the paper's reward; math steps are short, so it costs microseconds
    stop=(),
    max_new_tokens=48,
    default_source=bundled_math_source,
    missing_stages={},
    final_answers=True,
)

_SWE_SRL = StageSpec(
    system_prompt=prompts.SWE_SYSTEM,
    user_turn=prompts.swe_user_turn,
    reward=StepSimilarityReward.from_config,
    filter="std",
)
SWE = TaskSpec(
    name="swe",
    stages={
        "srl": _SWE_SRL,
        # SFT steps share no prompt: a micro-batch of 4 padded to its longest (2-3.5k tokens) took
        # 177 s a step of 4 on 2 CPU cores, one or two at a time 91 s (same losses)
        "sft": replace(_SWE_SRL, rollouts=False, micro_batch_tokens=4096),
        # the agent acts with the SRL prompts (what it was trained on); the tests give the reward
        "rlvr": replace(_SWE_SRL, reward=None, filter="dapo", episodes=True, micro_batch_tokens=4096),
    },
    # difflib needs seconds per long created file; rapidfuzz computes the exact 2M/T in microseconds
    similarity="rapidfuzz",
    # The contract allows one tool call and nothing after it: text past the call is a format error.
    stop=(CALL_END,),
    max_new_tokens=256,
    default_source=shared_swe_source,
    missing_stages={},
    agent=True,
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (MATH, SWE)}


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"task: unknown task {name!r}; one of {', '.join(TASKS)}") from None


@overload
def resolve(cfg: TrainConfig, stage: str = "srl") -> ResolvedTrainConfig: ...
@overload
def resolve(cfg: EvalConfig, stage: str = "srl") -> ResolvedEvalConfig: ...
def resolve(cfg: TrainConfig | EvalConfig, stage: str = "srl") -> ResolvedTrainConfig | ResolvedEvalConfig:
    """A copy of `cfg` with every `auto` filled in from its task's spec, as its resolved twin; the
    stage must exist.

    `stage` is used for configs without one of their own (evaluation scores the SRL step reward).
    """
    spec = task_spec(cfg.task)
    stage_spec = spec.stage(getattr(cfg, "stage", stage))
    data = cfg.model_dump()
    if data["reward"]["similarity"] == "auto":
        data["reward"]["similarity"] = spec.similarity
    generation = data["generation"]
    if generation["stop"] == "auto":
        generation["stop"] = list(spec.stop)
    if generation["stop_at_step_end"] == "auto":
        generation["stop_at_step_end"] = stage_spec.step_end
    if generation["max_new_tokens"] == "auto":
        generation["max_new_tokens"] = spec.max_new_tokens
    if "grpo" in data and data["grpo"]["filter"] == "auto":
        data["grpo"]["filter"] = stage_spec.filter
    if "trainer" in data and data["trainer"]["micro_batch_tokens"] == "auto":
        data["trainer"]["micro_batch_tokens"] = stage_spec.micro_batch_tokens
    twin = ResolvedTrainConfig if "trainer" in data else ResolvedEvalConfig
    return twin.model_validate(data)
