"""Grading a patch against a task: the official swebench harness, and a fast in-container test runner.

- `grade_with_harness(instances, predictions, run_id, ...)`: the reference. Calls
  `swebench.harness.run_evaluation.main` (swebench 5.x, the only import of swebench in this project,
  made inside the function) on a dataset JSON of the instances, with images that must already exist
  locally under each instance's `image` name (`python -m environments build`), so nothing is pulled.
  It reads the harness's per-instance `report.json` files and its run summary.
- `official_image_name(instance_id)`: the image the harness's convention names for an instance
  (`swebench/sweb.eval.x86_64.<id>:latest`, `__` -> `_1776_`), for rows that carry no `image`.
- `run_tests_in_env(env, task, patch, ...)`: for RLVR rewards, where starting a container per grade
  and importing swebench (about 3 s) would dominate. In a running environment at the task's base
  commit it applies the patch and the test patch, runs exactly the FAIL_TO_PASS and PASS_TO_PASS
  tests with the task's test command (`pytest -rA` for bundled and generated tasks, a SWE-smith
  profile's for SWE-smith rows), reads their log with the task's parser, and grades the statuses with
  the rules of swebench 5.x (`grade_statuses`, tested against the harness in
  tests/environments/test_grading.py).

Both return a `GradeResult`. Outcomes that are not "the tests ran" are results, not exceptions: an
empty patch (`empty_patch`), a patch that does not apply (`patch_failed`, with git's message), tests
that ran past the grader's time limit (`timeout`: the patch applied and its tests hung, the patch's
outcome, as the harness's "Test timed out" is an unresolved instance on SWE-bench's leaderboards), or
a harness/test-run failure (`error`, with the reason and the log path: no verdict on the patch). None
of them counts as resolved.

Harness logs go to `<work_dir>/logs/run_evaluation/<run_id>/...` (swebench writes them relative to
the working directory, so the call runs inside `work_dir`; the process's cwd is restored afterwards,
which makes concurrent calls from threads of one process unsafe). The harness reuses a finished
`(run_id, instance)` report, so a new patch needs a new `run_id`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from environments.protocol import Environment

Status = Literal["resolved", "unresolved", "empty_patch", "patch_failed", "timeout", "error"]

APPLY_FAILED_MARKER = ">>>>> Patch Apply Failed"
TIMED_OUT_MARKER = "Test timed out after"  # the harness's EvaluationError when the tests hang
PASSING = frozenset({"PASSED", "XFAIL"})
PYTEST_STATUSES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL")
SWEBENCH_STATUS_ORDER = ("FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL")  # swebench's TestStatus order
MODEL_NAME = "srl-agent"
# swebench 5.x run_evaluation.GIT_APPLY_CMDS, in its order (copied: importing swebench costs seconds).
APPLY_COMMANDS = (
    "git apply --verbose",
    "git apply --verbose --3way",
    "git apply --verbose --reject",
    "patch --batch --forward --fuzz=5 -p1 -i",
)
PATCH_PATH = "/tmp/srl_agent_patch.diff"
TEST_PATCH_PATH = "/tmp/srl_agent_test_patch.diff"
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # a line of the harness's own log


class FastGradable(Protocol):
    """What the fast runner reads of a task (bundled, generated and SWE-smith tasks have it)."""

    @property
    def instance_id(self) -> str: ...

    @property
    def base_commit(self) -> str | None:
        """The commit the test files are put back to; None: the environment's HEAD, which is the base
        commit when grading starts (`grader.grade` resets the environment first)."""
        ...

    @property
    def test_patch(self) -> str: ...

    @property
    def test_files(self) -> Sequence[str]: ...

    @property
    def fail_to_pass(self) -> Sequence[str]: ...

    @property
    def pass_to_pass(self) -> Sequence[str]: ...

    @property
    def test_command(self) -> str:
        """The command the tests run with; the test ids are appended (`python3 -m pytest -rA ...`)."""
        ...

    def parse_log(self, log: str) -> dict[str, str]:
        """`{test id: status}` read from the test command's output (`parse_pytest_report` for `-rA`)."""
        ...


@dataclass
class Outcomes:
    """The tests of one group (FAIL_TO_PASS or PASS_TO_PASS) that succeeded and that failed."""

    success: list[str] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)


