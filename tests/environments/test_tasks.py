"""The bundled tasks: well-formed swebench instances whose tests really fail at the base commit and pass
with the gold patch. Runs the tasks' own pytest suites on the host (no Docker)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from environments.grading import grade_statuses, parse_pytest_report
from environments.tasks.bundled import (
    TASK_SETUP,
    Task,
    TaskError,
    get_task,
    load_task,
    load_tasks,
    materialize_repo,
    write_dataset,
)

INSTANCE_KEYS = {
    "instance_id", "repo", "version", "base_commit", "patch", "test_patch", "problem_statement",
    "FAIL_TO_PASS", "PASS_TO_PASS", "image", "eval_script", "log_parser", "eval_type",
}  # fmt: skip


def run_task_tests(task: Task, repo: Path, *patches: str) -> dict[str, str]:
    for patch in patches:
        subprocess.run(["git", "apply", "-"], input=patch, text=True, cwd=repo, check=True)
    ids = [*task.fail_to_pass, *task.pass_to_pass]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *ids],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return parse_pytest_report(out.stdout)


def test_at_least_three_tasks_with_distinct_images():
    tasks = load_tasks()
    assert len(tasks) >= 3
    assert len({t.image for t in tasks}) == len(tasks)
    for t in tasks:
        assert t.image == f"srl-agent/sweb.eval.x86_64.{t.instance_id.replace('__', '_1776_')}:latest"
        assert t.expert_trajectory.is_file(), t.expert_trajectory


@pytest.mark.parametrize("task", load_tasks(), ids=lambda t: t.instance_id)
def test_instance_is_a_swebench_5_instance(task: Task):
    from swebench.harness.log_parsers import PARSER_REGISTRY
    from swebench.harness.utils import make_test_spec

    instance = task.instance()
    assert INSTANCE_KEYS <= instance.keys()
    spec = make_test_spec(instance)
    assert spec.image == task.image and spec.FAIL_TO_PASS == list(task.fail_to_pass)
    assert instance["log_parser"] in PARSER_REGISTRY
    # make_test_spec found the end marker and records the test command's exit status before it
    assert any(line.startswith("SWEBENCH_TEST_EXIT_CODE=$?") for line in spec.eval_script_list)
    check = subprocess.run(
        ["bash", "-n"], input=spec.eval_script, text=True, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert task.test_files and all(f"{f}::" in " ".join(task.fail_to_pass) for f in task.test_files)


@pytest.mark.parametrize("task", load_tasks(), ids=lambda t: t.instance_id)
def test_base_commit_is_reproduced_from_the_files(task: Task, tmp_path: Path):
    import git

    repo = git.Repo(materialize_repo(task, tmp_path / "repo"))
    assert repo.head.commit.hexsha == task.base_commit
    assert not repo.is_dirty(untracked_files=True)


@pytest.mark.parametrize("task", load_tasks(), ids=lambda t: t.instance_id)
def test_bug_is_real_and_gold_patch_fixes_it(task: Task, tmp_path: Path):
    base = materialize_repo(task, tmp_path / "base")
    gold = shutil.copytree(base, tmp_path / "gold")
    at_base = grade_statuses(task.instance_id, task.fail_to_pass, task.pass_to_pass,
                             run_task_tests(task, base, task.test_patch))  # fmt: skip
    assert at_base.fail_to_pass.failure == list(task.fail_to_pass)
    assert at_base.pass_to_pass.success == list(task.pass_to_pass)
    fixed = grade_statuses(task.instance_id, task.fail_to_pass, task.pass_to_pass,
                           run_task_tests(task, gold, task.patch, task.test_patch))  # fmt: skip
    assert fixed.resolved, fixed


def test_changed_repo_files_are_refused_with_the_new_sha(tmp_path: Path):
    folder = shutil.copytree(get_task("srl-agent__intervals-1").directory, tmp_path / "intervals")
    (folder / "repo" / "README.md").write_text("changed\n")
    with pytest.raises(TaskError, match=r"task\.json: base_commit is .* now commits to [0-9a-f]{40}"):
        materialize_repo(load_task(folder), tmp_path / "out")


def test_bad_task_files_name_the_file_and_key(tmp_path: Path):
    folder = shutil.copytree(get_task("srl-agent__paginate-1").directory, tmp_path / "paginate")
    meta = json.loads((folder / "task.json").read_text())
    meta["FAIL_TO_PASS"] = "tests/test_pages.py::test_partial_last_page"
    (folder / "task.json").write_text(json.dumps(meta))
    with pytest.raises(TaskError, match=r"paginate/task\.json: 'FAIL_TO_PASS' must be a list"):
        load_task(folder)
    (folder / "gold.patch").write_text("not a diff\n")
    meta["FAIL_TO_PASS"] = [meta["FAIL_TO_PASS"]]
    (folder / "task.json").write_text(json.dumps(meta))
    with pytest.raises(TaskError, match=r"gold\.patch: not a unified git diff"):
        load_task(folder)
    with pytest.raises(TaskError, match="no bundled task 'nope'; known: srl-agent__configlite-1"):
        get_task("nope")
    with pytest.raises(TaskError, match="no task folders"):
        load_tasks(tmp_path / "empty")


def test_write_dataset_is_what_the_harness_loads(tmp_path: Path):
    from swebench.harness.utils import load_swebench_dataset

    path = write_dataset(load_tasks(), tmp_path / "tasks.json")
    loaded = load_swebench_dataset(str(path), "test", ["srl-agent__configlite-1"])
    assert loaded == [get_task("srl-agent__configlite-1").instance()]


def test_task_setup_keeps_caches_out_of_patches():
    assert "__pycache__/" in TASK_SETUP and ".git/info/exclude" in TASK_SETUP
