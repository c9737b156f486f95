"""One episode on the pool, graded, with infrastructure failures masked: `run_graded`.

    outcome = run_graded(task, act, pool, grading, env_cfg=env_cfg, work_dir=out / "harness")
    outcome.episode, outcome.patch, outcome.grade, outcome.masked

Evaluation (`srl_agent.eval.swe`), SWE RLVR (`srl_agent.swe_rlvr`) and check-experts
(`environments.expert_check`) run their episodes through it; what acts differs and is the caller's
`act(env)`: the agent loop with a policy (`srl_agent.agent.run_episode`), or a trajectory's recorded
actions (`replay.replay_in`). In order:
1. a pooled environment of `task.image`, the image made present on the pool's engine first
   (`sources.prepare_image`: built, found or pulled);
2. `act(env)`, which returns an `Acted`: the episode (whatever the caller records), its patch, and
   whether the environment failed under it (an agent loop turns the engine's faults into an exit
   status rather than raising);
3. the patch graded by the one grading path (`grader.grade`), in the same environment, reset first,
   for the fast runner; with `defer_harness` a patch for the harness is left ungraded (`grade` None),
   for the caller to grade many in one harness run (`grader.grade_all`).

Infrastructure failures are outcomes, never exceptions, and never a verdict on the patch: `masked`
says why there is none, as `kind: detail`, where kind is `no image` (the image could not be made
present), `environment` (no environment, or it failed under the episode), the caller's `act_name`
(`act` raised), `grading` (the grader raised) or `grading failed` (it ran but could not produce test
results: a grade of status `error`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from environments.config import EnvConfig, GradingConfig
from environments.grader import grade, grader_for
from environments.grading import GradeResult

if TYPE_CHECKING:
    from environments.protocol import Environment, Pool, TaskInstance

log = logging.getLogger(__name__)

E = TypeVar("E")


@dataclass
class Acted(Generic[E]):
    """What `act(env)` made: the episode, its patch, and why the environment failed under it (None: it
    did not, and the patch is the episode's to be graded)."""

    episode: E
    patch: str | None
    environment_failed: str | None = None


@dataclass
class GradedEpisode(Generic[E]):
    """One episode's outcome (see the module): `grade` None when it was masked or left for the harness."""

    instance_id: str
    episode: E | None = None
    patch: str | None = None
    grade: GradeResult | None = None
    masked: str | None = None
    seconds_grading: float = 0.0


def run_graded(
    task: TaskInstance,
    act: Callable[[Environment], Acted[E]],
    pool: Pool,
    grading: GradingConfig,
    *,
    env_cfg: EnvConfig | None = None,
    work_dir: str | Path,
    act_name: str = "episode",
    defer_harness: bool = False,
) -> GradedEpisode[E]:
    """One graded episode of `task` on `pool` (see the module). Never raises for the engine, a
    container, the image, `act` or the grader: those are `masked` outcomes."""
    from environments.pool import ImageUnavailable
    from environments.tasks.sources import prepare_image

    iid, env_cfg = task.instance_id, env_cfg or pool.cfg
    outcome: GradedEpisode[E] = GradedEpisode(iid)
    phase = "environment"  # what failed, when something raises
    try:
        # images are per engine: the pool has the image made on the engine it picks
        with pool.acquire(
            task.image, prepare=lambda client: prepare_image(task, env_cfg, client=client)
        ) as env:
            phase = act_name
            acted = act(env)
            outcome.episode, outcome.patch = acted.episode, acted.patch
            if acted.environment_failed is not None:
                outcome.masked = f"environment: {acted.environment_failed}"
                return outcome
            if defer_harness and grader_for(task, grading) == "harness":
                return outcome
            phase, started = "grading", time.perf_counter()
            outcome.grade = grade(task, acted.patch, grading, env=env, env_cfg=env_cfg, work_dir=work_dir)
            outcome.seconds_grading = time.perf_counter() - started
    except ImageUnavailable as e:  # a missing image is the infrastructure's, not the episode's
        outcome.masked = _masked("no image", e)
        return outcome
    except Exception as e:  # the engine, a container, the act or the grader failed
        log.warning("an episode of %s failed (%s)", iid, phase, exc_info=True)
        outcome.masked = _masked(phase, e)
        return outcome
    outcome.masked = grading_failure(outcome.grade)
    return outcome


def grading_failure(grade: GradeResult) -> str | None:
    """Why `grade` is no verdict (the grader could not run the tests), or None when it is one."""
    return f"grading failed: {grade.detail[:300]}" if grade.status == "error" else None


def _masked(kind: str, error: BaseException) -> str:
    return f"{kind}: {type(error).__name__}: {str(error)[:300]}"
