"""SWE-agent-family formats with no sample in ../shared/data: `.traj` generations (history-only demo
files, 1.0 per-step messages, no chat at all), SWE-smith `ticks` rows and R2E-Gym XML rows; fixtures
written from formats.md §1, §2.2 and §5."""

from __future__ import annotations

import json
from pathlib import Path

from trajectories.actions import render_action
from trajectories.record import Trajectory
from trajectories.sources import read_source

PATCH = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"
TASK = "<pr_description>\nSetting a = 2 in x.py fixes the bug.\n</pr_description>"


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _only(path: Path) -> Trajectory:
    result = read_source(path)
    assert result.skipped == [], result.skipped
    (traj,) = result.items
    return traj


def _calls(traj: Trajectory) -> list[tuple[str, dict]]:
    return [(s.action.name, s.action.arguments) for s in traj.steps]


def _tc(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


# ---------------------------------------------------------------------------------------------------
# SWE-agent .traj generations without samples here (§1)


def test_sweagent_history_only_with_demos_and_content_parts(tmp_path):
    """function_calling_simple.traj-style demo file: history only, content as parts, demos marked."""
    history = [
        {
            "role": "system",
            "content": "SETTING: you are an agent",
            "agent": "main",
            "message_type": "system_prompt",
        },
        {
            "role": "user",
            "content": "Here is a demonstration of how to correctly accomplish this task.\n...",
            "agent": "main",
            "is_demo": True,
        },
        {
            "role": "assistant",
            "content": "demo action",
            "agent": "main",
            "is_demo": True,
            "tool_calls": [_tc("demo", "bash", {"command": "echo demo"})],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "<uploaded_files>\n/testbed\n</uploaded_files>\nFix x.py"}],
            "agent": "main",
            "message_type": "observation",
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Let me view the file."}],
            "agent": "main",
            "message_type": "action",
            "thought": "Let me view the file.",
            "action": "str_replace_editor view /testbed/x.py",
            "tool_calls": [_tc("c1", "str_replace_editor", {"command": "view", "path": "/testbed/x.py"})],
        },
        {
            "role": "tool",
            "content": [{"type": "text", "text": "OBSERVATION:\n     1\ta = 1\r\n"}],
            "agent": "main",
            "message_type": "observation",
            "tool_call_ids": ["c1"],
        },
        {
            "role": "assistant",
            "content": "Submit.",
            "agent": "main",
            "message_type": "action",
            "action": "submit",
            "tool_calls": [_tc("c2", "submit", {})],
        },
        {
            "role": "tool",
            "content": PATCH,
            "agent": "main",
            "message_type": "observation",
            "tool_call_ids": ["c2"],
        },
    ]
    path = _write(tmp_path, "function_calling_simple.traj", {"history": history})
    traj = _only(path)
    assert traj.source_format == "sweagent_traj" and traj.instance_id == "function_calling_simple"
    assert traj.task == "<uploaded_files>\n/testbed\n</uploaded_files>\nFix x.py"
    assert _calls(traj) == [
        ("str_replace_editor", {"command": "view", "path": "/testbed/x.py"}),
        ("submit", {}),
    ]
    assert traj.steps[0].observation == "     1\ta = 1\n" and traj.steps[0].thought == "Let me view the file."
    assert "echo demo" not in json.dumps(traj.to_dict())


def test_sweagent_1_0_per_step_messages_without_history(tmp_path):
    """SWE-agent 1.0.x: no `history`, each step carries the `messages` so far; actions are rendered
    command lines (the xml_function_calling parser) that must become structured editor calls."""
    chat = [
        {"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Fix the rounding in x.py"}],
            "message_type": "observation",
        },
    ]
    steps = [
        {
            "thought": "Look first.",
            "action": "str_replace_editor view /testbed/x.py  --view_range 1 20",
            "observation": "OBSERVATION:\n     1\tx = round(y)",
            "response": "...",
        },
        {
            "thought": "Edit.",
            "action": "str_replace_editor str_replace /testbed/x.py   --old_str 'x = round(y)' --new_str 'x = int(round(y))\n# it'\"'\"'s fixed'",
            "observation": "The file /testbed/x.py has been edited.",
            "response": "...",
        },
        {
            "thought": "Insert.",
            "action": "str_replace_editor insert /testbed/x.py --insert_line 3 --new_str 'pass'",
            "observation": "ok",
            "response": "...",
        },
        {"thought": "Done.", "action": "submit", "observation": PATCH, "response": "..."},
    ]
    for i, s in enumerate(steps):
        s["messages"] = chat + [{"role": "assistant", "content": x["thought"]} for x in steps[: i + 1]]
    path = _write(
        tmp_path,
        "abc__def-1.traj",
        {
            "trajectory": steps,
            "info": {"submission": PATCH, "exit_status": "submitted"},
            "environment": "main",
        },
    )
    traj = _only(path)
    assert traj.task == "Fix the rounding in x.py" and traj.system == "You are a helpful assistant."
    assert traj.instance_id == "abc__def-1"
    assert _calls(traj) == [
        ("str_replace_editor", {"command": "view", "path": "/testbed/x.py", "view_range": [1, 20]}),
        (
            "str_replace_editor",
            {
                "command": "str_replace",
                "path": "/testbed/x.py",
                "old_str": "x = round(y)",
                "new_str": "x = int(round(y))\n# it's fixed",
            },
        ),
        (
            "str_replace_editor",
            {"command": "insert", "path": "/testbed/x.py", "insert_line": 3, "new_str": "pass"},
        ),
        ("submit", {}),
    ]
    assert render_action(traj.steps[1].action) == (
        "<function=str_replace_editor>\n<parameter=command>str_replace</parameter>\n<parameter=path>/testbed/x.py</parameter>\n"
        "<parameter=old_str>\nx = round(y)\n</parameter>\n<parameter=new_str>\nx = int(round(y))\n# it's fixed\n</parameter>\n</function>"
    )
    assert traj.steps[0].observation == "     1\tx = round(y)"


