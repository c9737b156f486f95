"""`python -m srl_agent.evaluate --task swe --instances ...` end to end, on the bundled tasks in real
containers: expert replays resolve (fast grader; and the official harness on an instance file whose
other instance's image is missing), a submit without an edit is an empty patch, the tiny random model
gets a report of 0 resolved with its exit statuses, and a run cut short resumes without redoing what
it finished."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from environments.tasks.bundled import get_task
from srl_agent import evaluate
from trajectories.record import ToolCall, Trajectory, write_jsonl

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


def run_eval(*args: str) -> dict:
    """The report `evaluate --json` prints on stdout (nothing else goes there)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main(["--task", "swe", "--json", *args]) == 0
    return json.loads(out.getvalue())


def ledger_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_expert_replays_resolve_every_bundled_task_and_a_rerun_redoes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    args = ["--instances", "--model", "replay:environments/tasks", "--grader", "fast", "--workers", "2"]
    report = run_eval(*args, "--out", str(out))
    assert report["total"] == 3 and report["resolved"] == 3 and report["resolve_rate"] == 1.0
    assert set(report["instances"].values()) == {"resolved"}
    assert report["exit_statuses"] == {"submitted": 3} and report["episodes"]["count"] == 3
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["instance_id"] for p in predictions} == set(report["instances"])
    assert all(p["model_patch"].startswith("diff --git") and p["model_name_or_path"] for p in predictions)
    assert len(list((out / "trajectories").glob("*.jsonl"))) == 3
    assert "| 3 | 3 | 0 | 0 | 0 | 0 | 100.0% |" in (out / "report.md").read_text()

    # a kill after the first instance was graded: the ledger holds only its lines
    rows = ledger_rows(out)
    first = rows[0]["instance_id"]
    (out / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows if r["instance_id"] == first)
    )
    again = run_eval(*args, "--out", str(out))
    assert again["resolved"] == 3
    redone = [r["instance_id"] for r in ledger_rows(out) if r["phase"] == "episode"]
    assert first not in redone[1:] and len(redone) == 3  # its one episode, then the two redone
    # a rerun of a finished evaluation runs no episode at all
    before = len(ledger_rows(out))
    assert run_eval(*args, "--out", str(out))["resolved"] == 3
    assert len(ledger_rows(out)) == before


