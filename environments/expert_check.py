"""Expert data checked by replay: keep the trajectories whose actions, replayed, resolve their task.

    python -m environments check-experts 'environments/tasks/*/expert.traj' --out runs/expert-check

    report = check_experts(source, ExpertCheckConfig(out="runs/x"), ReplayConfig(), EnvConfig(), GradingConfig())
    report["kept"], report["dropped"]   # also in runs/x/report.json; the kept ones in runs/x/kept.jsonl

Reads top to bottom in `check_experts`: read every record of the source (`trajectories.sources`:
files, folders, globs, SWE-smith JSONL, HF ids), match each SWE trajectory to its task by instance id
among the tasks of `cfg.tasks` (`load_task_source`: the bundled tasks by default), prepare each
needed image once, replay the trajectories `environment.pool_size` at a time on the pool `open_pool`
gives (`replay.replay_in`, the code `python -m environments replay` runs, on the one episode path
`episodes.run_graded`), grade the patches, write the kept trajectories and the report.

Grading is the one grading path's (`environments.grader`, the `grading` section, as evaluation and
RLVR grade): `auto` uses the fast in-container runner for tasks in the bundled layout and the official
swebench harness for the others; the harness grades after the replays (one trajectory per instance
in a batch: its predictions are keyed by instance id), writing under `<out>/harness`.

A trajectory is kept when its replay ran no failing tool call and its patch resolved the task.
Otherwise it is dropped with one reason:
- `tool_error`: a non-bash action failed (step k counted from 0, as in `Trajectory.steps`; the first
  one is reported). A failed edit the expert recovered from also drops: that step teaches a call
  that fails; so do SWE-agent 0.x windowed commands, which the tools do not emulate.
- `not_resolved`: the grade's status (`unresolved`, `patch_failed`, `empty_patch`) and why.
- `no_task`: no task with that instance id (or none named) in the task source, or one it cannot grade.
- `no_image`: the task's image is neither present nor pullable (`ImageMissing`, which says how to get it).
- `unreadable`: a record the reader skipped (or one that is not a SWE trajectory), with its reason.
- `infrastructure_error`: the engine, a container or the grader failed (a grade of status `error`
  too): no verdict on the trajectory.

The output folder holds `results.jsonl`, the ledger: one line per trajectory whenever it is judged
(the last line per key wins), appended and flushed at once, so a kill loses nothing already judged.
A trajectory's key is its record's position in the source (`file:line`, `file[i]`, `file`,
`dataset[split]#row`): unique even when a source holds two trajectories of one instance; its line
also holds a digest of the record. Rerunning the same command replays only what the ledger has no
verdict for (or for another digest, a record since edited); `infrastructure_error` and `no_image`
are redone, and `no_task` / `unreadable` are decided anew from the sources, which costs nothing.
`kept.jsonl` (the kept trajectories as `Trajectory` records, marked `resolved` and with
`meta["expert_check"]`, in source order: a `data.source` the trainer and `python -m trajectories
build` read) and `report.json` are rewritten from the ledger at the end of every run.

The source is read whole into memory before the replays (the kept records are written from it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from environments.config import EnvConfig, GradingConfig
from environments.grader import grade_all, grader_for, refused
from environments.replay import ReplayConfig, ReplayResult, replay_in
from trajectories.config import Section
from trajectories.ledger import Ledger
from trajectories.record import Trajectory, to_json_line, write_jsonl

if TYPE_CHECKING:
    from environments.grading import GradeResult
    from environments.protocol import Environment, Pool, TaskInstance

log = logging.getLogger(__name__)

Verdict = Literal[
    "kept",
    "not_resolved",
    "tool_error",
    "no_task",
    "no_image",
    "unreadable",
    "infrastructure_error",
    "replayed",
]
REASONS = ("not_resolved", "tool_error", "no_task", "no_image", "unreadable", "infrastructure_error")
# Verdicts a rerun takes from the ledger; the rest are redone (no verdict yet, or cheap to decide again).
FINAL: frozenset[str] = frozenset({"kept", "not_resolved", "tool_error"})
SUMMARY_IDS = 20  # entries listed per reason in the printed summary (report.json lists all)


class ExpertCheckConfig(Section):
    """`python -m environments check-experts`: where tasks come from and where to write. The replay
    itself takes `replay.max_steps`, the grading the `grading` section, the replays at once
    `environment.pool_size` (`--workers`)."""

    moved: ClassVar[dict[str, str]] = {"grader": "grading.grader", "workers": "environment.pool_size"}

    tasks: str | None = None
    """The task source (`--tasks`): null for the bundled tasks, a task folder or a folder of them, a
    SWE-bench / SWE-smith instance file (.json, .jsonl, .parquet) or an HF dataset id."""
    tasks_split: str = "test"
    """Split of an HF dataset task source."""
    source_split: str = "train"
    """Split of an HF dataset trajectory source (SWE-smith-trajectories: tool, xml, ticks)."""
    out: str = "runs/expert-check"
    """Output folder (`--out`): results.jsonl (the ledger), kept.jsonl, report.json, harness/."""


class CheckInputError(ValueError):
    """The source, the task source or the settings cannot be used; the message says which and why."""


@dataclass
class Entry:
    """One line of the ledger: what became of one trajectory (`verdict` "replayed": its patch awaits
    the harness)."""

    key: str
    verdict: Verdict
    instance_id: str | None = None
    digest: str = ""
    detail: str = ""
    step: int | None = None
    tool: str | None = None
    status: str | None = None
    grader: str | None = None
    replay: dict[str, Any] | None = None
    patch: str | None = None

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and k not in ("patch", "digest")}


@dataclass
class _Job:
    key: str
    trajectory: Trajectory
    digest: str
    task: TaskInstance
    grader: Literal["fast", "harness"]


@dataclass
class _Run:
    """What one call did: replays run, patches graded by the harness, entries taken from the ledger."""

    replayed: int = 0
    harness_graded: int = 0
    from_ledger: int = 0
    started: float = field(default_factory=time.perf_counter)


def check_experts(
    source: str | Path,
    cfg: ExpertCheckConfig | None = None,
    replay_cfg: ReplayConfig | None = None,
    env_cfg: EnvConfig | None = None,
    grading: GradingConfig | None = None,
    *,
    pool: Pool | None = None,
) -> dict[str, Any]:
    """Check (or go on checking) the trajectories of `source`; the report, also in `<out>/report.json`.

    Raises CheckInputError for a source or task source that cannot be read, and
    `docker_engine.EngineUnavailable` when there is something to replay and no engine. `pool` (of
    `env_cfg`'s environments) is used instead of a pool made for this call.
    """
    cfg = cfg or ExpertCheckConfig()
    replay_cfg, env_cfg = replay_cfg or ReplayConfig(), env_cfg or EnvConfig()
    grading = grading or GradingConfig()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ledger: Ledger[Entry] = Ledger(out / "results.jsonl", Entry, key="key")
    run = _Run()
    trajectories, unreadable = read_trajectories(source, cfg.source_split)
    tasks, not_gradable = load_tasks(cfg, grading)
    to_replay: list[_Job] = []
    to_grade: list[_Job] = []  # replayed by an earlier run, their patches not graded yet
    for key, reason in unreadable:
        ledger.note(Entry(key, "unreadable", detail=reason))
    for key, trajectory in trajectories.items():
        digest, iid = _digest(trajectory), trajectory.instance_id
        before = ledger.get(key)
        if before is not None and before.verdict in FINAL and before.digest == digest:
            run.from_ledger += 1
        elif iid is None:
            ledger.note(Entry(key, "no_task", None, digest, "the record names no instance id"))
        elif iid not in tasks:
            why = not_gradable.get(iid, f"no task {iid} in {cfg.tasks or 'the bundled tasks'}")
            ledger.note(Entry(key, "no_task", iid, digest, why))
        elif before is not None and before.verdict == "replayed" and before.digest == digest:
            to_grade.append(_Job(key, trajectory, digest, tasks[iid], "harness"))
        else:
            to_replay.append(_Job(key, trajectory, digest, tasks[iid], grader_for(tasks[iid], grading)))
    log.info("check-experts: %d trajectories, %d judged before, %d to replay, %d to grade", len(trajectories),
             run.from_ledger, len(to_replay), len(to_grade))  # fmt: skip
    if to_replay:
        run.replayed = replay_all(to_replay, ledger, replay_cfg, env_cfg, grading, pool, out)
    pending = [job for job in to_replay + to_grade if _verdict(ledger, job.key) == "replayed"]
    if pending:
        grade_replayed(pending, ledger, grading, env_cfg, out, run)
    kept = write_kept(trajectories, ledger, out / "kept.jsonl")
    report = make_report(source, cfg, grading, trajectories, unreadable, ledger, kept, run)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def read_trajectories(source: str | Path, split: str) -> tuple[dict[str, Trajectory], list[tuple[str, str]]]:
    """{key: SWE trajectory} in source order, and (key, reason) for each record not one."""
    from trajectories.errors import SourceError
    from trajectories.sources import read_source

    try:
        result = read_source(source, hf_split=split)
    except SourceError as e:
        raise CheckInputError(str(e)) from None
    trajectories: dict[str, Trajectory] = {}
    unreadable = [(s.record, s.reason) for s in result.skipped]
    for item in result.items:
        key = str(item.meta.get("position"))
        if isinstance(item, Trajectory):
            trajectories[key] = item
        else:
            unreadable.append((key, f"a {type(item).__name__}, not a SWE trajectory"))
    return trajectories, unreadable


def load_tasks(
    cfg: ExpertCheckConfig, grading: GradingConfig
) -> tuple[dict[str, TaskInstance], dict[str, str]]:
    """{instance id: task} of the task source, and {instance id: why not} for those it cannot grade."""
    from environments.tasks.sources import TaskSourceError, load_task_source

    try:
        loaded = load_task_source(cfg.tasks, split=cfg.tasks_split)
    except TaskSourceError as e:
        raise CheckInputError(str(e)) from None
    tasks = {task.instance_id: task for task in loaded.tasks}
    if other := sorted(iid for iid, _ in refused(tasks.values(), grading)):
        raise CheckInputError(
            f"grading.grader=fast grades tasks in the bundled layout only; {', '.join(other[:5])} "
            "are not: use auto or harness"
        )
    return tasks, {s.instance_id: f"the task source cannot grade it: {s.reason}" for s in loaded.skipped}


def replay_all(
    jobs: list[_Job],
    ledger: Ledger[Entry],
    replay_cfg: ReplayConfig,
    env_cfg: EnvConfig,
    grading: GradingConfig,
    pool: Pool | None,
    out: Path,
) -> int:
    """Prepare each image once, then replay every job on the pool; one ledger line per job. Returns
    how many replays ran."""
    from environments import docker_engine
    from environments.pool import open_pool
    from environments.tasks.sources import ImageMissing, prepare_image

    docker_engine.shared_client()  # no engine: EngineUnavailable here, before any verdict
    tasks = {job.task.instance_id: job.task for job in jobs}
    images: dict[str, str | Exception] = {}

    def prepare(task: TaskInstance) -> None:
        try:
            images[task.instance_id] = prepare_image(task, env_cfg)
        except docker_engine.EngineUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - ImageMissing, or a build that failed: this task's only
            images[task.instance_id] = e

    def one(job: _Job, pool: Pool) -> bool:
        image = images[job.task.instance_id]
        if isinstance(image, ImageMissing):
            ledger.write(Entry(job.key, "no_image", job.task.instance_id, job.digest, str(image)))
        elif isinstance(image, Exception):
            ledger.write(_infrastructure(job, f"preparing the image: {type(image).__name__}: {image}"))
        else:
            entry = replay_one(job, pool, replay_cfg, grading, out)
            ledger.write(entry)
            return entry.replay is not None
        return False

    jobs = sorted(jobs, key=lambda job: job.task.instance_id)  # one image's replays reuse its environments
    with contextlib.ExitStack() as closing:
        pool = pool or closing.enter_context(open_pool(env_cfg))
        with ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="check") as executor:
            list(executor.map(prepare, tasks.values()))
            return sum(executor.map(lambda job: one(job, pool), jobs))


def replay_one(job: _Job, pool: Pool, replay_cfg: ReplayConfig, grading: GradingConfig, out: Path) -> Entry:
    """Replay one trajectory in a pooled environment of its task's image, on the one episode path
    (graded there with the fast grader; a patch for the harness waits for `grade_replayed`)."""
    from environments.episodes import Acted, run_graded

    started = time.perf_counter()

    def act(env: Environment) -> Acted[ReplayResult]:
        result = replay_in(env, job.trajectory, job.task, replay_cfg)
        return Acted(result, result.patch)

    done = run_graded(
        job.task, act, pool, grading, work_dir=out / "harness", act_name="replay", defer_harness=True
    )
    result = done.episode
    if result is None or (done.grade is None and done.masked is not None):  # the engine or a container
        return _infrastructure(job, done.masked or "no replay")
    if done.grade is not None:
        result.grade = done.grade
    stats = {
        "steps_replayed": result.steps_replayed,
        "steps_total": result.steps_total,
        "submitted": result.submitted,
        "observations_matched": result.observations_matched,
        "observations_recorded": result.observations_recorded,
        "seconds": round(time.perf_counter() - started, 2),
    }
    entry = Entry(job.key, "replayed", job.task.instance_id, job.digest, grader=job.grader, replay=stats)
    if result.tool_errors:
        return _tool_error(entry, result)
    if done.grade is None:  # for the harness, after the replays
        entry.patch = result.patch
        return entry
    return _graded(entry, done.grade)


def grade_replayed(
    jobs: list[_Job], ledger: Ledger[Entry], grading: GradingConfig, env_cfg: EnvConfig, out: Path, run: _Run
) -> None:
    """Grade the replayed patches with the official harness, a batch per round: a round holds at most one
    trajectory per instance (the harness keys predictions by instance id)."""
    rounds: dict[int, list[_Job]] = defaultdict(list)
    seen: Counter = Counter()
    for job in jobs:
        rounds[seen[job.task.instance_id]].append(job)
        seen[job.task.instance_id] += 1
    for batch in rounds.values():
        entries = {job.key: ledger.get(job.key) for job in batch}
        grades = grade_all(
            [(job.task, entries[job.key].patch) for job in batch],
            grading,
            env_cfg=env_cfg,
            work_dir=out / "harness",
            run_prefix="check-experts",
            max_workers=env_cfg.pool_size,
        )
        run.harness_graded += len(batch)
        for job in batch:
            ledger.write(_graded(entries[job.key], grades[job.task.instance_id]))


def write_kept(trajectories: dict[str, Trajectory], ledger: Ledger, path: Path) -> int:
    """Write the kept trajectories (ledger verdict `kept` for this very record) in source order."""
    kept = []
    for key, trajectory in trajectories.items():
        entry = ledger.get(key)
        if entry is not None and entry.verdict == "kept" and entry.digest == _digest(trajectory):
            check = {"source": key, "grader": entry.grader}
            kept.append(
                trajectory.model_copy(
                    update={"resolved": True, "meta": {**trajectory.meta, "expert_check": check}}
                )
            )
    return write_jsonl(kept, path)


def make_report(
    source: str | Path,
    cfg: ExpertCheckConfig,
    grading: GradingConfig,
    trajectories: dict[str, Trajectory],
    unreadable: list[tuple[str, str]],
    ledger: Ledger,
    kept: int,
    run: _Run,
) -> dict[str, Any]:
    """Kept of total, and every dropped record by reason (each reason's records in source order)."""
    keys = [key for key, _ in unreadable] + list(trajectories)
    dropped: dict[str, list[dict[str, Any]]] = {reason: [] for reason in REASONS}
    for key in keys:
        entry = ledger.get(key)
        if entry is not None and entry.verdict in dropped:
            dropped[entry.verdict].append(entry.summary())
    return {
        "source": str(source),
        "tasks": cfg.tasks or "bundled",
        "grader": grading.grader,
        "out": cfg.out,
        "kept_file": str(Path(cfg.out) / "kept.jsonl"),
        "total": len(keys),
        "trajectories": len(trajectories),
        "kept": kept,
        "dropped_counts": {reason: len(entries) for reason, entries in dropped.items() if entries},
        "dropped": {reason: entries for reason, entries in dropped.items() if entries},
        "this_run": {
            "replayed": run.replayed,
            "harness_graded": run.harness_graded,
            "from_ledger": run.from_ledger,
        },
        "seconds": round(time.perf_counter() - run.started, 2),
    }


def format_report(report: dict[str, Any]) -> str:
    """The printed summary: kept of total, then each reason with its trajectories (at most SUMMARY_IDS)."""
    this = report["this_run"]
    head = (
        f"kept {report['kept']} of {report['total']} ({report['trajectories']} SWE trajectories) in "
        f"{report['seconds']:.1f} s: {this['replayed']} replayed this run, "
        f"{this['from_ledger']} judged before"
    )
    lines = [head, f"kept trajectories: {report['kept_file']}"]
    for reason, entries in report["dropped"].items():
        lines.append(f"dropped {reason} ({len(entries)}):")
        for entry in entries[:SUMMARY_IDS]:
            where = f"{entry.get('instance_id') or '-'} ({entry['key']})"
            lines.append(f"  {where}: {_first_line(entry.get('detail', ''))}")
        if len(entries) > SUMMARY_IDS:
            lines.append(f"  ... and {len(entries) - SUMMARY_IDS} more (report.json lists them)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Verdicts


def _tool_error(entry: Entry, result: ReplayResult) -> Entry:
    first = result.tool_errors[0]
    graded = f"; its patch graded {result.grade.status}" if entry.grader == "fast" else ""
    entry.verdict, entry.step, entry.tool = "tool_error", first.step, first.tool
    entry.detail = f"tool error at step {first.step} ({first.tool}): {_first_line(first.observation)}{graded}"
    return entry


def _graded(entry: Entry, grade: GradeResult) -> Entry:
    entry.status, entry.patch = grade.status, None
    if grade.resolved:
        entry.verdict, entry.detail = "kept", ""
    elif grade.status == "error":  # the grader could not run the tests: not the trajectory's verdict
        entry.verdict, entry.detail = "infrastructure_error", f"grading failed: {grade.detail[:1000]}"
    else:
        failing = grade.fail_to_pass.failure + grade.pass_to_pass.failure
        why = grade.detail or (f"failing tests: {', '.join(failing[:5])}" if failing else "")
        entry.verdict, entry.detail = "not_resolved", f"{grade.status}: {why[:1000]}".rstrip(": ")
    return entry


def _verdict(ledger: Ledger, key: str) -> str | None:
    entry = ledger.get(key)
    return entry.verdict if entry is not None else None


def _infrastructure(job: _Job, detail: str) -> Entry:
    return Entry(job.key, "infrastructure_error", job.task.instance_id, job.digest, detail[:2000])


def _digest(trajectory: Trajectory) -> str:
    return hashlib.sha256(to_json_line(trajectory).encode()).hexdigest()[:16]


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else ""
