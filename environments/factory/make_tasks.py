"""SWE tasks from a Python repository: `python -m environments make-tasks SOURCE --out DIR`.

Reads top to bottom in `make_tasks`:
1. the repository (`source.fetch`: a folder, `pypi:NAME==VERSION` or a git URL) in `DIR/repo`;
2. its profile (`profile.detect`, or `DIR/profile.json` from an earlier run) and its image: the offline
   base image, the repository in /testbed, installed with pip (an install that fails ends the run with
   that reason);
3. the reference: the clean suite run twice in a warm environment (`validate.reference`; flaky tests
   left out), kept in `DIR/reference.json`;
4. bug candidates (`bugs.candidates`, deterministic by `--seed`) checked `--workers` at a time, each in
   a warm environment put back to the clean commit between candidates (`validate.check`), until
   `--max-tasks` are kept; each verdict is a line of the ledger `DIR/results.jsonl`, so a rerun goes on
   where the last one stopped and redoes nothing it judged;
5. the kept candidates become tasks: the bug committed as branch `<instance_id>` of `DIR/repo` with a
   fixed author and date (its sha is the task's `base_commit`), a problem statement written from the
   failing tests (`statements`; `--statements template`: a short fixed text; with `--issue-model`, a
   model writes it from the test-based one and the bug: `issues`), an expert trajectory recorded in
   the task's own image (`experts`);
6. `DIR/instances.jsonl` (SWE-smith's instance format), `DIR/manifest.json` (the split into train and
   held-out tasks by `--split-by`), `DIR/report.json`: candidates tried and kept, each drop reason
   counted, where the time went.
"""

from __future__ import annotations

import json
import logging
import random
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from environments.chat_api import ChatAPIConfig, is_chat_model, parse_model
from environments.factory import profile as profiles
from environments.factory import validate
from environments.factory.issues import IssueRequest, IssueWriter, IssueWriterError
from environments.factory.source import Checkout, commit_patch, fetch, run_git
from environments.factory.tasks import INSTANCES, MANIFEST, PROFILE, GeneratedTask, repo_image
from trajectories.config import Section
from trajectories.ledger import Ledger, check_run_folder

if TYPE_CHECKING:
    from environments.config import EnvConfig
    from environments.factory.bugs import Candidate
    from environments.protocol import Environment, Pool

log = logging.getLogger(__name__)

DROP_REASONS = (
    "no_failing_test",
    "no_passing_test",
    "broke_collection",
    "broke_other_tests",
    "timeout",
    "patch_failed",
    "duplicate",
)


class MakeTasksConfig(Section):
    """`python -m environments make-tasks`: what to make tasks from, how many, where to write them."""

    source: str = ""
    """A local folder, `pypi:NAME==VERSION` or a git URL (`--source` is the positional SOURCE)."""
    out: str = "runs/tasks"
    """The output folder (`--out`): the repository, profile, ledger, instances, trajectories, report."""
    max_tasks: int | None = Field(None, ge=1)
    """Stop once this many candidates are kept (`--max-tasks`; null: every candidate is tried)."""
    max_candidates: int | None = Field(None, ge=1)
    """Candidates to try at most (null: all the modifiers give)."""
    modifiers: list[str] | None = None
    """Only these of SWE-smith's bug modifiers (`--modifiers`, by name: `func_pm_op_change`, ...; a
    task's id carries its modifier's name); null: all of them."""
    seed: int = 24
    """Seeds the candidates' order and modifications and the split (SWE-smith's default, 24)."""
    test_cmd: str | None = None
    """The test command (`--test-cmd`), instead of the profile's `python3 -m pytest -rA ...` over the
    test folders; its log must have pytest's `-rA` summary lines."""
    timeout: int = Field(90, gt=0)
    """Seconds one candidate's test run may take before it is dropped as `timeout`."""
    split_by: Literal["task", "file", "repo"] = "task"
    """What the held-out split keeps together: single tasks, every task of one source file, or the
    whole repository (`--split-by`)."""
    held_out: float = Field(0.2, ge=0, le=1)
    """The share of groups (tasks, files or repositories) held out, chosen by seed."""
    issue_model: str | None = None
    """A model that writes the problem statements (`--issue-model`): `openai:NAME@URL` (NAME served by
    the OpenAI-compatible server whose API base is URL), or a bare NAME served at `issue_api_base`
    (`factory/issues.py`); null: the test-based statements, no model."""
    issue_api_base: str = "http://localhost:8000/v1"
    """Where a bare `issue_model` NAME is served (vLLM's server answers here by default)."""
    issue_api: ChatAPIConfig = Field(default_factory=ChatAPIConfig)
    """How the issue writer asks the server: timeout and retries (`environments.chat_api`)."""
    statements: Literal["test", "template", "template-line"] = "test"
    """How a statement reads without `issue_model` (`--statements`): `test`, SWE-smith's failing test
    and its output (a few thousand characters); `template`, a short fixed text naming the changed file,
    the function and the failing tests (`factory/statements.py`), for small models and short prompts;
    `template-line`, that text quoting also the first line the bug changed (where, not the fix)."""

    @field_validator("issue_model")
    @classmethod
    def _model_string(cls, value: str | None) -> str | None:
        if value is not None and is_chat_model(value):
            parse_model(value, "--issue-model")  # a bad form is refused before anything runs
        return value

    @model_validator(mode="after")
    def _one_statement_writer(self) -> MakeTasksConfig:
        if self.issue_model and self.statements != "test":
            raise ValueError("issue_model writes from the test-based statement: leave statements at `test`")
        return self


