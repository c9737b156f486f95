"""Grading: the fast runner's pytest reading and rules match swebench's, and on real containers the
official harness and the fast runner agree on a gold patch, an empty patch, a wrong patch and a patch
that does not apply (reported, never raised)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from environments import grading
from environments.grading import GradeResult, grade_statuses, grade_with_harness, parse_pytest_report
from environments.tasks.bundled import Task, build_images, get_task, load_tasks, materialize_repo


def wrong_patch(task: Task) -> str:
    """A patch that applies and changes the code, but not into a fix."""
    return {
        "srl-agent__configlite-1": task.patch.replace('line.split("=", 1)', 'line.split("=", 2)[:2]'),
        "srl-agent__intervals-1": task.patch.replace("current.start <= merged[-1].end", "current.start < merged[-1].end + 0"),
        "srl-agent__paginate-1": task.patch.replace("-(-len(self.items) // self.per_page)", "len(self.items) // self.per_page + 1"),
    }[task.instance_id]  # fmt: skip


def stale_patch(task: Task) -> str:
    """A patch whose removed line is not in the file: no apply command of the harness takes it."""
    first_removed = next(
        line for line in task.patch.splitlines() if line.startswith("-") and not line.startswith("---")
    )
    return task.patch.replace(first_removed, first_removed + "  # not in the file", 1)


def edited_patch(task: Task, tmp_path: Path, path: str, old: str, new: str) -> str:
    """The diff of one text replacement in the task's repository (a real `git diff`, valid hunks)."""
    repo = materialize_repo(task, tmp_path / f"edit-{task.directory.name}")
    target = repo / path
    text = target.read_text() if target.exists() else ""
    assert old in text
    target.write_text(text.replace(old, new, 1))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    return subprocess.run(
        ["git", "diff", "--cached"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def pytest_log(task: Task, tmp_path: Path) -> str:
    repo = materialize_repo(task, tmp_path / "repo")
    subprocess.run(["git", "apply", "-"], input=task.test_patch, text=True, cwd=repo, check=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *task.test_files],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip


# -- pure parts, no Docker ----------------------------------------------------------------------------


def test_pytest_reading_matches_swebench_parser(tmp_path: Path):
    from swebench.harness.log_parsers import PARSER_REGISTRY

    task = get_task("srl-agent__intervals-1")
    log = pytest_log(task, tmp_path)
    ours = parse_pytest_report(log)
    assert ours == PARSER_REGISTRY["parse_log_pytest"](log, None)
    assert {ours[t] for t in task.fail_to_pass} == {"FAILED"}
    assert {ours[t] for t in task.pass_to_pass} == {"PASSED"}


def test_pytest_reading_of_other_statuses():
    log = (
        "PASSED tests/a.py::test_ok\n"
        "FAILED tests/a.py::test_bad - AssertionError: 1 - 2\n"
        "ERROR tests/a.py::test_broken - fixture 'x' not found\n"
        "SKIPPED [1] tests/a.py:3: no reason\n"
        "XFAIL tests/a.py::test_known - bug 12\n"
        "PASSED\n"
        "random text PASSED tests/a.py::not_a_summary_line"
    )
    assert parse_pytest_report(log) == {
        "tests/a.py::test_ok": "PASSED", "tests/a.py::test_bad": "FAILED",
        "tests/a.py::test_broken": "ERROR", "tests/a.py::test_known": "XFAIL",
    }  # fmt: skip


def test_rules_are_swebench_5_rules():
    from swebench.harness.grading import get_eval_tests_report, get_resolution_status

    f2p, p2p = ["t::f1", "t::f2"], ["t::p1", "t::p2", "t::p3"]
    cases = [
        {"t::f1": "PASSED", "t::f2": "XFAIL", "t::p1": "PASSED", "t::p2": "SKIPPED", "t::p3": "PASSED"},
        {"t::f1": "PASSED", "t::f2": "SKIPPED", "t::p1": "PASSED", "t::p2": "PASSED", "t::p3": "PASSED"},
        {"t::f1": "PASSED", "t::f2": "PASSED", "t::p1": "ERROR", "t::p2": "PASSED"},
        {"t::f1": "FAILED", "t::p1": "PASSED", "t::p2": "PASSED", "t::p3": "PASSED"},
    ]
    for statuses in cases:
        ours = grade_statuses("x", f2p, p2p, statuses)
        theirs = get_eval_tests_report(statuses, {"FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p})
        assert (ours.fail_to_pass.success, ours.fail_to_pass.failure) == tuple(
            theirs["FAIL_TO_PASS"].values()
        )
        assert (ours.pass_to_pass.success, ours.pass_to_pass.failure) == tuple(
            theirs["PASS_TO_PASS"].values()
        )
        assert ours.resolved == (get_resolution_status(theirs) == "RESOLVED_FULL")
    assert [grade_statuses("x", f2p, p2p, c).resolved for c in cases] == [True, False, False, False]


def test_apply_commands_are_the_harness_commands():
    from swebench.harness.run_evaluation import GIT_APPLY_CMDS

    assert list(grading.APPLY_COMMANDS) == GIT_APPLY_CMDS


def test_unknown_prediction_is_refused_before_any_container(tmp_path: Path):
    with pytest.raises(ValueError, match="not in the dataset: nope__nope-1"):
        grade_with_harness([get_task("srl-agent__paginate-1").instance()], {"nope__nope-1": "x"}, "r",
                           work_dir=tmp_path)  # fmt: skip


# -- real containers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    tasks = load_tasks()
    build_images(tasks)  # cached by the images' input labels: about a second when nothing changed
    return tasks


@pytest.fixture(scope="module")
def cases(tasks: list[Task]) -> dict[str, dict[str, str]]:
    """{case: {instance_id: patch}}; each case is one harness run (one prediction per instance)."""
    t = {task.instance_id: task for task in tasks}
    return {
        "gold": {iid: task.patch for iid, task in t.items()},
        "mixed": {
            "srl-agent__configlite-1": "",
            "srl-agent__intervals-1": wrong_patch(t["srl-agent__intervals-1"]),
            "srl-agent__paginate-1": stale_patch(t["srl-agent__paginate-1"]),
        },
        "mixed2": {
            "srl-agent__configlite-1": wrong_patch(t["srl-agent__configlite-1"]),
            "srl-agent__paginate-1": wrong_patch(t["srl-agent__paginate-1"]),
        },
    }


@pytest.fixture(scope="module")
def harness_results(tasks, cases, tmp_path_factory) -> dict[str, dict[str, GradeResult]]:
    work = tmp_path_factory.mktemp("harness")
    instances = [t.instance() for t in tasks]
    return {
        name: grade_with_harness(instances, preds, grading.harness_run_id(name), work_dir=work, max_workers=3)
        for name, preds in cases.items()
    }


@pytest.mark.docker
def test_harness_gold_resolves_and_bad_patches_do_not(harness_results):
    assert {iid: r.status for iid, r in harness_results["gold"].items()} == {
        "srl-agent__configlite-1": "resolved", "srl-agent__intervals-1": "resolved", "srl-agent__paginate-1": "resolved",
    }  # fmt: skip
    mixed = harness_results["mixed"]
    assert mixed["srl-agent__configlite-1"].status == "empty_patch"
    assert mixed["srl-agent__intervals-1"].status == "unresolved"
    assert mixed["srl-agent__intervals-1"].fail_to_pass.failure  # the touching intervals still fail
    stale = mixed["srl-agent__paginate-1"]
    assert stale.status == "patch_failed" and not stale.resolved and not stale.patch_applied
    assert "paginate/pages.py" in stale.detail and "logs in" in stale.detail
    assert {r.status for r in harness_results["mixed2"].values()} == {"unresolved"}


@pytest.mark.docker
def test_fast_runner_agrees_with_the_harness(tasks, cases, harness_results):
    from environments.container import DockerEnvironment

    for task in tasks:
        with DockerEnvironment(task.image) as env:  # one container per task, reset between grades
            for name, preds in cases.items():
                if task.instance_id not in preds:
                    continue
                env.reset()
                fast = grading.run_tests_in_env(env, task, preds[task.instance_id], timeout=120)
                official = harness_results[name][task.instance_id]
                assert fast.grader == "fast" and official.grader == "harness"
                assert (fast.status, fast.fail_to_pass, fast.pass_to_pass) == (
                    official.status, official.fail_to_pass, official.pass_to_pass,
                ), f"{name}/{task.instance_id}: fast {fast} vs harness {official}"  # fmt: skip


@pytest.mark.docker
def test_fast_runner_reports_a_stale_patch_with_gits_message(tasks):
    from environments.container import DockerEnvironment

    task = get_task("srl-agent__paginate-1")
    with DockerEnvironment(task.image) as env:
        result = grading.run_tests_in_env(env, task, stale_patch(task))
        assert result.status == "patch_failed" and "paginate/pages.py" in result.detail
        # the failed tries left the repository as it was
        assert env.diff() == ""


@pytest.mark.docker
def test_fake_pass_lines_are_errors_and_hanging_tests_timeouts_for_both(tasks, tmp_path: Path):
    """A conftest printing PASSED for the failing tests after pytest's summary, and a fix that hangs:
    neither may count as resolved; both graders call the first an error (no verdict) and the second a
    timeout (the patch's outcome)."""
    from environments.container import DockerEnvironment

    paginate, intervals = get_task("srl-agent__paginate-1"), get_task("srl-agent__intervals-1")
    fake = "".join(f'    print("PASSED {t}")\n' for t in paginate.fail_to_pass)
    preds = {
        paginate.instance_id: edited_patch(paginate, tmp_path, "conftest.py", "",
                                           f"def pytest_unconfigure(config):\n{fake}"),
        intervals.instance_id: edited_patch(intervals, tmp_path, "intervals/core.py", "    merged: list[Interval] = []\n",
                                            "    merged: list[Interval] = []\n    __import__('time').sleep(3600)\n"),
    }  # fmt: skip
    official = grade_with_harness([paginate.instance(), intervals.instance()], preds, grading.harness_run_id("faults"),
                                  work_dir=tmp_path / "harness", timeout=10, max_workers=2)  # fmt: skip
    for task, status in ((paginate, "error"), (intervals, "timeout")):
        with DockerEnvironment(task.image) as env:
            fast = grading.run_tests_in_env(env, task, preds[task.instance_id], timeout=10)
        assert (fast.status, official[task.instance_id].status) == (status, status), (fast, official)
        assert fast.patch_applied == official[task.instance_id].patch_applied == (status == "timeout")
    with DockerEnvironment(paginate.image) as env:
        fast = grading.run_tests_in_env(env, paginate, preds[paginate.instance_id])
        assert "reported no failure" in fast.detail
