"""Every public sample in ../shared/data reads with the expected steps, and inspect/build run on each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trajectories.actions import parse_action, render_action
from trajectories.math_steps import MathProblem
from trajectories.record import Trajectory, read_step_examples
from trajectories.sources import read_source

TRAJ_FILES = {
    "sweagent/backticks_v07__marshmallow-code__marshmallow-1867.traj": 14,
    "sweagent/xml_command__marshmallow-code__marshmallow-1867.traj": 11,
    "sweagent/fc_replace__marshmallow-code__marshmallow-1867.traj": 11,
}


def _one(shared_data: Path, rel: str) -> Trajectory:
    result = read_source(shared_data / rel)
    assert result.skipped == []
    (traj,) = result.items
    assert isinstance(traj, Trajectory)
    return traj


@pytest.mark.parametrize("rel, n", TRAJ_FILES.items())
def test_sweagent_traj_step_counts_and_patch(shared_data, rel, n):
    traj = _one(shared_data, rel)
    assert traj.source_format == "sweagent_traj"
    assert len(traj.steps) == n
    assert traj.steps[-1].action.name == "submit"
    assert "diff --git a/src/marshmallow/fields.py" in traj.final_patch
    assert traj.exit_status == "submitted"
    assert traj.task.startswith("We're currently solving the following issue")
    assert "TimeDelta serialization precision" in traj.task
    assert "(Current directory:" not in traj.task  # 0.x state suffix stripped
    for step in traj.steps:  # every action has a canonical text form that parses back to itself
        text = render_action(step.action)
        assert render_action(parse_action(text)) == text
        assert parse_action(text).name == step.action.name


def test_backticks_v07_concrete_actions(shared_data):
    steps = _one(shared_data, "sweagent/backticks_v07__marshmallow-code__marshmallow-1867.traj").steps
    assert (
        render_action(steps[0].action) == "<function=bash>\n<parameter=command>ls -F</parameter>\n</function>"
    )
    assert (steps[1].action.name, steps[1].action.arguments) == ("open", {"path": "setup.py"})
    assert steps[2].action.arguments == {"command": "pip install -e .[dev]"}
    assert steps[7].action.arguments == {"file_name": "fields.py", "dir": "src"}
    assert steps[8].action.arguments == {"path": "src/marshmallow/fields.py", "line_number": 1474}
    edit = steps[10].action
    assert (edit.name, edit.arguments["start"], edit.arguments["end"]) == ("edit", 1475, 1475)
    assert edit.arguments["replacement"] == (
        "        return int(round(value.total_seconds() / base_unit.total_seconds()))  # round to nearest int"
    )
    assert steps[5].observation == "344\n" and steps[11].observation == "345\n"
    assert steps[4].thought.startswith("Now let's paste in the example code")


def test_xml_command_concrete_actions(shared_data):
    traj = _one(shared_data, "sweagent/xml_command__marshmallow-code__marshmallow-1867.traj")
    assert traj.instance_id == "marshmallow-code__marshmallow-1867"
    assert traj.meta["base_commit"] == "bfd2593d4b416122e30cdefe0c72d322ef471611"
    steps = traj.steps
    assert (steps[0].action.name, steps[0].action.arguments) == ("create", {"filename": "reproduce.py"})
    assert steps[5].action.arguments == {"path": "src/marshmallow/fields.py", "line_number": 1474}
    assert steps[9].action.arguments == {"command": "rm reproduce.py"}


def test_function_calling_uses_the_structured_tool_calls(shared_data):
    traj = _one(shared_data, "sweagent/fc_replace__marshmallow-code__marshmallow-1867.traj")
    steps = traj.steps
    assert traj.meta["image"] == "swebench/sweb.eval.x86_64.marshmallow-code_1776_marshmallow-1867:latest"
    assert steps[1].action.name == "insert" and steps[1].action.id == "call_q3VsBszvsntfyPkxeHq4i5N1"
    assert steps[1].action.arguments["text"].startswith("from marshmallow.fields import TimeDelta\n")
    assert steps[6].action.arguments == {
        "search": "return int(value.total_seconds() / base_unit.total_seconds())",
        "replace": "# round to nearest int\nreturn int(round(value.total_seconds() / base_unit.total_seconds()))",
    }
    assert steps[4].action.arguments == {"file_name": "fields.py", "dir": "src"}
    assert steps[2].observation == "344"
    assert "\r" not in steps[4].observation


SWESMITH_STEPS = {
    "pandas-dev__pandas.95280573.pr_53652": 37,
    "getmoto__moto.694ce1f4.pr_7331": 44,
    "pydantic__pydantic.acb0f10f.pr_8316": 22,
}


def test_swesmith_sft_rows(shared_data):
    result = read_source(shared_data / "swesmith/ft_xml_example.jsonl")
    assert result.skipped == [] and result.formats == {"swesmith_sft_xml": 3}
    by_id = {t.instance_id: t for t in result.items}
    assert {k: len(v.steps) for k, v in by_id.items()} == SWESMITH_STEPS
    pandas = by_id["pandas-dev__pandas.95280573.pr_53652"].steps
    assert pandas[1].action.arguments == {
        "command": "view",
        "path": "/testbed/pandas/core/indexes/base.py",
        "view_range": [6035, 6050],
    }
    assert [i for i, s in enumerate(pandas) if s.action.name == "submit"] == [34, 36]
    assert pandas[0].observation.startswith("/testbed/scripts/pandas_errors_documented.py\n")  # prefix gone
    moto = by_id["getmoto__moto.694ce1f4.pr_7331"].steps
    assert moto[1].action.arguments == {"command": 'find /testbed -type f -name "*.py" | grep -i cognito'}
    assert moto[0].observation.startswith("/testbed/docs/conf.py\n")  # "Observation: " prefix gone
    pyd = by_id["pydantic__pydantic.acb0f10f.pr_8316"].steps
    assert pyd[2].action.arguments["command"] == "create"
    assert pyd[2].action.arguments["path"] == "/testbed/reproduce_error.py"
    assert pyd[2].action.arguments["file_text"].startswith("from pydantic.alias_generators import to_snake")
    assert pyd[3].action.arguments == {"command": "cd /testbed && python reproduce_error.py"}
    assert pyd[19].observation.startswith("Thank you for your work on this issue.")  # the review step
    # The canonical text of every step is exactly the block the expert wrote (103 of 103).
    assert all(render_action(s.action) == s.action.raw for t in result.items for s in t.steps)


def test_gsm8k_rows(shared_data):
    result = read_source(shared_data / "math/gsm8k_test.first300.jsonl")
    assert result.skipped == [] and len(result.items) == 300
    first = result.items[0]
    assert isinstance(first, MathProblem) and first.source_format == "gsm8k"
    assert first.steps == [
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.",
        "She makes 9 * 2 = $18 every day at the farmer’s market.",
    ]
    assert first.answer == "18"
    assert result.items[1].steps == [
        "It takes 2/2=1 bolt of white fiber",
        "So the total amount of fabric is 2+1=3 bolts of fabric",
    ]
    assert all("<<" not in s for p in result.items for s in p.steps)
    assert sum(len(p.steps) for p in result.items) == _gsm8k_line_count(shared_data)


def _gsm8k_line_count(shared_data: Path) -> int:
    n = 0
    for line in (shared_data / "math/gsm8k_test.first300.jsonl").read_text(encoding="utf-8").splitlines():
        body = json.loads(line)["answer"].rpartition("####")[0]
        n += sum(1 for x in body.split("\n") if x.strip())
    return n


def test_aime_rows_use_the_freeform_fallback(shared_data):
    result = read_source(shared_data / "math/aime24_test.jsonl")
    assert result.skipped == [] and len(result.items) == 30
    by_id = {p.problem_id: p for p in result.items}
    # Only the first of the AoPS solutions is cut into steps (each ends with a signature line).
    assert by_id["60"].answer == "204" and len(by_id["60"].steps) == 11
    assert by_id["60"].steps[0] == "$\\frac{9}{s} + t = 4$ in hours and $\\frac{9}{s+2} + t = 2.4$ in hours."
    assert by_id["60"].steps[-1] == "$\\frac{9}{3} + 0.4 = 3.4$ hours, or $\\framebox{204}$ minutes"
    assert by_id["60"].meta["later_solutions_dropped"] is True
    assert len(by_id["65"].steps) == 32 and "sepehr2010" not in "".join(by_id["60"].steps)
    assert (
        by_id["83"].answer == "045"
        and len(by_id["83"].steps) == 3
        and "later_solutions_dropped" not in by_id["83"].meta
    )
    assert all(p.step_format == "freeform" for p in result.items)


def test_amc_rows_without_solutions_are_listed(shared_data):
    result = read_source(shared_data / "math/amc23_test.jsonl")
    assert result.items == [] and len(result.skipped) == 40
    assert result.skipped[0].record.endswith("amc23_test.jsonl:1")
    assert "no solution text" in result.skipped[0].reason


def test_non_trajectory_files_are_listed_not_dropped(shared_data):
    result = read_source(shared_data / "swebench")
    assert result.items == [] and len(result.skipped) == 5
    assert (
        result.skipped[0].reason == "a SWE-bench/SWE-smith task instance (no agent steps), not a trajectory"
    )


# ---------------------------------------------------------------------------------------------------
# the command line on every sample


SAMPLES = [
    ("sweagent/backticks_v07__marshmallow-code__marshmallow-1867.traj", "swe", "sweagent_traj", 14),
    ("sweagent/xml_command__marshmallow-code__marshmallow-1867.traj", "swe", "sweagent_traj", 11),
    ("sweagent/fc_replace__marshmallow-code__marshmallow-1867.traj", "swe", "sweagent_traj", 11),
    ("swesmith/ft_xml_example.jsonl", "swe", "swesmith_sft_xml", 103),
    ("math/gsm8k_test.first300.jsonl", "math", "gsm8k", None),
    ("math/aime24_test.jsonl", "math", "math", None),
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trajectories", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("rel, task, fmt, steps", SAMPLES)
def test_inspect_and_build_on_each_sample(shared_data, tmp_path, rel, task, fmt, steps):
    proc = _cli("inspect", str(shared_data / rel), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert summary["format"] == fmt and summary["skipped"] == []
    if steps is not None:
        assert summary["steps"] == steps and sum(summary["tools"].values()) == steps
    out = tmp_path / "out"
    proc = _cli("build", str(shared_data / rel), "--task", task, "--out", str(out), "validation_groups=1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    train = list(read_step_examples(out / "train.jsonl"))
    val = list(read_step_examples(out / "validation.jsonl"))
    assert len(train) + len(val) == summary["steps"]
    assert report["examples"] == {"train": len(train), "validation": len(val)}
    assert report["kept_groups"]["validation"] == 1
    assert not {e.group_id for e in train} & {e.group_id for e in val}
    if task == "swe":
        for ex in train + val:
            parse_action(ex.target)  # every SWE target is one well-formed call


def test_inspect_on_a_mixed_folder_lists_what_it_cannot_read(shared_data):
    proc = _cli("inspect", str(shared_data), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kinds"] == {"swe": 6, "math": 330}
    assert summary["formats"] == {"sweagent_traj": 3, "swesmith_sft_xml": 3, "gsm8k": 300, "math": 30}
    reasons = {Path(s["record"].split(":")[0].split("[")[0]).name for s in summary["skipped"]}
    assert {"SOURCES.md", "amc23_test.jsonl", "swe-bench-lite-test.5instances.json"} <= reasons