@dataclass
class CandidateEntry:
    """One line of `results.jsonl`: what became of one candidate."""

    candidate_id: str
    status: str
    modifier: str = ""
    file: str = ""
    entity: str = ""
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0
    patch: str = ""
    original: str = ""
    """The entity's text before the bug (kept candidates only, as the other bug fields)."""
    modified: str = ""
    start_line: int = 0


@dataclass
class Timing:
    install: float = 0.0
    reference: float = 0.0
    candidates: float = 0.0
    tasks: float = 0.0


def make_tasks(
    cfg: MakeTasksConfig, env_cfg: EnvConfig, progress: bool = True, writer: IssueWriter | None = None
) -> dict[str, Any]:
    """Make (or go on making) the tasks `cfg` describes; the report, also in `<out>/report.json`.
    `writer` writes the problem statements (default: the test-based ones, no model)."""
    out = Path(cfg.out)
    timing, started = Timing(), time.perf_counter()
    ledger: Ledger[CandidateEntry] = Ledger(out / "results.jsonl", CandidateEntry, key="candidate_id")
    check_run_folder(out, run_settings(cfg), holds_results=bool(ledger.latest()), option="--out")
    if cfg.modifiers is not None:
        from environments.factory.bugs import check_modifiers

        check_modifiers(cfg.modifiers)  # before the fetch and the image build
    checkout = fetch(cfg.source, out)
    profile = load_profile(cfg, out, checkout)
    t0 = time.perf_counter()
    try:
        repo_image(profile, checkout.path, env_cfg)
    except Exception as e:  # noqa: BLE001 - ImageBuildError: the install failed, the repository yields nothing
        return finish(cfg, out, profile, [], {}, timing, started, failure=f"install failed: {e}")
    timing.install = time.perf_counter() - t0
    from environments.pool import open_pool

    workers = max(env_cfg.pool_size, 1)
    with open_pool(env_cfg, workers) as pool:  # the local engine(s), or a Ray cluster's nodes
        envs = [pool.get(profile.image) for _ in range(workers)]  # warm, held through the candidates
        try:
            try:
                ref = load_reference(out, envs[0], profile, timing)
            except validate.ReferenceError as e:
                return finish(cfg, out, profile, [], {}, timing, started, failure=f"reference: {e}")
            t0 = time.perf_counter()
            check_candidates(cfg, checkout, profile, ref, ledger, envs, progress)
            timing.candidates = time.perf_counter() - t0
        finally:
            for env in envs:
                pool.release(env)
        t0 = time.perf_counter()
        tasks = make_instances(cfg, out, checkout, profile, ledger, pool, env_cfg, writer)
        timing.tasks = time.perf_counter() - t0
    return finish(cfg, out, profile, tasks, ledger.latest(), timing, started)


