"""Bad input: malformed records are skipped and listed with position and reason, the rest loads;
a source that cannot be read at all is an error naming it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trajectories.errors import SourceError
from trajectories.sources import read_source

GOOD_ROW = {
    "instance_id": "o__r.1234abcd.pr_1",
    "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Fix the bug in /testbed/x.py"},
        {
            "role": "assistant",
            "content": "Look.\n\n<function=bash>\n<parameter=command>cat /testbed/x.py</parameter>\n</function>",
        },
        {"role": "user", "content": "OBSERVATION:\na = 1"},
        {"role": "assistant", "content": "Done.\n\n<function=submit>\n</function>"},
    ],
}


def _row(**changes):
    row = json.loads(json.dumps(GOOD_ROW))
    row.update(changes)
    return json.dumps(row)


def _messages_with(action: str) -> list:
    return GOOD_ROW["messages"][:2] + [{"role": "assistant", "content": action}]


@pytest.fixture
def messy_jsonl(tmp_path):
    lines = [
        _row(),  # 1 good
        _row()[:120],  # 2 truncated JSON
        "[1, 2, 3]",  # 3 not an object
        "",  # (blank lines are not records)
        _row(messages=7),  # 5 wrong type
        _row(messages=_messages_with("I am not sure what to do.")),  # 6 no actions
        _row(messages=[{"content": "no role"}]),  # 7 message without a role
        _row(
            messages=_messages_with("<function=browser>\n<parameter=url>x</parameter>\n</function>")
        ),  # 8 unknown tool
        _row(
            messages=_messages_with("<function=bash>\n<parameter=command>ls</parameter>\n</function>"),
            instance_id="o__r-2",
        ),  # 9 good
        _row(
            messages=[
                {
                    "role": "assistant",
                    "content": "<function=bash>\n<parameter=command>ls</parameter>\n</function>",
                }
            ]
        ),  # 10 no task
        json.dumps(
            {"question": "What is 1+1?", "answer": "It is 2."}
        ),  # 11 GSM8K-like without ####: unrecognized
    ]
    path = tmp_path / "messy.jsonl"
    data = "\n".join(lines).encode("utf-8") + b"\n" + b'{"messages": "caf\xe9"}\n'  # 12 bad bytes
    path.write_bytes(data)
    return path


def test_malformed_rows_are_listed_and_the_rest_loads(messy_jsonl):
    result = read_source(messy_jsonl)
    assert [t.instance_id for t in result.items] == [
        "o__r.1234abcd.pr_1",
        "o__r.1234abcd.pr_1",
        "o__r-2",
    ]  # lines 1, 8, 9
    skipped = {int(s.record.rsplit(":", 1)[1]): s.reason for s in result.skipped}
    assert all(s.record.startswith(str(messy_jsonl)) for s in result.skipped)
    assert set(skipped) == {2, 3, 5, 6, 7, 10, 11, 12}
    assert "not valid JSON" in skipped[2] and "truncated" in skipped[2]
    assert skipped[3] == "expected a JSON object, got list"
    assert skipped[5] == "messages: expected a list of messages, got int"
    assert "no recognizable actions" in skipped[6]
    assert "string 'role'" in skipped[7]
    assert "no user message holding the task" in skipped[10]
    assert "unrecognized record" in skipped[11]
    assert "not UTF-8" in skipped[12]


def test_unknown_tools_kept_by_default_skipped_on_request(messy_jsonl):
    kept = read_source(messy_jsonl)
    assert any(t.steps[0].action.name == "browser" for t in kept.items)
    strict = read_source(messy_jsonl, unknown_tools="skip")
    reasons = {s.record.rsplit(":", 1)[1]: s.reason for s in strict.skipped}
    assert reasons["8"] == "unknown tool 'browser'"
    assert len(strict.items) == 2


def test_a_broken_traj_file_in_a_folder_is_listed(tmp_path, shared_data):
    good = (shared_data / "sweagent/xml_command__marshmallow-code__marshmallow-1867.traj").read_text(
        encoding="utf-8"
    )
    (tmp_path / "a.traj").write_text(good[: len(good) // 2], encoding="utf-8")
    (tmp_path / "b.traj").write_text(good, encoding="utf-8")
    wrong = json.loads(good)
    wrong["trajectory"][3]["action"] = 42
    (tmp_path / "c.traj").write_text(json.dumps(wrong), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    result = read_source(tmp_path)
    assert [len(t.steps) for t in result.items] == [11]
    reasons = {s.record.rsplit("/", 1)[1]: s.reason for s in result.skipped}
    assert "not valid JSON" in reasons["a.traj"]
    assert reasons["c.traj"] == "trajectory[3].action: expected a string"
    assert reasons["notes.txt"].startswith("not a data file")


def test_bad_editor_action_names_the_step(tmp_path):
    record = {
        "trajectory": [
            {"action": "ls", "observation": "", "thought": ""},
            {"action": "str_replace_editor str_replace /x.py --old_str 'unclosed", "observation": ""},
        ],
        "history": [{"role": "user", "content": "Fix x", "message_type": "observation"}],
        "info": {},
    }
    (tmp_path / "bad.traj").write_text(json.dumps(record), encoding="utf-8")
    result = read_source(tmp_path / "bad.traj")
    assert result.items == []
    assert result.skipped[0].reason.startswith("trajectory[1]: cannot split str_replace_editor action")


def test_a_field_the_record_cannot_hold_skips_the_record(tmp_path):
    """A value a reader passes on unchecked (here a numeric tool-call id) fails the record's validation:
    the row is listed as skipped with the field, instead of becoming a trajectory no file can hold."""
    call = {"id": 7, "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}
    row = {
        "messages": [
            {"role": "user", "content": "Fix x"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": 7, "content": "x.py"},
        ]
    }
    (tmp_path / "ids.jsonl").write_text(json.dumps(row) + "\n" + _row() + "\n", encoding="utf-8")
    result = read_source(tmp_path / "ids.jsonl")
    assert len(result.items) == 1
    assert result.skipped[0].record.endswith("ids.jsonl:1")
    assert result.skipped[0].reason == "malformed openai_tool_messages record: id: expected str, got int"


def test_unreadable_sources_are_errors_naming_them(tmp_path):
    with pytest.raises(SourceError, match="missing.jsonl: no such file"):
        read_source(tmp_path / "missing.jsonl")
    with pytest.raises(SourceError, match=r"nothing-\*.jsonl: the pattern matches no file"):
        read_source(str(tmp_path / "nothing-*.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty: folder holds no files"):
        read_source(tmp_path / "empty")
    with pytest.raises(SourceError, match="runs/x.traj: no such file"):  # not taken for a dataset id
        read_source("runs/x.traj")
    with pytest.raises(SourceError, match="cannot read dataset"):
        read_source(f"hf:{tmp_path / 'no-dataset-here'}")


def test_cli_reports_unreadable_source_and_bad_config(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "trajectories", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    proc = cli("inspect", str(tmp_path / "nope.jsonl"), "--json")
    assert proc.returncode == 2 and "nope.jsonl: no such file" in proc.stderr and proc.stdout == ""
    proc = cli("build", str(tmp_path), "--task", "swe", "--out", str(tmp_path / "o"), "context_stepz=3")
    assert proc.returncode == 2 and "unknown config key context_stepz" in proc.stderr
    proc = cli(
        "build", str(tmp_path), "--task", "swe", "--out", str(tmp_path / "o"), "observation_max_chars=10"
    )
    assert proc.returncode == 2 and "observation_max_chars" in proc.stderr