def test_sweagent_without_any_chat_takes_the_task_from_replay_config(tmp_path):
    record = {
        "trajectory": [{"action": "ls", "observation": "x.py", "thought": "t"}],
        "info": {},
        "replay_config": json.dumps({"problem_statement": {"text": "Fix x", "id": "o__r-3"}}),
    }
    traj = _only(_write(tmp_path, "r.traj", record))
    assert (
        traj.task == "Fix x"
        and traj.instance_id == "o__r-3"
        and _calls(traj) == [("bash", {"command": "ls"})]
    )


# ---------------------------------------------------------------------------------------------------
# SWE-smith ticks rows, R2E-Gym XML rows (§2.2, §5)


def test_swesmith_ticks_row(tmp_path):
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": TASK},
        {"role": "assistant", "content": "Look.\n\n```\nstr_replace_editor view /testbed/x.py\n```"},
        {"role": "user", "content": "OBSERVATION:\n     1\ta = 1"},
        {"role": "assistant", "content": "Run.\n\n```\npython -c 'import x'\n```"},
        {"role": "user", "content": "OBSERVATION:\n"},
        {"role": "assistant", "content": "Done.\n\n```\nsubmit\n```"},
    ]
    traj = _only(
        _write(tmp_path, "ticks.jsonl", [{"messages": messages, "instance_id": "o__r.1234abcd.pr_1"}])
    )
    assert traj.source_format == "swesmith_sft_ticks"
    assert _calls(traj) == [
        ("str_replace_editor", {"command": "view", "path": "/testbed/x.py"}),
        ("bash", {"command": "python -c 'import x'"}),
        ("submit", {}),
    ]


def test_r2egym_xml_row_maps_tool_names(tmp_path):
    messages = [
        {"role": "system", "content": "You have access to: file_editor, execute_bash, search, finish"},
        {
            "role": "user",
            "content": "Consider the following github issue:\n<github_issue>\nbug\n</github_issue>",
        },
        {
            "role": "assistant",
            "content": "Search.\n<function=search>\n<parameter=search_term>bug</parameter>\n<parameter=path>/testbed</parameter>\n</function>",
        },
        {"role": "user", "content": "Execution output of [search]:\nfound"},
        {
            "role": "assistant",
            "content": "Run.\n<function=execute_bash>\n<parameter=cmd>cd /testbed && pytest -q</parameter>\n</function>",
        },
        {"role": "user", "content": "Exit code: 0\nExecution output of [execute_bash]:\n1 passed"},
        {
            "role": "assistant",
            "content": "Edit.\n<function=file_editor>\n<parameter=command>view</parameter>\n<parameter=path>/testbed/a.py</parameter>\n<parameter=concise>True</parameter>\n</function>",
        },
        {"role": "user", "content": "Execution output of [file_editor]:\n..."},
        {
            "role": "assistant",
            "content": "<function=finish>\n<parameter=command>submit</parameter>\n<parameter=result>fixed</parameter>\n</function>",
        },
        {"role": "user", "content": "<<< Finished >>>"},
    ]
    traj = _only(_write(tmp_path, "r2e.jsonl", [{"messages": messages}]))
    assert traj.source_format == "r2egym_sft"
    assert _calls(traj) == [
        ("search", {"search_term": "bug", "path": "/testbed"}),
        ("bash", {"command": "cd /testbed && pytest -q"}),
        ("str_replace_editor", {"command": "view", "path": "/testbed/a.py", "concise": "True"}),
        ("submit", {}),
    ]
    assert [s.action.original_name for s in traj.steps] == ["search", "execute_bash", "file_editor", "finish"]
    assert "fixed" in traj.steps[3].action.raw  # what submit carried is kept, not dropped