def run_settings(cfg: MakeTasksConfig) -> dict[str, Any]:
    """What the verdicts and tasks in an output folder depend on: a rerun goes on from the folder only
    with these. `max_tasks` and `max_candidates` may grow (a rerun makes more), and the split is
    drawn again from the manifest's settings each time."""
    return {"source": cfg.source, "seed": cfg.seed, "modifiers": cfg.modifiers, "test_cmd": cfg.test_cmd,
            "timeout": cfg.timeout, "issue_model": cfg.issue_model,
            # only when set: folders made before the setting existed hold test-based statements
            **({"statements": cfg.statements} if cfg.statements != "test" else {})}  # fmt: skip


def load_profile(cfg: MakeTasksConfig, out: Path, checkout: Checkout) -> profiles.RepoProfile:
    """`out/profile.json` when an earlier run wrote it for this commit, else the detected profile."""
    path = out / PROFILE
    if path.is_file():
        saved = profiles.RepoProfile.read(path)
        if saved.commit == checkout.commit:
            return saved
    image = f"srl-factory/{checkout.name}.{checkout.commit[:8]}:latest"
    profile = profiles.detect(checkout.name, checkout.path, checkout.commit, image)
    profile.timeout = cfg.timeout
    if cfg.test_cmd:
        profile.test_cmd, profile.test_paths = cfg.test_cmd, []
    path.write_text(profile.to_json(), encoding="utf-8")
    return profile


def load_reference(
    out: Path, env: Environment, profile: profiles.RepoProfile, timing: Timing
) -> validate.Reference:
    path = out / "reference.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("commit") == profile.commit and data.get("test_cmd") == profile.full_test_cmd:
            return validate.Reference(set(data["passed"]), set(data["flaky"]), data["total"], data["seconds"])
    ref = validate.reference(env, profile)
    timing.reference = ref.seconds
    data = {"commit": profile.commit, "test_cmd": profile.full_test_cmd, "passed": sorted(ref.passed),
            "flaky": sorted(ref.flaky), "total": ref.total, "seconds": ref.seconds}  # fmt: skip
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return ref


def check_candidates(
    cfg: MakeTasksConfig,
    checkout: Checkout,
    profile: profiles.RepoProfile,
    ref: validate.Reference,
    ledger: Ledger[CandidateEntry],
    envs: list[Environment],
    progress: bool,
) -> None:
    """Check candidates on the warm environments until `cfg.max_tasks` are kept (see the module)."""
    from environments.factory.bugs import candidates

    lock, free = threading.Lock(), list(envs)
    kept = sum(e.status == "kept" for e in ledger.latest().values())
    seen_patches = {e.patch for e in ledger.latest().values() if e.patch}
    stream: Iterator[Candidate] = candidates(
        checkout.path, seed=cfg.seed, max_candidates=cfg.max_candidates, modifiers=cfg.modifiers
    )

    def enough() -> bool:
        return cfg.max_tasks is not None and kept >= cfg.max_tasks

    def one(candidate: Candidate) -> None:
        nonlocal kept
        with lock:
            if enough():
                return
            env = free.pop()
        try:
            verdict = validate.check(env, profile, ref, candidate.patch)
        finally:
            with lock:
                free.append(env)
        entry = CandidateEntry(candidate.candidate_id, verdict.status, candidate.modifier, candidate.file,
                               candidate.entity, verdict.fail_to_pass, verdict.pass_to_pass, verdict.detail,
                               round(verdict.seconds, 2))  # fmt: skip
        if verdict.status == "kept":  # what makes the task and its expert
            entry.patch, entry.original, entry.modified = (
                candidate.patch,
                candidate.original,
                candidate.modified,
            )
            entry.start_line = candidate.start_line
        with lock:
            kept += verdict.status == "kept"
            ledger.write(entry)
            if progress:
                counts = Counter(e.status for e in ledger.latest().values())
                print(f"{candidate.candidate_id}: {verdict.status} ({verdict.seconds:.1f} s) - "
                      f"kept {counts['kept']} of {sum(counts.values())}", file=sys.stderr, flush=True)  # fmt: skip

    def todo() -> Iterator[Candidate]:
        for candidate in stream:
            if enough():
                return
            if ledger.get(candidate.candidate_id) is not None:
                continue
            if candidate.patch in seen_patches:
                ledger.write(CandidateEntry(candidate.candidate_id, "duplicate", candidate.modifier,
                                            candidate.file, candidate.entity))  # fmt: skip
                continue
            seen_patches.add(candidate.patch)
            yield candidate

    with ThreadPoolExecutor(max_workers=len(envs), thread_name_prefix="candidate") as pool:
        list(pool.map(one, todo()))


