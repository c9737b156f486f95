"""Replay: every bundled expert trajectory, executed in a fresh container, reproduces its recorded
submission and resolves its task through the official harness and the fast runner; partial and
foreign trajectories are handled and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from environments.config import GradingConfig
from environments.grading import grade_with_harness, harness_run_id
from environments.replay import (
    ReplayConfig,
    ReplayError,
    check_instance,
    execute_steps,
    load_trajectory,
    replay,
)
from environments.tasks.bundled import Task, build_images, get_task, load_tasks
from trajectories.record import Step, ToolCall, Trajectory


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    tasks = load_tasks()
    build_images(tasks)  # cached by the images' input labels: about a second when nothing changed
    return tasks


# -- reading, no Docker -------------------------------------------------------------------------------


def test_expert_trajectories_read_as_one_swe_trajectory_each():
    for task in load_tasks():
        trajectory = load_trajectory(task.expert_trajectory)
        assert trajectory.instance_id == task.instance_id
        tools = [s.action.name for s in trajectory.steps]
        assert tools[-1] == "submit" and "str_replace_editor" in tools
        commands = " ".join(s.action.arguments.get("command", "") for s in trajectory.steps)
        assert "find " in commands and "grep " in commands and "view" in commands and "pytest" in commands
        assert trajectory.final_patch and trajectory.exit_status == "submitted"


def test_bad_trajectory_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(ReplayError, match="nope.traj: no such trajectory file"):
        load_trajectory(tmp_path / "nope.traj")
    with pytest.raises(ReplayError, match="no such trajectory file"):
        load_trajectory("someone/not-a-file")  # never looked up as a Hub dataset
    broken = tmp_path / "broken.traj"
    broken.write_text('{"trajectory": [')
    with pytest.raises(ReplayError, match="broken.traj: expected one SWE trajectory, found 0 \\(skipped: "):
        load_trajectory(broken)
    two = tmp_path / "two.jsonl"
    record = Trajectory(task="t", steps=[Step("", ToolCall("submit"))]).to_dict()
    two.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ReplayError, match="found 2"):
        load_trajectory(two)


def test_trajectory_for_another_instance_is_refused():
    trajectory = load_trajectory(get_task("srl-agent__paginate-1").expert_trajectory)
    with pytest.raises(ReplayError, match="is for srl-agent__paginate-1, not srl-agent__intervals-1"):
        check_instance(trajectory, get_task("srl-agent__intervals-1"))


# -- real containers ----------------------------------------------------------------------------------


@pytest.mark.docker
def test_every_expert_replay_resolves_through_the_official_harness(tasks: list[Task], tmp_path: Path):
    from environments.container import DockerEnvironment
    from environments.grading import run_tests_in_env

    patches, fast = {}, {}
    for task in tasks:
        trajectory = load_trajectory(task.expert_trajectory)
        with DockerEnvironment(task.image) as env:
            result = execute_steps(env, trajectory.steps, task.instance_id)
            env.reset()
            fast[task.instance_id] = run_tests_in_env(env, task, result.patch)
        assert result.submitted and result.steps_replayed == len(trajectory.steps)
        assert not result.tool_errors
        assert result.patch == trajectory.final_patch  # the replay reproduces the recorded submission
        # pytest prints its run time, so a test-run observation may differ; the rest come back as recorded
        assert result.observations_matched >= result.observations_recorded - 2
        patches[task.instance_id] = result.patch
    official = grade_with_harness([t.instance() for t in tasks], patches, harness_run_id("expert-replays"),
                                  work_dir=tmp_path, max_workers=3)  # fmt: skip
    assert {iid: r.status for iid, r in official.items()} == dict.fromkeys(patches, "resolved")
    assert {iid: r.status for iid, r in fast.items()} == dict.fromkeys(patches, "resolved")


@pytest.mark.docker
def test_replay_with_the_fast_grader(tasks):
    task = get_task("srl-agent__intervals-1")
    result = replay(
        load_trajectory(task.expert_trajectory), task, ReplayConfig(), grading=GradingConfig(grader="fast")
    )
    assert result.resolved and result.grade.grader == "fast"
    payload = result.to_dict()
    assert {"instance_id", "steps_replayed", "patch", "resolved"} <= payload.keys()
    assert payload["steps_replayed"] == 10 and payload["resolved"] is True


@pytest.mark.docker
def test_partial_replay_does_not_resolve(tasks):
    task = get_task("srl-agent__paginate-1")
    result = replay(
        load_trajectory(task.expert_trajectory),
        task,
        ReplayConfig(max_steps=5),
        grading=GradingConfig(grader="fast"),
    )
    assert (result.steps_replayed, result.steps_total, result.submitted) == (5, 10, False)
    assert "reproduce.py" in result.patch  # no submit: the repository's diff is graded
    assert result.grade.status == "unresolved" and result.grade.fail_to_pass.failure


@pytest.mark.docker
def test_unknown_and_failing_actions_are_reported_and_replay_goes_on(tasks):
    task = get_task("srl-agent__configlite-1")
    expert = load_trajectory(task.expert_trajectory)
    foreign = [
        Step("0.7-style windowed command", ToolCall("open", {"path": "configlite/parser.py"})),
        Step("edit a missing file", ToolCall("str_replace_editor", {
            "command": "str_replace", "path": "/testbed/missing.py", "old_str": "a", "new_str": "b"})),
        Step("a failing command is fine", ToolCall("bash", {"command": "false"})),
    ]  # fmt: skip
    trajectory = Trajectory(task=expert.task, steps=foreign + expert.steps, instance_id=task.instance_id)
    result = replay(trajectory, task, ReplayConfig(), grading=GradingConfig(grader="fast"))
    assert [(e.step, e.tool) for e in result.tool_errors] == [(0, "open"), (1, "str_replace_editor")]
    assert "missing.py" in result.tool_errors[1].observation
    assert result.submitted and result.resolved
