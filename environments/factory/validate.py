"""Validation of bug candidates, as SWE-smith does it, in one warm environment of the repository.

`reference(env, profile)` runs the clean repository's suite twice: the tests that passed both times are
the reference; a test whose status differs between the runs is flaky and left out of everything
(neither FAIL_TO_PASS nor PASS_TO_PASS). A suite that hangs, reports no test or passes none is a
`ReferenceError` naming why: the repository yields no task.

`check(env, profile, ref, patch)` applies one candidate, runs the suite and reads the verdict:
- `timeout`: the run passed `profile.timeout` seconds;
- `patch_failed`: the candidate does not apply;
- `broke_collection`: pytest could not collect the tests (an import error, a syntax error), or
  reported none;
- `no_failing_test`: no reference test FAILED with the bug (an ERROR is not a failure the fix shows);
- `no_passing_test`: no reference test passed with the bug (nothing stays to guard the fix: P2P empty);
- `broke_other_tests`: a reference test neither failed nor passed with the bug (an ERROR, a skip, or
  missing from the log): every reference test must pass or be a FAIL_TO_PASS test;
- `kept`: FAIL_TO_PASS = the reference tests that FAILED with the bug, PASS_TO_PASS = those that
  PASSED with it.
The environment is put back to the clean commit afterwards (`git checkout` and `git clean`: the
container stays warm, its installed environment untouched).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from environments.grading import parse_pytest_report

if TYPE_CHECKING:
    from environments.factory.profile import RepoProfile
    from environments.protocol import Environment

Status = Literal[
    "kept",
    "timeout",
    "patch_failed",
    "broke_collection",
    "no_failing_test",
    "no_passing_test",
    "broke_other_tests",
]
PATCH_PATH = "/tmp/srl_candidate.patch"
RESTORE = "cd /testbed && git checkout -q -- . && git clean -fdq"
_COLLECTION_ERRORS = ("errors during collection", "ERROR collecting", "Interrupted:")


class ReferenceError(RuntimeError):
    """The clean repository's test suite cannot serve as the reference; the message says why."""


@dataclass
class Reference:
    passed: set[str]
    """Tests that passed in both reference runs."""
    flaky: set[str]
    """Tests whose status differed between the two runs."""
    total: int
    """Tests the first run reported."""
    seconds: float


@dataclass
class Verdict:
    status: Status
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0


def run_suite(env: Environment, profile: RepoProfile, timeout: int) -> tuple[int, str, dict[str, str]]:
    """(exit code, log, {test: status}) of the whole suite, killed after `timeout` seconds (137)."""
    code, out = env.exec(f"cd /testbed && timeout -s KILL {timeout} {profile.full_test_cmd} 2>&1")
    return code, out, parse_pytest_report(out)


def reference(env: Environment, profile: RepoProfile) -> Reference:
    """The reference tests of the clean repository (see the module)."""
    started = time.perf_counter()
    runs = []
    for _ in range(2):
        code, out, statuses = run_suite(env, profile, profile.timeout_ref)
        if code == 137:
            raise ReferenceError(f"the test suite ran past {profile.timeout_ref} s at the clean commit")
        if not statuses:
            raise ReferenceError(f"the test suite reported no test at the clean commit: {out.strip()[-800:]}")
        runs.append(statuses)
        env.exec(RESTORE)
    first, second = runs
    flaky = {t for t in first.keys() | second.keys() if first.get(t) != second.get(t)}
    passed = {t for t, s in first.items() if s == "PASSED" and t not in flaky}
    if not passed:
        raise ReferenceError(f"no test passes at the clean commit ({len(first)} reported)")
    return Reference(passed, flaky, len(first), time.perf_counter() - started)


def check(env: Environment, profile: RepoProfile, ref: Reference, patch: str) -> Verdict:
    """The verdict on one candidate (see the module); the environment is clean again afterwards."""
    started = time.perf_counter()
    try:
        verdict = _check(env, profile, ref, patch)
    finally:
        env.exec(RESTORE)
    verdict.seconds = time.perf_counter() - started
    return verdict


def _check(env: Environment, profile: RepoProfile, ref: Reference, patch: str) -> Verdict:
    env.write_file(PATCH_PATH, patch if patch.endswith("\n") else patch + "\n")
    code, out = env.exec(f"cd /testbed && git apply {PATCH_PATH} 2>&1")
    if code != 0:
        return Verdict("patch_failed", detail=out.strip()[-500:])
    code, out, statuses = run_suite(env, profile, profile.timeout)
    if code == 137:
        return Verdict("timeout", detail=f"the tests ran past {profile.timeout} s")
    if not statuses or any(marker in out for marker in _COLLECTION_ERRORS):
        return Verdict("broke_collection", detail=_collection_error(out))
    f2p = sorted(t for t in ref.passed if statuses.get(t) == "FAILED")
    p2p = sorted(t for t in ref.passed if statuses.get(t) == "PASSED")
    if not f2p:
        return Verdict("no_failing_test")
    if not p2p:
        return Verdict("no_passing_test", f2p)
    others = sorted(ref.passed - set(f2p) - set(p2p))
    if others:
        what = ", ".join(f"{t} ({statuses.get(t, 'missing')})" for t in others[:3])
        return Verdict("broke_other_tests", f2p, p2p, detail=f"{len(others)} reference tests: {what}")
    return Verdict("kept", f2p, p2p)


def _collection_error(out: str) -> str:
    lines = [line for line in out.splitlines() if "Error" in line or "ERROR" in line]
    return (lines[0] if lines else out.strip()[-300:])[:300]