@dataclass
class GradeResult:
    """The outcome of grading one patch. `resolved` iff every F2P and P2P test succeeded."""

    instance_id: str
    status: Status
    fail_to_pass: Outcomes = field(default_factory=Outcomes)
    pass_to_pass: Outcomes = field(default_factory=Outcomes)
    detail: str = ""  # why, for every status but resolved/unresolved; where the logs are, for the harness
    grader: Literal["harness", "fast"] = "harness"

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    @property
    def patch_applied(self) -> bool:
        return self.status in ("resolved", "unresolved", "timeout")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "resolved": self.resolved, "patch_applied": self.patch_applied}


# ---------------------------------------------------------------------------------------------------
# Pure parts: reading pytest output and applying swebench 5.x's grading rules.


def parse_pytest_report(log: str) -> dict[str, str]:
    """`{node id: status}` from the summary lines of `pytest -rA` (`PASSED tests/x.py::t`, `FAILED
    tests/x.py::t - reason`). Same reading as swebench's `parse_log_pytest`, minus its skip-summary
    special case (`SKIPPED [N] path:line: reason` names no test, so it is dropped here too)."""
    statuses: dict[str, str] = {}
    for line in log.splitlines():
        word, _, rest = line.partition(" ")
        if word not in PYTEST_STATUSES or not rest.strip():
            continue
        test = rest.split(" - ", 1)[0].split()[0]
        if word == "SKIPPED" and test.startswith("["):
            continue
        statuses[test] = word
    return statuses


def parse_pytest_verbose(log: str) -> dict[str, str]:
    """`{node id: status}` from `pytest --verbose` lines (`tests/x.py::t PASSED  [ 50%]`): SWE-smith's
    default log parser (`PythonProfile.log_parser`: per line, `^(\\S+)\\s+<STATUS>` for each of
    swebench's statuses, the later match winning), which its Python profiles grade with."""
    statuses: dict[str, str] = {}
    for line in log.split("\n"):
        for status in SWEBENCH_STATUS_ORDER:
            match = re.match(rf"^(\S+)(\s+){status}", line)
            if match:
                statuses[match.group(1)] = status
    return statuses


def grade_statuses(
    instance_id: str, fail_to_pass: Iterable[str], pass_to_pass: Iterable[str], statuses: Mapping[str, str]
) -> GradeResult:
    """swebench 5.x rules: an F2P test succeeds only if PASSED/XFAIL (a skipped or missing one fails);
    a P2P test succeeds if PASSED/XFAIL/SKIPPED and fails if FAILED/ERROR/missing."""
    f2p, p2p = Outcomes(), Outcomes()
    for test in fail_to_pass:
        (f2p.success if statuses.get(test) in PASSING else f2p.failure).append(test)
    for test in pass_to_pass:
        ok = statuses.get(test) in PASSING or statuses.get(test) == "SKIPPED"
        (p2p.success if ok else p2p.failure).append(test)
    status: Status = "unresolved" if f2p.failure or p2p.failure else "resolved"
    return GradeResult(instance_id, status, f2p, p2p, grader="fast")


# ---------------------------------------------------------------------------------------------------
# The fast runner.