def test_a_submit_without_an_edit_is_an_empty_patch(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    task = get_task("srl-agent__paginate-1")
    look = _trajectory_of(task).steps[0]  # the expert's first look around, then straight to submit
    submit = look.model_copy(update={"action": ToolCall("submit"), "observation": None})
    lazy = Trajectory(task=task.problem_statement, steps=[look, submit], instance_id=task.instance_id)
    write_jsonl([lazy], tmp_path / "lazy.jsonl")
    report = run_eval(
        "--instances", "environments/tasks/paginate", "--model", f"replay:{tmp_path / 'lazy.jsonl'}",
        "--grader", "fast", "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert report["instances"] == {task.instance_id: "empty_patch"} and report["resolved"] == 0


def test_the_tiny_model_gets_a_report_of_zero_resolved_with_its_exit_statuses(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    report = run_eval(
        "--instances", "--model", "tiny-random", "--grader", "fast", "--out", str(tmp_path / "eval"),
        "generation.max_new_tokens=16", "agent.max_format_errors=2", "agent.max_steps=3",
    )  # fmt: skip
    assert report["total"] == 3 and report["resolved"] == 0 and report["infrastructure_error"] == 0
    assert sum(report["exit_statuses"].values()) == 3
    assert set(report["exit_statuses"]) <= {"format_errors", "step_limit", "submitted", "context_limit"}
    assert report["episodes"]["completion_tokens_mean"] > 0


def test_the_harness_grades_an_instance_file_and_a_missing_image_is_infrastructure(tmp_path, monkeypatch):
    """A SWE-bench instance file: one instance's image is absent (no registry here), the other is a
    bundled task's; the run goes on, the harness resolves the second, the first is no verdict."""
    monkeypatch.chdir(REPO)
    from environments.tasks.bundled import build_images

    task = get_task("srl-agent__intervals-1")
    build_images([task])  # its image, under the name its instance row gives
    present = task.instance()
    absent = {**present, "instance_id": "ghost__repo-1", "image": "srl-agent-test/no-such-image:latest"}
    rows = tmp_path / "instances.jsonl"
    rows.write_text(json.dumps(present) + "\n" + json.dumps(absent) + "\n")
    expert = _trajectory_of(task)
    write_jsonl(
        [expert, expert.model_copy(update={"instance_id": "ghost__repo-1"})], tmp_path / "expert.jsonl"
    )
    report = run_eval(
        "--instances", str(rows), "--model", f"replay:{tmp_path / 'expert.jsonl'}", "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert report["instances"] == {task.instance_id: "resolved", "ghost__repo-1": "infrastructure_error"}
    assert report["resolve_rate"] == 1.0 and report["resolve_rate_all"] == 0.5
    assert "srl-agent-test/no-such-image" in report["instance_details"]["ghost__repo-1"]["detail"]


def test_rows_the_source_cannot_evaluate_are_reported_with_their_reason(tmp_path, monkeypatch):
    """A classic 12-field SWE-bench row (no eval_script, log_parser, eval_type) is not graded by
    swebench 5.x: it is `not_evaluable`, named with the missing fields, and the run goes on."""
    monkeypatch.chdir(REPO)
    task = get_task("srl-agent__paginate-1")
    classic = {
        k: v for k, v in task.instance().items() if k not in ("eval_script", "log_parser", "eval_type")
    }
    classic["instance_id"] = "classic__row-1"
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([task.instance(), classic]))
    write_jsonl([_trajectory_of(task)], tmp_path / "expert.jsonl")
    report = run_eval(
        "--instances", str(rows), "--model", f"replay:{tmp_path / 'expert.jsonl'}", "--out", str(tmp_path / "e"),
    )  # fmt: skip
    assert report["instances"] == {task.instance_id: "resolved", "classic__row-1": "not_evaluable"}
    assert "eval_script" in report["instance_details"]["classic__row-1"]["detail"]
    assert report["resolve_rate"] == 1.0 and report["not_evaluable"] == 1


def _trajectory_of(task) -> Trajectory:
    from environments.replay import load_trajectory

    return load_trajectory(task.expert_trajectory)


def test_a_replay_without_the_instances_trajectory_is_a_bad_model_refused_before_any_episode(
    tmp_path, monkeypatch
):
    from trajectories.config import ConfigError

    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    paginate = get_task("srl-agent__paginate-1").expert_trajectory
    with pytest.raises(ConfigError, match="--model replay:.*holds no trajectory for srl-agent__intervals-1"):
        run_eval("--instances", "--model", f"replay:{paginate}", "--grader", "fast", "--out", str(out),
                 "swe.instance_ids=[srl-agent__intervals-1]")  # fmt: skip
    ledger = out / "results.jsonl"
    assert not ledger.exists() or "infrastructure_error" not in ledger.read_text()  # nothing to retry


def test_a_rerun_into_the_same_folder_with_another_model_or_scaffold_is_refused_naming_both(
    tmp_path, monkeypatch
):
    """Not "0 to run" with the earlier run's results reported under the new label."""
    from trajectories.config import ConfigError

    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    first = ["--instances", "--grader", "fast", "--out", str(out), "swe.instance_ids=[srl-agent__paginate-1]"]
    assert run_eval(*first, "--model", "replay:environments/tasks")["resolved"] == 1
    copy = tmp_path / "replays"
    copy.mkdir()
    (copy / "paginate.traj").write_bytes(get_task("srl-agent__paginate-1").expert_trajectory.read_bytes())
    with pytest.raises(
        ConfigError, match=r"model: 'replay:environments/tasks' there, 'replay:.*replays' now"
    ):
        run_eval(*first, "--model", f"replay:{copy}")
    with pytest.raises(ConfigError, match="scaffold: 'agent' there, 'oracle' now"):
        run_eval(*first, "--model", "replay:environments/tasks", "--scaffold", "oracle")
    assert run_eval(*first, "--model", "replay:environments/tasks")["resolved"] == 1  # the same run resumes


def test_a_folder_whose_run_stopped_before_any_result_takes_the_next_model(tmp_path, monkeypatch):
    """A first try with a model that does not load leaves no result: the corrected command must not be
    refused as "a run made with other settings"."""
    from trajectories.config import ConfigError

    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    first = ["--instances", "--grader", "fast", "--out", str(out), "swe.instance_ids=[srl-agent__paginate-1]"]
    with pytest.raises(ConfigError, match="model.name: no such model folder"):
        run_eval(*first, "--model", str(tmp_path / "no-such-model"))
    assert run_eval(*first, "--model", "replay:environments/tasks")["resolved"] == 1


def test_repeats_run_whole_evaluations_with_their_manifests(tmp_path, monkeypatch, capsys):
    """`--repeats 2`: two evaluations in `repeat-1/` and `repeat-2/` (seeds 0 and 1), the summary of
    their resolve rates, and each folder's manifest: the replayed files' hashes, the instance image's
    id as the engine reports it, the package versions."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    summary = run_eval("--instances", "environments/tasks/paginate", "--model", "replay:environments/tasks",
                       "--grader", "fast", "--repeats", "2", "--out", str(out))  # fmt: skip
    assert (
        summary["repeats"] == 2 and summary["resolve_rate_mean"] == 1.0 and summary["resolve_rate_std"] == 0.0
    )
    assert [run["seed"] for run in summary["runs"]] == [0, 1] and summary["always_resolved"] == 1
    assert json.loads((out / "repeats.json").read_text())["resolved_in_runs"] == summary["resolved_in_runs"]
    assert "| 2 | 1 | 1 | 1 | 1.000 |" in (out / "repeats.md").read_text()
    for seed, folder in enumerate(["repeat-1", "repeat-2"]):
        assert json.loads((out / folder / "report.json").read_text())["resolved"] == 1
        calls = json.loads((out / folder / "manifest.json").read_text())["calls"]
        assert len(calls) == 1 and calls[0]["run"]["seed"] == seed
        model = calls[0]["model"]
        assert model["kind"] == "replay" and any(name.endswith(".traj") for name in model["files"])
        (image,) = calls[0]["images"].values()
        assert image["id"].startswith("sha256:") and calls[0]["docker"]["version"]
        assert calls[0]["packages"]["docker"] and calls[0]["grading"]["grader"] == "fast"
    # a rerun resumes both runs and appends a call to each manifest
    assert run_eval("--instances", "environments/tasks/paginate", "--model", "replay:environments/tasks",
                    "--grader", "fast", "--repeats", "2", "--out", str(out))["resolve_rate_mean"] == 1.0  # fmt: skip
    assert len(json.loads((out / "repeat-2" / "manifest.json").read_text())["calls"]) == 2
