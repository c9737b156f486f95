"""Step examples in (`srl_agent.data`): what a `data.source` mistake prints, and why a split is empty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srl_agent import train
from srl_agent.config import DataConfig
from srl_agent.data import load_splits
from trajectories.build import BuildConfig
from trajectories.config import run_cli
from trajectories.record import Step, ToolCall, Trajectory, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def run_train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last line `python -m srl_agent.train ARGV` prints on stderr; it must exit with status 2."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    return err.splitlines()[-1]


def test_a_missing_data_source_names_the_key_and_the_path(tmp_path, capsys):
    missing = tmp_path / "missing.traj"
    last = run_train(["--task", "swe", f"data.source={missing}", f"run_dir={tmp_path / 'run'}"], capsys)
    assert (
        last
        == f"error: data.source: {missing}: no such file or folder (and not a dataset id like owner/name)"
    )


def test_a_source_whose_only_trajectory_went_to_validation_says_so(tmp_path, capsys):
    one = tmp_path / "one.jsonl"
    steps = [Step("look", ToolCall("bash", {"command": "ls"})), Step("done", ToolCall("submit"))]
    write_jsonl([Trajectory(task="fix the bug", steps=steps, instance_id="a__b-1")], one)
    argv = ["--task", "swe", "--config", str(REPO / "configs" / "swe_demo.yaml"), f"data.source={one}"]
    last = run_train([*argv, f"run_dir={tmp_path / 'run'}"], capsys)
    assert last == (
        f"error: data.source: {one} gave no training step examples: all 1 of its trajectories/problems "
        "went to validation (data.build.validation_groups=1); set data.build.validation_groups to fewer "
        "than 1 (0: no validation), or add data"
    )
    # what the message says to set works
    splits = load_splits("swe", str(one), DataConfig(build=BuildConfig(validation_groups=0)), tmp_path / "b")
    assert [ex.step_index for ex in splits.train] == [0, 1] and splits.val == []


def test_the_step_reward_evaluation_of_the_validation_split_needs_no_training_examples(tmp_path, capsys):
    """`evaluate --task swe` on a source the split holds out whole (the shared sample under the default
    validation_groups) evaluated nothing: the loader insisted on training examples it does not use."""
    from srl_agent import evaluate

    one = tmp_path / "one.jsonl"
    steps = [Step("look", ToolCall("bash", {"command": "ls"})), Step("done", ToolCall("submit"))]
    write_jsonl([Trajectory(task="fix the bug", steps=steps, instance_id="a__b-1")], one)
    argv = [
        "--task",
        "swe",
        "--checkpoint",
        "tiny-random",
        f"data.source={one}",
        "generation.max_new_tokens=4",
    ]
    assert evaluate.main([*argv, "data.build.validation_groups=1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["examples"] == 2 and report["split"] == "val"


def test_repeat_tools_repeats_the_training_steps_that_call_those_tools(tmp_path, capsys):
    """`data.repeat_tools` (the edit steps seen more often): each training step calling a named tool
    appears that many times, the others once, validation untouched; a count under 1 names the key."""
    steps = [
        Step("look", ToolCall("bash", {"command": "ls"})),
        Step("fix", ToolCall("str_replace_editor", {"command": "str_replace", "path": "/a.py"})),
        Step("done", ToolCall("submit")),
    ]
    two = tmp_path / "two.jsonl"
    write_jsonl([Trajectory(task=f"fix bug {i}", steps=steps, instance_id=f"a__b-{i}") for i in (1, 2)], two)
    build = BuildConfig(validation_groups=1)
    plain = load_splits("swe", str(two), DataConfig(build=build), tmp_path / "plain")
    cfg = DataConfig(build=build, repeat_tools={"str_replace_editor": 3})
    repeated = load_splits("swe", str(two), cfg, tmp_path / "repeated")
    assert [ex.step_index for ex in plain.train] == [0, 1, 2]
    assert [ex.step_index for ex in repeated.train] == [0, 1, 1, 1, 2]
    assert [ex.example_id for ex in repeated.val] == [ex.example_id for ex in plain.val]
    argv = ["--task", "swe", "--config", str(REPO / "configs" / "swe_demo.yaml"), f"data.source={two}"]
    last = run_train([*argv, "data.repeat_tools={bash: 0}", f"run_dir={tmp_path / 'run'}"], capsys)
    assert (
        last == "  bad value for data.repeat_tools.bash: Input should be greater than or equal to 1 (got 0)"
    )
