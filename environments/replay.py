"""Replay a trajectory's actions in a fresh environment and grade the patch it leaves.

This is how expert data is checked before training on it (a trajectory whose replay does not resolve
its task teaches the wrong thing) and how the bundled tasks prove their own expert trajectories.

    from environments.replay import ReplayConfig, load_trajectory, replay
    from environments.tasks.bundled import get_task

    task = get_task("srl-agent__paginate-1")  # its image comes from `python -m environments build`
    result = replay(load_trajectory(task.expert_trajectory), task, ReplayConfig(), grading=GradingConfig())
    result.resolved, result.patch, result.to_dict()

The trajectory is read by `trajectories.sources` (any format it knows: SWE-agent `.traj`, SWE-smith
rows, OpenHands chats, ...), so its actions arrive as canonical `ToolCall`s. They run in order in a
new container from the task's image through `environments.tools`, up to and including the first
`submit`, whose patch (the repository's diff) is graded; a trajectory without a submit is graded on
the repository's diff after its last action. Actions the tools do not know (SWE-agent 0.x windowed
commands such as `open` or `edit`) are not emulated: they are counted in `tool_errors` and the replay
goes on, as the agent's harness would have. Recorded observations are compared with the new ones
(after normalising line ends and surrounding whitespace) only to report how faithful the replay was.

Grading is the one grading path's (`environments.grader.grade` with the `grading` section, as
evaluation and RLVR grade): `fast` resets the replay's own environment and runs the tests there,
`harness` runs the official swebench harness on the patch (a container of its own, about 15 s),
`auto` (default) is fast for bundled tasks, else the harness. `replay_in` runs the same actions in an
environment the caller holds and leaves the grading to it (`environments.expert_check` replays whole
sources of expert data that way, through `episodes.run_graded`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from environments.config import EnvConfig, GradingConfig
from environments.grader import grade
from environments.grading import GradeResult
from trajectories.config import Section
from trajectories.record import Step, Trajectory

if TYPE_CHECKING:
    from environments.protocol import Environment, TaskInstance

log = logging.getLogger(__name__)


class ReplayConfig(Section):
    """How `replay` runs; how it grades is the `grading` section."""

    moved: ClassVar[dict[str, str]] = {"grader": "grading.grader", "test_timeout": "grading.test_timeout"}

    work_dir: str = "runs/replay"
    """Where the harness writes its dataset, predictions, logs and summary reports."""
    max_steps: int | None = Field(None, ge=1)
    """Replay only the first N actions (null: all)."""


class ReplayError(ValueError):
    """The trajectory cannot be replayed on this task; the message names the file or the mismatch."""


@dataclass
class ToolError:
    step: int
    tool: str
    observation: str


@dataclass
class ReplayResult:
    """`steps_replayed` counts executed actions (the submit included); `submitted` says whether a submit
    was reached; `observations_matched` counts steps whose recorded observation came back unchanged."""

    instance_id: str
    steps_replayed: int
    steps_total: int
    submitted: bool
    patch: str
    grade: GradeResult
    observations_matched: int = 0
    observations_recorded: int = 0
    tool_errors: list[ToolError] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return self.grade.resolved

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "steps_replayed": self.steps_replayed,
            "steps_total": self.steps_total,
            "submitted": self.submitted,
            "patch": self.patch,
            "resolved": self.resolved,
            "status": self.grade.status,
            "grader": self.grade.grader,
            "grade": self.grade.to_dict(),
            "observations_matched": self.observations_matched,
            "observations_recorded": self.observations_recorded,
            "tool_errors": [vars(e) for e in self.tool_errors],
        }


def load_trajectory(path: str | Path) -> Trajectory:
    """The one SWE trajectory in `path` (a `.traj`, or a JSONL/JSON file holding exactly one)."""
    from trajectories.errors import SourceError
    from trajectories.sources import read_source

    if not Path(path).is_file():  # read_source would take a missing `owner/name` for a Hub dataset id
        raise ReplayError(f"{path}: no such trajectory file")
    try:
        result = read_source(path)
    except SourceError as e:
        raise ReplayError(str(e)) from None
    trajectories = [item for item in result.items if isinstance(item, Trajectory)]
    if len(trajectories) != 1:
        why = "; ".join(f"{s.record}: {s.reason}" for s in result.skipped[:3])
        raise ReplayError(
            f"{path}: expected one SWE trajectory, found {len(trajectories)}"
            + (f" (skipped: {why})" if why else "")
        )
    return trajectories[0]


def check_instance(trajectory: Trajectory, task: TaskInstance) -> None:
    """Refuse a trajectory recorded for another instance (when it names one)."""
    if trajectory.instance_id and trajectory.instance_id != task.instance_id:
        raise ReplayError(f"the trajectory is for {trajectory.instance_id}, not {task.instance_id}")


def replay(
    trajectory: Trajectory,
    task: TaskInstance,
    cfg: ReplayConfig | None = None,
    env_cfg: EnvConfig | None = None,
    grading: GradingConfig | None = None,
) -> ReplayResult:
    """Execute the trajectory's actions in a fresh container of `task.image` and grade the patch."""
    from environments.container import DockerEnvironment

    cfg, grading = cfg or ReplayConfig(), grading or GradingConfig()
    check_instance(trajectory, task)
    with DockerEnvironment(task.image, env_cfg) as env:
        result = replay_in(env, trajectory, task, cfg)
        result.grade = grade(task, result.patch, grading, env=env, env_cfg=env_cfg, work_dir=cfg.work_dir)
    log.info("replayed %d/%d steps of %s: %s", result.steps_replayed, result.steps_total, task.instance_id,
             result.grade.status)  # fmt: skip
    return result


def replay_in(
    env: Environment, trajectory: Trajectory, task: TaskInstance, cfg: ReplayConfig
) -> ReplayResult:
    """The replay in `env`, a started environment of `task.image` at its base commit (a fresh container
    or a pooled one): the actions run (the first `cfg.max_steps`). The result is "not graded": the
    caller grades `result.patch` (`replay` at once, in `env`; check-experts through
    `episodes.run_graded`, where a batch of replays can share one harness run)."""
    steps = trajectory.steps[: cfg.max_steps] if cfg.max_steps else trajectory.steps
    result = execute_steps(env, steps, task.instance_id)
    result.steps_total = len(trajectory.steps)
    return result


def execute_steps(env: Environment, steps: list[Step], instance_id: str) -> ReplayResult:
    """Run the steps' actions in `env` up to the first submit; the result is not graded yet."""
    from environments import tools

    result = ReplayResult(
        instance_id, 0, len(steps), False, "", GradeResult(instance_id, "error", detail="not graded")
    )
    for i, step in enumerate(steps):
        outcome = tools.execute(env, step.action)
        result.steps_replayed += 1
        if not outcome.ok and step.action.name != "bash":  # a bash exit status is the command's business
            result.tool_errors.append(ToolError(i, step.action.name, outcome.observation[:500]))
        if step.observation is not None:
            result.observations_recorded += 1
            result.observations_matched += _normalized(step.observation) == _normalized(outcome.observation)
        if outcome.submitted:
            result.submitted, result.patch = True, outcome.patch or ""
            return result
    result.patch = env.diff()
    return result


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().splitlines())