def make_instances(
    cfg: MakeTasksConfig,
    out: Path,
    checkout: Checkout,
    profile: profiles.RepoProfile,
    ledger: Ledger[CandidateEntry],
    pool: Pool,
    env_cfg: EnvConfig,
    writer: IssueWriter | None = None,
) -> list[GeneratedTask]:
    """The kept candidates as tasks, `pool.size` at a time: bug commits, problem statements (in
    environments of the repository's image), experts (in each task's image), then `instances.jsonl`
    in instance-id order.
    A task whose row and trajectory an earlier run wrote (`DIR/tasks.jsonl`) is not made again."""
    kept = sorted((e for e in ledger.latest().values() if e.status == "kept"), key=lambda e: e.candidate_id)
    if cfg.max_tasks is not None:
        kept = kept[: cfg.max_tasks]
    (out / "trajectories").mkdir(exist_ok=True)
    made: Ledger[TaskEntry] = Ledger(out / "tasks.jsonl", TaskEntry, key="instance_id")
    git_lock = threading.Lock()

    def one(entry: CandidateEntry) -> dict[str, Any]:
        iid = f"{profile.name}.{profile.commit[:8]}.{entry.candidate_id}"
        traj = out / "trajectories" / f"{iid}.traj"
        if (done := made.get(iid)) is not None and traj.is_file():
            return done.row
        with git_lock:  # one ref update at a time in the shared repository
            sha = commit_patch(
                checkout.path, profile.commit, entry.patch, f"Bug: {entry.modifier} in {entry.entity}\n"
            )
            run_git(checkout.path, "branch", "-f", iid, sha)
        with pool.acquire(profile.image) as env:
            statement, written_by = problem_statement(env, checkout, entry, cfg.seed, cfg.statements)
        if writer is not None and written_by == "test":
            statement, written_by = model_statement(writer, iid, entry, statement)
        row = {
            "instance_id": iid,
            "repo": f"{IMAGE_REPO_PREFIX}/{profile.name}.{profile.commit[:8]}",
            "patch": entry.patch,
            "FAIL_TO_PASS": entry.fail_to_pass,
            "PASS_TO_PASS": entry.pass_to_pass,
            "image_name": profile.image,
            "problem_statement": statement,
            "base_commit": sha,
            "created_at": "2025-01-01T00:00:00Z",
        }
        task = GeneratedTask(**row, folder=out, row=row)
        record_expert(task, entry, checkout, pool, env_cfg, traj)
        made.write(TaskEntry(iid, row, written_by))
        return row

    with ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="task") as threads:
        rows = sorted(threads.map(one, kept), key=lambda r: r["instance_id"])
    (out / INSTANCES).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [GeneratedTask(**r, folder=out, row=r) for r in rows]


@dataclass
class TaskEntry:
    """One line of `tasks.jsonl`: a task made (its SWE-smith row); its trajectory is written before."""

    instance_id: str
    row: dict[str, Any]
    statement: str = "test"
    """What wrote the problem statement: `test`, `template`, `template-line` or `model`."""


IMAGE_REPO_PREFIX = "srl-factory"


def problem_statement(
    env: Environment, checkout: Checkout, entry: CandidateEntry, seed: int, kind: str = "test"
) -> tuple[str, str]:
    """SWE-smith's test-based statement: a failing test's source and its output with the bug (run in
    the warm environment, put back afterwards); a template when `kind` asks for one or no test's
    source can be cut out (`template-line`: quoting the first line the bug changed). With what wrote
    it: `test`, `template` or `template-line`."""
    from environments.factory import statements

    read = lambda path: (checkout.path / path).read_text(encoding="utf-8")
    picked = None
    if kind == "test":
        picked = statements.pick_test(entry.fail_to_pass, read, seed, key=entry.candidate_id)
    if kind == "template-line" and (line := statements.first_changed_line(entry.patch)) is not None:
        return statements.from_template(
            entry.file, entry.entity, entry.fail_to_pass, seed, entry.candidate_id, line
        ), "template-line"
    if picked is None:
        return statements.from_template(
            entry.file, entry.entity, entry.fail_to_pass, seed, entry.candidate_id
        ), "template"
    test_id, source = picked
    env.write_file(validate.PATCH_PATH, entry.patch)
    try:
        env.exec(f"cd /testbed && git apply {validate.PATCH_PATH}")
        _, output = env.exec(
            f"timeout -s KILL 120 bash -c {shlex.quote(statements.output_command(test_id))} 2>&1"
        )
    finally:
        env.exec(validate.RESTORE)
    return statements.from_test(test_id, source, output), "test"


