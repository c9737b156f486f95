"""`python -m environments`: run as a real subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from environments.tasks.bundled import get_task, load_tasks

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600):
    return subprocess.run(
        [sys.executable, "-m", "environments", *args], check=False,
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_dry_run_shows_the_resolved_config_with_overrides():
    out = cli("replay", "x.traj", "--dry-run", "grading.grader=fast", "environment.memory=4g")
    assert out.returncode == 0, out.stderr
    assert "grader: fast" in out.stdout and "memory: 4g" in out.stdout


def test_config_errors_name_the_key_and_exit_2(tmp_path: Path):
    out = cli("build", "grading.grader=slow")
    assert out.returncode == 2 and "grading.grader (from command line)" in out.stderr
    config = tmp_path / "env.yaml"
    config.write_text("environment:\n  memroy: 4g\n")
    out = cli("doctor", "--config", str(config))
    assert out.returncode == 2 and f"unknown config key environment.memroy (from {config})" in out.stderr
    out = cli("replay", "x.traj", "--jsn")
    assert out.returncode == 2 and "unrecognized arguments: --jsn" in out.stderr


def test_replay_bad_input_exits_2_with_the_reason(tmp_path: Path):
    out = cli("replay", str(tmp_path / "missing.traj"), "--instance", "srl-agent__paginate-1")
    assert out.returncode == 2 and "missing.traj" in out.stderr and out.stdout == ""
    traj = str(get_task("srl-agent__paginate-1").expert_trajectory)
    out = cli("replay", traj, "--instance", "srl-agent__nope-1")
    assert out.returncode == 2 and "no bundled task 'srl-agent__nope-1'" in out.stderr
    out = cli("replay", traj, "--instance", "srl-agent__intervals-1")
    assert out.returncode == 2 and "is for srl-agent__paginate-1, not srl-agent__intervals-1" in out.stderr


def test_doctor_without_an_engine_fails_with_the_fix():
    out = cli("doctor", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=120)
    assert out.returncode == 1
    assert "[FAIL] engine reachable" in out.stdout and "fix:" in out.stdout and "dockerd" in out.stdout


@pytest.mark.docker
def test_doctor_passes_here():
    from environments.images import ensure_base_image

    ensure_base_image()  # what `python -m environments build` does first; doctor checks it is there
    out = cli("doctor", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[FAIL]" not in out.stdout and out.stdout.count("[ok]") >= 4


@pytest.mark.docker
def test_build_is_idempotent_and_names_every_task_image():
    first = cli("build")
    assert first.returncode == 0, first.stderr
    second = cli("build")
    assert second.returncode == 0 and "built " not in second.stderr  # nothing rebuilt: all cached
    for task in load_tasks():
        assert f"{task.instance_id}: {task.image}" in second.stdout


@pytest.mark.docker
def test_replay_json_resolves_through_the_harness(tmp_path: Path):
    cli("build")
    task = get_task("srl-agent__intervals-1")
    out = cli("replay", str(task.expert_trajectory), "--instance", task.instance_id, "--json",
              f"replay.work_dir={tmp_path}", "grading.grader=harness")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads(out.stdout)  # exactly one JSON object: json.loads refuses anything more
    assert payload["instance_id"] == task.instance_id and payload["resolved"] is True
    assert payload["steps_replayed"] == 10 and payload["grader"] == "harness"
    assert payload["patch"].startswith("diff --git a/intervals/core.py")
    assert (tmp_path / "logs" / "run_evaluation").is_dir()  # the official harness wrote its logs there


@pytest.mark.docker
def test_the_official_swebench_cli_grades_the_gold_patches_offline(tmp_path: Path):
    dataset = tmp_path / "tasks.json"
    assert cli("build", "--dataset", str(dataset)).returncode == 0
    out = subprocess.run(
        [sys.executable, "-m", "swebench.harness.run_evaluation", "--dataset_name", str(dataset),
         "--predictions_path", "gold", "--run_id", "gold-cli", "--max_workers", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "gold.gold-cli.json").read_text())
    assert sorted(summary["resolved_ids"]) == sorted(t.instance_id for t in load_tasks())


def test_every_command_line_in_the_help_parses(capsys: pytest.CaptureFixture[str], monkeypatch):
    """The docstring's synopses (placeholders filled in) and the --help examples, with --dry-run."""
    from environments.__main__ import EXAMPLES, build_parser, main
    from environments.__main__ import __doc__ as usage

    monkeypatch.chdir(REPO)  # the examples name paths relative to the repository
    task = get_task("srl-agent__paginate-1")
    placeholders = {"TRAJ": str(task.expert_trajectory), "ID": task.instance_id, "PATH": "tasks.json",
                    "SOURCE": str(task.expert_trajectory), "TASKS": str(task.directory), "DIR": "runs/x",
                    "N": "2", "S": "3"}  # fmt: skip
    synopses = [line.split("#")[0] for line in usage.splitlines() if "python -m environments " in line]
    examples = [line.split("#")[0] for lines in EXAMPLES.values() for line in lines]
    assert len(synopses) == 5 and len(examples) >= 5
    for line in synopses + examples:
        words = line.replace("[", " ").replace("]", " ").split()
        assert words[:3] == ["python", "-m", "environments"], line
        assert main([*(placeholders.get(w, w) for w in words[3:]), "--dry-run"]) == 0, line
    assert "grader: fast" in capsys.readouterr().out
    assert "\nexamples:\n  python -m environments doctor\n" in build_parser().format_help()
