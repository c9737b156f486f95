"""What make-tasks says when a repository cannot give tasks: no tests, an install that fails, a suite
that passes nothing at the clean commit. Each is a clear reason, in the error or in the report, and the
output folder keeps what was made (for a run that fails at the reference, its profile)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from environments.config import EnvConfig
from environments.factory.make_tasks import MakeTasksConfig, make_tasks

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "factory_repo"


def variant(tmp_path: Path, files: dict[str, str | None]) -> Path:
    """A copy of the fixture repository with `files` written (None: removed)."""
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE, repo)
    for name, text in files.items():
        path = repo / name
        if text is None:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            path.write_text(text)
    return repo


def test_an_unknown_bug_modifier_is_refused_before_anything_is_fetched(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "environments", "make-tasks", str(FIXTURE), "--out", str(tmp_path / "out"),
         "--modifiers", "func_pm_op_change,func_pm_no_such"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown bug modifier(s) func_pm_no_such" in done.stderr, done.stderr
    assert (
        "func_pm_op_change," not in done.stderr.split("known:")[0]
        and not (tmp_path / "out" / "repo").exists()
    )


def test_a_repository_without_tests_is_refused_naming_why(tmp_path):
    repo = variant(tmp_path, {"tests": None})
    done = subprocess.run(
        [sys.executable, "-m", "environments", "make-tasks", str(repo), "--out", str(tmp_path / "out")],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"error: {repo}: no tests found" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.docker
def test_an_install_that_fails_is_the_reports_failure(tmp_path):
    repo = variant(tmp_path, {"setup.py": "raise SystemExit('this package cannot be built here')\n"})
    out = tmp_path / "out"
    report = make_tasks(
        MakeTasksConfig(source=str(repo), out=str(out)), EnvConfig(pool_size=1), progress=False
    )
    assert report["failure"].startswith("install failed") and "cannot be built here" in report["failure"]
    assert report["tasks"] == report["candidates"] == 0
    assert json.loads((out / "report.json").read_text())["failure"] == report["failure"]


@pytest.mark.docker
def test_a_suite_that_passes_nothing_at_the_clean_commit_is_the_reports_failure(tmp_path):
    failing = "def test_fails():\n    assert False\n"
    repo = variant(tmp_path, {"tests": None, "test_all.py": failing})
    out = tmp_path / "out"
    report = make_tasks(
        MakeTasksConfig(source=str(repo), out=str(out)), EnvConfig(pool_size=1), progress=False
    )
    assert report["failure"] == "reference: no test passes at the clean commit (1 reported)", report[
        "failure"
    ]
    assert report["tasks"] == 0 and (out / "profile.json").is_file()