def model_statement(
    writer: IssueWriter, iid: str, entry: CandidateEntry, test_statement: str
) -> tuple[str, str]:
    """The statement `writer` writes from the bug and the test-based statement, with `model`; the
    test-based one, with `test`, when the writer fails (the reason is logged)."""
    request = IssueRequest(iid, entry.file, entry.entity, entry.patch, entry.fail_to_pass, test_statement)
    try:
        return writer.write(request), "model"
    except IssueWriterError as e:
        log.warning("the test-based statement stays: %s", e)
        return test_statement, "test"


def record_expert(
    task: GeneratedTask, entry: CandidateEntry, checkout: Checkout, pool: Pool, env_cfg: EnvConfig, path: Path
) -> None:
    """The task's expert trajectory, recorded in an environment of the task's own image (the bug in
    its commit; built here, where the repository is, and taken to a Ray node by the pool), written as
    a SWE-agent `.traj`."""
    from environments.factory.experts import expert_steps
    from environments.factory.tasks import task_image
    from environments.recorder import record_steps

    source = (checkout.path / entry.file).read_text(encoding="utf-8")
    steps = expert_steps(entry, source, entry.fail_to_pass)
    with pool.acquire(task_image(task, env_cfg)) as env:
        traj = record_steps(env, steps, instance_id=task.instance_id, problem_statement=task.problem_statement,
                            image=task.image, base_commit=task.base_commit)  # fmt: skip
    path.write_text(json.dumps(traj, indent=1) + "\n", encoding="utf-8")


def split(
    tasks: list[GeneratedTask], ledger: dict[str, CandidateEntry], cfg: MakeTasksConfig
) -> dict[str, list[str]]:
    """Train and held-out instance ids: groups (`cfg.split_by`) held out with probability `cfg.held_out`,
    chosen by seed."""

    def group(task: GeneratedTask) -> str:
        if cfg.split_by == "repo":
            return task.repo
        if cfg.split_by == "file":
            return ledger[task.instance_id.rsplit(".", 1)[-1]].file
        return task.instance_id

    groups = sorted({group(t) for t in tasks})
    random.Random(cfg.seed).shuffle(groups)
    held = set(groups[: round(len(groups) * cfg.held_out)])
    out: dict[str, list[str]] = {"train": [], "held_out": []}
    for task in tasks:
        out["held_out" if group(task) in held else "train"].append(task.instance_id)
    return out


def finish(
    cfg: MakeTasksConfig,
    out: Path,
    profile: profiles.RepoProfile,
    tasks: list[GeneratedTask],
    entries: dict[str, CandidateEntry],
    timing: Timing,
    started: float,
    failure: str | None = None,
) -> dict[str, Any]:
    """Write the manifest and the report; the report."""
    counts = Counter(e.status for e in entries.values())
    made = Ledger(out / "tasks.jsonl", TaskEntry, key="instance_id").latest()
    written_by = Counter(made[t.instance_id].statement for t in tasks if t.instance_id in made)
    seconds = time.perf_counter() - started
    manifest = {
        "source": cfg.source,
        "repo": profile.name,
        "commit": profile.commit,
        "image": profile.image,
        "split_by": cfg.split_by,
        "seed": cfg.seed,
        "split": split(tasks, entries, cfg),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    report = {
        "source": cfg.source,
        "out": str(out),
        "failure": failure,
        "candidates": sum(counts.values()),
        "kept": counts["kept"],
        "tasks": len(tasks),
        "dropped": {reason: counts[reason] for reason in DROP_REASONS if counts[reason]},
        "yield": counts["kept"] / max(sum(counts.values()), 1),
        "seconds": asdict(timing) | {"total": seconds},
        "seconds_per_task": seconds / len(tasks) if tasks else None,
        "statements": dict(sorted(written_by.items())),
        "split": {k: len(v) for k, v in manifest["split"].items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