def run_tests_in_env(
    env: Environment, task: FastGradable, patch: str | None, *, timeout: float = 300.0
) -> GradeResult:
    """Grade `patch` in a running environment whose repository is at the task's base commit.

    Commands run in their own bash, not the agent's shell, so nothing the agent set there (cwd,
    variables, functions) reaches the tests; each is bounded by `timeout` seconds. Leaves the patch
    and the test patch applied: reset the environment before reusing it.
    """
    iid = task.instance_id
    if not (patch or "").strip():
        return GradeResult(iid, "empty_patch", detail="the patch is empty", grader="fast")
    env.write_file(PATCH_PATH, _normalize_patch(patch or ""))
    env.write_file(TEST_PATCH_PATH, task.test_patch)
    limit = f"cd /testbed && timeout -s KILL {int(timeout)}"
    code, out = _apply_like_the_harness(env, limit)
    if code != 0:
        return GradeResult(
            iid,
            "patch_failed",
            grader="fast",
            detail=f"the patch does not apply (exit {code}): {out.strip()[-2000:]}",
        )
    files = " ".join(shlex.quote(f) for f in task.test_files)
    # the test files as the task's commit has them (a patch cannot change the tests that grade it), then
    # the task's test patch when it has one (a generated task's tests are already in its commit)
    apply = f" && git apply {TEST_PATCH_PATH} 2>&1" if task.test_patch.strip() else ""
    base = shlex.quote(task.base_commit or "HEAD")
    code, out = env.exec(f"{limit} git checkout {base} -- {files} 2>&1{apply}")
    if code != 0:
        return GradeResult(
            iid, "error", detail=f"the test patch does not apply: {out.strip()[-2000:]}", grader="fast"
        )
    tests = " ".join(shlex.quote(t) for t in (*task.fail_to_pass, *task.pass_to_pass))
    # In its own bash: a profile's command may be several (`source ...; conda activate ...; pytest`), and
    # `timeout` kills the whole process group.
    code, out = env.exec(f"{limit} bash -c {shlex.quote(f'{task.test_command} {tests}')} 2>&1")
    if code == 137:  # killed by `timeout`: the tests hung with the patch applied
        detail = f"the tests ran past {int(timeout)} s: {out.strip()[-2000:]}"
        return GradeResult(iid, "timeout", detail=detail, grader="fast")
    statuses = task.parse_log(out)
    if not statuses:
        return GradeResult(
            iid, "error", detail=f"no test results (exit {code}): {out.strip()[-2000:]}", grader="fast"
        )
    if code != 0 and not any(s in ("FAILED", "ERROR") for s in statuses.values()):
        # As the harness does: a failing run whose log shows no failure is not describing that run
        # (e.g. a patched conftest printing fake PASSED lines).
        return GradeResult(
            iid, "error", detail=f"pytest exited {code} but reported no failure", grader="fast"
        )
    return grade_statuses(iid, task.fail_to_pass, task.pass_to_pass, statuses)


def _apply_like_the_harness(env: Environment, limit: str) -> tuple[int, str]:
    """Try the harness's commands in its order (git apply, --3way, --reject, patch --fuzz=5), restoring
    the tree between tries, so that a patch applies here exactly when it applies there."""
    restore = "cd /testbed && git checkout -- . ; git clean -fdq"
    code, out = 1, ""
    for attempt, command in enumerate(APPLY_COMMANDS):
        if attempt:
            env.exec(restore)
        code, out = env.exec(f"{limit} {command} {PATCH_PATH} 2>&1")
        if code == 0:
            return code, out
    env.exec(restore)  # the last try (patch) leaves .orig/.rej files behind
    reverse, _ = env.exec(f"{limit} git apply --check --reverse {PATCH_PATH}")
    return (0, out) if reverse == 0 else (code, out)


def _normalize_patch(patch: str) -> str:
    """Patches from SWE-agent may carry CRLF line ends and a leading blank line; git apply wants neither."""
    text = patch.replace("\r\n", "\n").lstrip("\n")
    return text if text.endswith("\n") else text + "\n"


# ---------------------------------------------------------------------------------------------------
# The official harness.


def grade_with_harness(
    instances: Iterable[Mapping[str, Any]],
    predictions: Mapping[str, str | None],
    run_id: str,
    *,
    work_dir: str | Path,
    timeout: int = 600,
    max_workers: int = 1,
    model_name: str = MODEL_NAME,
) -> dict[str, GradeResult]:
    """Grade `predictions` (`{instance_id: patch}`) with `swebench.harness.run_evaluation.main`.

    `instances` are swebench 5.x instances (`Task.instance()`); their images must exist locally.
    Returns one GradeResult per prediction. Raises ValueError for a prediction without an instance.
    """
    from swebench.harness import run_evaluation

    instances = list(instances)
    known = {i["instance_id"] for i in instances}
    unknown = sorted(set(predictions) - known)
    if unknown:
        raise ValueError(f"predictions for instances not in the dataset: {', '.join(unknown)}")
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    dataset = work_dir / "dataset.json"
    dataset.write_text(json.dumps(instances, indent=1) + "\n", encoding="utf-8")
    preds_path = work_dir / f"predictions.{run_id}.jsonl"
    rows = [
        {"instance_id": iid, "model_name_or_path": model_name, "model_patch": _harness_patch(patch)}
        for iid, patch in predictions.items()
    ]
    preds_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # The harness sets soft and hard RLIMIT_NOFILE to this value: pass the current hard limit, so the
    # call raises the soft limit and never lowers the hard one for the rest of this process.
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    open_files = open_files if open_files != resource.RLIM_INFINITY else 1 << 20
    # The harness prints progress to stdout; send it to stderr so callers' stdout stays theirs (--json).
    with contextlib.chdir(work_dir), contextlib.redirect_stdout(sys.stderr):
        summary_path = run_evaluation.main(
            dataset_name=str(dataset),
            split="test",
            instance_ids=sorted(predictions),
            predictions_path=str(preds_path),
            max_workers=max_workers,
            open_file_limit=open_files,
            run_id=run_id,
            timeout=timeout,
            rewrite_reports=False,
            modal=False,
            report_dir=str(work_dir),
        )
    summary = json.loads(Path(work_dir, summary_path).read_text(encoding="utf-8")) if summary_path else {}
    log_root = work_dir / "logs" / "run_evaluation" / run_id / model_name.replace("/", "__")
    return {iid: _read_harness_result(iid, log_root / iid, summary) for iid in predictions}


