"""The records themselves: files written before the move to pydantic still load and re-encode to the
same bytes, other format versions are refused, and a wrong field is a RecordError naming its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trajectories.record import (
    FORMAT_VERSION,
    ContextItem,
    RecordError,
    Step,
    StepExample,
    ToolCall,
    Trajectory,
    read_step_examples,
    to_json_line,
)
from trajectories.sources import read_source

# Written by the dataclass version of trajectories/record.py (format version 1): one trajectory, then
# step examples (SWE, math with preamble/hint/answer, and one with every default).
FIXTURE = Path(__file__).parent / "fixtures" / "records_v1.jsonl"


def _lines() -> list[str]:
    return FIXTURE.read_text(encoding="utf-8").splitlines()


def _step_dict() -> dict:
    return {"thought": "", "action": {"name": "bash", "arguments": {"command": "ls"}}, "observation": None}


def _trajectory_dict(**changes) -> dict:
    data = {
        "format_version": 1,
        "record": "trajectory",
        "task": "t",
        "steps": [_step_dict() for _ in range(4)],
    }
    data.update(changes)
    return data


def test_a_file_written_before_reads_back_and_encodes_to_the_same_bytes():
    traj_line, *example_lines = _lines()
    traj = Trajectory.from_dict(json.loads(traj_line))
    assert to_json_line(traj) == traj_line
    assert traj.steps[0].action == ToolCall(name="bash", arguments={"command": "cat pages.py"},
                                            original_name="execute_bash", id="call_1")  # fmt: skip
    assert traj.steps[1].observation is None and traj.resolved is True
    assert traj.meta["nested"] == {"a": [1, None, 2.5], "b": False}
    examples = [StepExample.from_dict(json.loads(line)) for line in example_lines]
    assert [to_json_line(e) for e in examples] == example_lines
    assert examples[1].context[0] == ContextItem(action="Preamble.") and examples[1].hint == "Answer"
    assert examples[2].meta == {} and examples[2].omitted_steps == 0


def test_the_readers_take_the_old_file_too(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(_lines()[0] + "\n", encoding="utf-8")
    (traj,) = read_source(path).items
    assert traj.source_format == "policy_rollout" and len(traj.steps) == 3
    examples = tmp_path / "examples.jsonl"
    examples.write_text("\n".join(_lines()[1:]) + "\n", encoding="utf-8")
    assert [e.kind for e in read_step_examples(examples)] == ["swe", "math", "math"]


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_other_format_versions_are_refused(version):
    data = json.loads(_lines()[0]) | {"format_version": version}
    with pytest.raises(RecordError, match=rf"^format_version: expected {FORMAT_VERSION}, got {version!r}$"):
        Trajectory.from_dict(data)
    with pytest.raises(RecordError, match="^record: expected 'step_example', got 'trajectory'$"):
        StepExample.from_dict(json.loads(_lines()[0]))


def _bad_step(**action) -> dict:
    steps = [_step_dict() for _ in range(4)]
    steps[3]["action"] = {"name": "bash", "arguments": {}} | action
    return _trajectory_dict(steps=steps)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_bad_step(name=7), "steps[3].action.name: expected str, got int"),
        (_bad_step(id=["x"]), "steps[3].action.id: expected str, got list"),
        (_trajectory_dict(steps=[_step_dict(), "ls"]), "steps[1]: expected an object, got str"),
        (_trajectory_dict(task=None), "task: expected str, got NoneType"),
        ({"format_version": 1, "steps": []}, "task: missing"),
        (_trajectory_dict(resolved=1), "resolved: expected bool, got int"),
        (_trajectory_dict(steps={}), "steps: expected list, got dict"),
        (_trajectory_dict(meta=[]), "meta: expected dict, got list"),
    ],
)
def test_a_wrong_field_is_an_error_naming_its_path(data, message):
    with pytest.raises(RecordError) as error:
        Trajectory.from_dict(data)
    assert str(error.value) == message


def test_step_example_fields_are_strict():
    good = json.loads(_lines()[1])
    for change, message in [
        ({"kind": "code"}, "kind: expected 'swe' or 'math', got 'code'"),
        ({"step_index": True}, "step_index: expected int, got bool"),
        ({"num_steps": 3.0}, "num_steps: expected int, got float"),
        ({"context": [{"action": None}]}, "context[0].action: expected str, got NoneType"),
    ]:
        with pytest.raises(RecordError) as error:
            StepExample.from_dict(good | change)
        assert str(error.value) == message


def test_null_means_the_default_where_it_did_before():
    traj = Trajectory.from_dict(_trajectory_dict(source_format=None, meta=None, resolved=None))
    assert (traj.source_format, traj.meta, traj.resolved) == ("srl_jsonl", {}, None)
    example = StepExample.from_dict(json.loads(_lines()[3]) | {"omitted_steps": None, "meta": None})
    assert (example.omitted_steps, example.meta) == (0, {})


def test_files_are_validated_without_the_constructor():
    """Files may hold keys a newer writer added (ignored) but must hold `arguments`; code may omit it."""
    data = _trajectory_dict(added_later=1)
    data["steps"][0]["action"]["added_later"] = 2
    assert Trajectory.from_dict(data).steps[0].action.arguments == {"command": "ls"}
    del data["steps"][2]["action"]["arguments"]
    with pytest.raises(RecordError, match=r"^steps\[2\]\.action\.arguments: missing$"):
        Trajectory.from_dict(data)
    assert ToolCall("submit").arguments == {}


def test_constructors_take_positions_or_keywords_and_validate():
    call = ToolCall("bash", {"command": "ls"}, "execute_bash", "c1")
    assert call == ToolCall(name="bash", arguments={"command": "ls"}, original_name="execute_bash", id="c1")
    step = Step("look", call, "a.py")
    assert (step.thought, step.action, step.observation) == ("look", call, "a.py")
    example = StepExample("math", "g", 0, 1, "t", [ContextItem("a")], "x", answer="5")
    assert example.example_id == "g#0" and example.context[0].observation is None
    with pytest.raises(RecordError, match=r"^steps\[0\]\.action\.name: expected str, got int$"):
        Trajectory(task="t", steps=[{"thought": "", "action": {"name": 1, "arguments": {}}}])
    with pytest.raises(RecordError, match="^task: expected str, got bytes$"):
        Trajectory(task=b"t", steps=[])
    with pytest.raises(TypeError, match="unexpected keyword arguments: step"):
        Trajectory(task="t", step=[])
    with pytest.raises(TypeError, match="multiple values for 'name'"):
        ToolCall("bash", name="bash")
    with pytest.raises(TypeError, match="at most 5 positional"):
        ToolCall("bash", {}, None, None, None, "extra")


def test_records_can_change_after_construction():
    """Readers fill in fields they find later (`raw`, `final_patch`, `meta`); that stays possible."""
    traj = Trajectory(task="t", steps=[Step("", ToolCall("bash", {"command": "ls"}))])
    traj.steps[0].action.raw = "ls"
    traj.final_patch = "diff"
    traj.meta["position"] = "f:1"
    assert json.loads(to_json_line(traj))["steps"][0]["action"]["raw"] == "ls"
    assert traj.to_dict()["final_patch"] == "diff" and traj.to_dict()["meta"] == {"position": "f:1"}


def test_trusted_records_are_the_validated_ones():
    """`trusted` fills pydantic's instance slots itself (the build's hot path): it must still give
    exactly what validation gives, and pydantic must still have those four slots."""
    import copy
    import pickle

    from pydantic import BaseModel

    assert BaseModel.__slots__ == (
        "__dict__",
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    )
    item = ContextItem.trusted(action="<function=submit>\n</function>", observation=None)
    fields = json.loads(_lines()[1])
    del fields["format_version"], fields["record"]
    fields["context"] = [item]
    trusted, validated = StepExample.trusted(**fields), StepExample(**fields)
    assert trusted == validated and repr(trusted) == repr(validated)
    assert trusted.model_fields_set == validated.model_fields_set
    assert to_json_line(trusted) == to_json_line(validated)
    assert pickle.loads(pickle.dumps(trusted)) == validated == copy.deepcopy(trusted)
    trusted.group_id = "other"  # assignment works as on any record
    assert trusted.example_id == "other#1"
