"""The one grading path: which grader grades a task's patch, and running it.

Evaluation (`srl_agent.eval.swe`), SWE RLVR rewards (`srl_agent.swe_rlvr`), replay
(`environments.replay`) and check-experts (`environments.expert_check`) all grade through here, with
one `GradingConfig` (the `grading` section), so they cannot disagree about the same patch:

- `grader_for(task, cfg)`: the decision. `fast` (the in-container runner, `grading.run_tests_in_env`)
  when `cfg.grader` says so, or when it is `auto` and the task can be graded that way
  (`TaskInstance.fast_gradable`: bundled tasks, generated tasks and SWE-smith rows with a profile,
  whose test command and log parser are known); else `harness` (the official swebench harness,
  `grading.grade_with_harness`).
- `refused(tasks, cfg)`: the tasks `cfg` cannot grade (the fast grader asked for a task it cannot
  run), each with the reason, for a caller to skip or refuse before any episode.
- `grade(task, patch, cfg, env=...)`: one patch graded now. The fast runner grades in `env` (an
  environment of the task's image, reset first: the episode's own) or, without one, in a fresh
  container of the task's image; the harness runs under a run id of its own in `work_dir`.
- `grade_all(graded, cfg, ...)`: many patches graded after their episodes (the harness in one call,
  the fast runner in a fresh container each); a grader that fails is an `error` result, never an
  exception, so one failure does not lose the other verdicts.

`grade` raises when the engine, a container or the harness fails (`episodes.run_graded` turns that
into a masked outcome); a patch that does not apply or tests that fail are results, never exceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from environments.config import EnvConfig, GradingConfig
from environments.grading import MODEL_NAME, GradeResult, grade_with_harness, harness_run_id, run_tests_in_env

if TYPE_CHECKING:
    from environments.protocol import Environment, TaskInstance

log = logging.getLogger(__name__)

FAST_ONLY = (
    "the fast grader needs the task's test command and log parser (bundled and generated tasks, SWE-smith"
    " rows with a profile); use grading.grader=auto or harness"
)


def grader_for(task: TaskInstance, cfg: GradingConfig) -> Literal["fast", "harness"]:
    """The grader of `task`'s patches under `cfg` (see the module)."""
    if cfg.grader == "auto":
        return "fast" if task.fast_gradable else "harness"
    return cfg.grader


def refused(tasks: Iterable[TaskInstance], cfg: GradingConfig) -> list[tuple[str, str]]:
    """(instance id, why) for each task `cfg`'s grader cannot grade."""
    if cfg.grader != "fast":
        return []
    return [(t.instance_id, FAST_ONLY) for t in tasks if not t.fast_gradable]


def grade(
    task: TaskInstance,
    patch: str | None,
    cfg: GradingConfig,
    *,
    env: Environment | None = None,
    env_cfg: EnvConfig | None = None,
    work_dir: str | Path = "runs/harness",
) -> GradeResult:
    """`patch` graded for `task` by `grader_for(task, cfg)`: the fast runner in `env` after a reset (or
    a fresh container of `task.image` when `env` is None), else the harness under `work_dir`."""
    if grader_for(task, cfg) == "fast":
        if env is not None:
            env.reset()
            return run_tests_in_env(env, task, patch, timeout=cfg.test_timeout)
        return _fast_in_fresh_container(task, patch, cfg, env_cfg or EnvConfig())
    return grade_with_harness(
        [task.instance()],
        {task.instance_id: patch},
        harness_run_id(f"grade-{task.instance_id}"),
        work_dir=work_dir,
        timeout=cfg.test_timeout,
    )[task.instance_id]


def grade_all(
    graded: Sequence[tuple[TaskInstance, str | None]],
    cfg: GradingConfig,
    *,
    env_cfg: EnvConfig | None = None,
    work_dir: str | Path,
    run_prefix: str = "grade",
    max_workers: int = 1,
    model_name: str = MODEL_NAME,
) -> dict[str, GradeResult]:
    """{instance id: grade} of each (task, patch), at most one per instance id; a grader or container
    that fails gives an `error` result naming why."""
    results: dict[str, GradeResult] = {}
    harness = [(t, p) for t, p in graded if grader_for(t, cfg) == "harness"]
    for task, patch in graded:
        if grader_for(task, cfg) == "fast":
            try:
                results[task.instance_id] = _fast_in_fresh_container(task, patch, cfg, env_cfg or EnvConfig())
            except Exception as e:
                log.warning("fast grading of %s failed", task.instance_id, exc_info=True)
                results[task.instance_id] = _failed(task.instance_id, "fast", "the fast grader failed", e)
    if harness:
        try:
            results |= grade_with_harness(
                [t.instance() for t, _ in harness],
                {t.instance_id: p for t, p in harness},
                harness_run_id(run_prefix),
                work_dir=work_dir,
                timeout=cfg.test_timeout,
                max_workers=max_workers,
                model_name=model_name,
            )
        except Exception as e:
            log.warning("the harness failed", exc_info=True)
            results |= {
                t.instance_id: _failed(t.instance_id, "harness", "the harness failed", e) for t, _ in harness
            }
    return results


def _fast_in_fresh_container(
    task: TaskInstance, patch: str | None, cfg: GradingConfig, env_cfg: EnvConfig
) -> GradeResult:
    from environments.container import DockerEnvironment
    from environments.tasks.sources import prepare_image

    with DockerEnvironment(prepare_image(task, env_cfg), env_cfg) as env:
        return run_tests_in_env(env, task, patch, timeout=cfg.test_timeout)


def _failed(instance_id: str, grader: Literal["fast", "harness"], what: str, error: Exception) -> GradeResult:
    return GradeResult(instance_id, "error", detail=f"{what}: {type(error).__name__}: {error}", grader=grader)
