"""`check-experts`: the bundled experts are all kept (fast grader), a broken copy is dropped with the
step that failed, a trajectory of an unknown instance is `no_task`, and a rerun replays nothing.

One environment pool serves every check of the module; the bundled check runs once (a module fixture)
and its output folder is what the rerun resumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from environments.expert_check import ExpertCheckConfig, check_experts
from environments.replay import ReplayConfig, load_trajectory
from environments.tasks.bundled import TASKS_DIR, build_images, get_task, load_tasks
from trajectories.record import Trajectory, write_jsonl
from trajectories.sources import read_source

REPO = Path(__file__).resolve().parents[2]
EXPERTS = str(TASKS_DIR / "*" / "expert.traj")
EDITOR = "str_replace_editor"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "environments", "check-experts", *args], check=False,
        cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    from environments.pool import EnvironmentPool

    build_images(load_tasks())  # cached by the images' input labels: about a second when nothing changed
    with EnvironmentPool(size=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def bundled_check(pool: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bundled-check")
    report = check_experts(EXPERTS, ExpertCheckConfig(out=str(out)), ReplayConfig(), pool=pool)
    return out, report


def test_bad_source_exits_2_and_options_set_the_config(tmp_path: Path):
    missing = cli(str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "missing.jsonl: no such file" in missing.stderr and not missing.stdout
    dry = cli(EXPERTS, "--out", "runs/x", "--workers", "3", "--tasks", "runs/tasks.json", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert all(
        f"{line}\n" in dry.stdout for line in ("out: runs/x", "pool_size: 3", "tasks: runs/tasks.json")
    )


@pytest.mark.docker
def test_bundled_experts_are_all_kept_and_read_back_as_training_data(bundled_check, tmp_path: Path):
    from trajectories.build import BuildConfig, build

    out, report = bundled_check
    assert (report["kept"], report["total"], report["dropped"]) == (3, 3, {})
    assert report["this_run"]["replayed"] == 3 and json.loads((out / "report.json").read_text()) == report
    experts = {t.instance_id: load_trajectory(t.expert_trajectory) for t in load_tasks()}
    kept = read_source(out / "kept.jsonl")
    assert not kept.skipped and len(kept.items) == 3
    for trajectory in kept.items:
        assert isinstance(trajectory, Trajectory) and trajectory.resolved is True
        expert = experts[trajectory.instance_id]
        assert trajectory.steps == expert.steps and trajectory.final_patch == expert.final_patch
        assert trajectory.meta["expert_check"] == {"source": expert.meta["position"], "grader": "fast"}
    built = build(out / "kept.jsonl", "swe", tmp_path, BuildConfig(only_resolved=True, validation_fraction=0))
    assert not built.skipped and built.examples["train"] == sum(len(t.steps) for t in experts.values())


@pytest.mark.docker
def test_broken_and_foreign_trajectories_are_dropped_with_their_reason(pool: Any, tmp_path: Path):
    expert = load_trajectory(get_task("srl-agent__paginate-1").expert_trajectory)
    edit = next(i for i, s in enumerate(expert.steps) if s.action.arguments.get("command") == "str_replace")
    broken = expert.model_copy(deep=True)
    broken.steps[edit].action.arguments["old_str"] = "text the file never held"
    no_edit = expert.model_copy(update={"steps": expert.steps[:edit] + expert.steps[edit + 1 :]})
    foreign = expert.model_copy(update={"instance_id": "nobody__nothing-1"})
    source = tmp_path / "experts.jsonl"  # two trajectories of one instance: each keeps its own verdict
    write_jsonl([broken, no_edit, foreign], source)
    with source.open("a") as f:
        f.write('{"trajectory": [\n')

    report = check_experts(source, ExpertCheckConfig(out=str(tmp_path / "out")), pool=pool)

    assert report["kept"] == 0 and report["this_run"]["replayed"] == 2
    dropped = report["dropped"]
    assert set(dropped) == {"tool_error", "not_resolved", "no_task", "unreadable"}
    [tool_error] = dropped["tool_error"]
    assert (tool_error["key"], tool_error["step"], tool_error["tool"]) == (f"{source}:1", edit, EDITOR)
    assert tool_error["detail"].startswith(f"tool error at step {edit} ({EDITOR}): ")
    [not_resolved] = dropped["not_resolved"]
    assert not_resolved["key"] == f"{source}:2" and not_resolved["status"] == "empty_patch"
    assert not_resolved["instance_id"] == tool_error["instance_id"] == "srl-agent__paginate-1"
    [no_task] = dropped["no_task"]
    assert no_task["instance_id"] == "nobody__nothing-1" and "no task nobody__nothing-1" in no_task["detail"]
    [unreadable] = dropped["unreadable"]
    assert unreadable["key"] == f"{source}:4" and "not valid JSON" in unreadable["detail"]
    assert (tmp_path / "out" / "kept.jsonl").read_text() == ""


@pytest.mark.docker
def test_a_rerun_replays_nothing_and_writes_the_same_kept_file(bundled_check):
    out, _ = bundled_check
    ledger, kept = (out / "results.jsonl").read_text(), (out / "kept.jsonl").read_bytes()
    (out / "kept.jsonl").unlink()  # rewritten from the ledger and the source

    rerun = cli(EXPERTS, "--out", str(out), "--json")

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(rerun.stdout)
    assert report["kept"] == 3
    assert report["this_run"] == {"replayed": 0, "harness_graded": 0, "from_ledger": 3}
    assert (out / "results.jsonl").read_text() == ledger and (out / "kept.jsonl").read_bytes() == kept