def _harness_patch(patch: str | None) -> str | None:
    if patch is None or not patch.strip():
        return patch
    return _normalize_patch(patch)


def _read_harness_result(instance_id: str, log_dir: Path, summary: Mapping[str, Any]) -> GradeResult:
    if instance_id in summary.get("empty_patch_ids", []):
        return GradeResult(instance_id, "empty_patch", detail="empty patch: the harness does not run it")
    report_path = log_dir / "report.json"
    if not report_path.is_file():
        return _harness_error(instance_id, log_dir)
    report = json.loads(report_path.read_text(encoding="utf-8"))[instance_id]
    status_map = report.get("tests_status") or {}
    f2p = Outcomes(**_outcome(status_map.get("FAIL_TO_PASS")))
    p2p = Outcomes(**_outcome(status_map.get("PASS_TO_PASS")))
    if not report.get("patch_successfully_applied"):
        reason = report.get("infra_failure_reason") or "no valid test output (see test_output.txt)"
        return GradeResult(instance_id, "error", f2p, p2p, detail=f"{reason}; logs in {log_dir}")
    status: Status = "resolved" if report.get("resolved") else "unresolved"
    return GradeResult(instance_id, status, f2p, p2p, detail=f"logs in {log_dir}")


def _harness_error(instance_id: str, log_dir: Path) -> GradeResult:
    """No report.json: the harness stopped before grading. Tell a patch that did not apply from the rest."""
    log_file = log_dir / "run_instance.log"
    text = log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
    if APPLY_FAILED_MARKER in text:
        git_says = []
        for line in text.split(APPLY_FAILED_MARKER, 1)[1].lstrip(":\n").splitlines():
            if _LOG_LINE.match(line):
                break
            git_says.append(line.strip())
        git_says = " ".join(filter(None, git_says))
        return GradeResult(
            instance_id,
            "patch_failed",
            detail=f"the patch does not apply: {git_says[:2000]}; logs in {log_dir}",
        )
    if TIMED_OUT_MARKER in text:
        return GradeResult(
            instance_id, "timeout", detail=f"the tests ran past the timeout; logs in {log_dir}"
        )
    errors = [line for line in text.splitlines() if "Error" in line or "error" in line]
    why = errors[-1].strip() if errors else "the harness wrote no report"
    return GradeResult(instance_id, "error", detail=f"{why[:2000]}; logs in {log_dir or '(none)'}")


def _outcome(section: Mapping[str, Any] | None) -> dict[str, list[str]]:
    section = section or {}
    return {"success": list(section.get("success", [])), "failure": list(section.get("failure", []))}


def official_image_name(instance_id: str) -> str:
    """The published image of a SWE-bench instance: `swebench/sweb.eval.x86_64.<id>:latest`, lower-cased,
    with `__` as `_1776_` (Docker Hub forbids `__`). swebench's own function (`swebench.task.checks`,
    pure; a 20 ms import)."""
    from swebench.task.checks import expected_image

    return expected_image(instance_id)


def harness_run_id(prefix: str) -> str:
    """A run id that no earlier run used (the harness caches reports per run id)."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', prefix)}-{os.getpid()}-{os.urandom(3).hex()}"
