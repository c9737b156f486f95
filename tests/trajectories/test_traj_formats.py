"""Formats with no sample in ../shared/data: small fixtures written from the documented shapes
(formats.md §1-§6), read through the same detection and readers as real files."""

from __future__ import annotations

import json
from pathlib import Path

from trajectories.actions import render_action
from trajectories.record import Step, ToolCall, Trajectory, write_jsonl
from trajectories.sources import detect_format, read_source

PATCH = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"
TASK = "<pr_description>\nSetting a = 2 in x.py fixes the bug.\n</pr_description>"


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _only(path: Path, **options) -> Trajectory:
    result = read_source(path, **options)
    assert result.skipped == [], result.skipped
    (traj,) = result.items
    return traj


def _calls(traj: Trajectory) -> list[tuple[str, dict]]:
    return [(s.action.name, s.action.arguments) for s in traj.steps]


# ---------------------------------------------------------------------------------------------------
# mini-swe-agent (§6)


def test_mini_swe_agent_v1_bash_blocks(tmp_path):
    run = {
        "info": {
            "exit_status": "Submitted",
            "submission": PATCH,
            "mini_version": "1.17.5",
            "model_stats": {"instance_cost": 0.05, "api_calls": 4},
        },
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that can interact with a computer."},
            {"role": "user", "content": TASK},
            {"role": "assistant", "content": "THOUGHT: Let me look at the files.\n\n```bash\nls -la\n```"},
            {"role": "user", "content": "<returncode>0</returncode>\n<output>\nx.py\n</output>"},
            {"role": "assistant", "content": "THOUGHT: two at once\n```bash\nls\n```\n```bash\npwd\n```"},
            {
                "role": "user",
                "content": "Please always provide EXACTLY ONE action in triple backticks, found 2 actions.",
            },
            {
                "role": "assistant",
                "content": "THOUGHT: Fix it.\n\n```bash\nsed -i 's/a = 1/a = 2/' x.py\n```",
            },
            {"role": "user", "content": "<returncode>0</returncode>\n<output>\n</output>"},
            {
                "role": "assistant",
                "content": "THOUGHT: Done.\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A && git diff --cached\n```",
            },
            {"role": "user", "content": PATCH},
        ],
        "trajectory_format": "mini-swe-agent-1",
    }
    traj = _only(_write(tmp_path, "run.traj.json", run))
    assert traj.source_format == "minisweagent" and traj.task == TASK
    assert _calls(traj) == [
        ("bash", {"command": "ls -la"}),
        ("bash", {"command": "sed -i 's/a = 1/a = 2/' x.py"}),
        ("submit", {}),
    ]
    assert traj.steps[0].thought == "THOUGHT: Let me look at the files."
    assert traj.steps[0].observation == "<returncode>0</returncode>\n<output>\nx.py\n</output>"
    assert traj.steps[2].action.raw.startswith("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")
    assert traj.meta["format_error_turns"] == 1 and traj.meta["trajectory_format"] == "mini-swe-agent-1"
    assert traj.final_patch == PATCH and traj.exit_status == "Submitted"


def test_mini_swe_agent_old_marker_without_info(tmp_path):
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": TASK},
        {"role": "assistant", "content": "THOUGHT: patch\n```bash\nsed -i 's/1/2/' x.py\n```"},
        {"role": "user", "content": "<returncode>0</returncode>\n<output>\n</output>"},
        {"role": "assistant", "content": "```bash\necho MINI_SWE_AGENT_FINAL_OUTPUT && git diff\n```"},
        {"role": "user", "content": PATCH},
    ]
    traj = _only(_write(tmp_path, "messages.jsonl", [{"messages": messages, "instance_id": "x__y-1"}]))
    assert traj.source_format == "minisweagent" and traj.instance_id == "x__y-1"
    assert [s.action.name for s in traj.steps] == ["bash", "submit"]
    assert traj.final_patch == PATCH  # from the reply to the submit command


def test_mini_swe_agent_v2_tool_calls_and_text_mode(tmp_path):
    def call(i, command):
        return {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "bash", "arguments": json.dumps({"command": command})},
        }

    tool_mode = {
        "info": {"exit_status": "Submitted", "submission": PATCH, "mini_version": "2.4.1"},
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": TASK},
            {
                "role": "assistant",
                "content": "THOUGHT: look",
                "tool_calls": [call(1, "cat x.py")],
                "extra": {"actions": [{"command": "cat x.py"}], "cost": 0.01},
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": "<returncode>0</returncode>\n<output>\na = 1\n</output>",
                "extra": {"returncode": 0},
            },
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [call(2, "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git diff")],
            },
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": "<returncode>0</returncode>\n<output>\nCOMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n</output>",
            },
            {"role": "user", "content": "", "extra": {"exit_status": "Submitted", "submission": PATCH}},
        ],
        "trajectory_format": "mini-swe-agent-1.1",
    }
    traj = _only(_write(tmp_path, "v2.traj.json", tool_mode))
    assert traj.source_format == "minisweagent"
    assert _calls(traj) == [("bash", {"command": "cat x.py"}), ("submit", {})]
    assert traj.steps[0].action.id == "call_1" and traj.steps[0].observation.endswith("a = 1\n</output>")

    text_mode = dict(
        tool_mode,
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": TASK},
            {"role": "assistant", "content": "THOUGHT: look\n\n```mswea_bash_command\ncat x.py\n```"},
            {"role": "user", "content": "<returncode>0</returncode>\n<output>\na = 1\n</output>"},
        ],
    )
    traj = _only(_write(tmp_path, "v2text.traj.json", text_mode))
    assert _calls(traj) == [("bash", {"command": "cat x.py"})] and traj.steps[0].thought == "THOUGHT: look"


# ---------------------------------------------------------------------------------------------------
# OpenAI-style tool calls: OpenHands / SWE-Gym, nebius OpenHands (§3)


def _null_padded(message: dict) -> dict:
    """SWE-Gym's Parquet rows carry every message key, null where unused."""
    return {
        "content": None,
        "role": None,
        "name": None,
        "tool_call_id": None,
        "tool_calls": None,
        "function_call": None,
        **message,
    }


def _tc(call_id: str, name: str, arguments: dict) -> dict:
    return {
        "id": call_id,
        "type": "function",
        "index": None,
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


OPENHANDS_MESSAGES = [
    _null_padded({"role": "system", "content": "You are OpenHands agent, a helpful AI assistant."}),
    _null_padded(
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "<uploaded_files>\n/workspace/python__mypy__1.6\n</uploaded_files>\n",
                },
                {"type": "text", "text": "Fix the crash."},
            ],
        }
    ),
    _null_padded(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                _tc(
                    "call_A",
                    "str_replace_editor",
                    {
                        "command": "view",
                        "path": "/workspace/python__mypy__1.6",
                        "file_text": None,
                        "view_range": None,
                    },
                )
            ],
        }
    ),
    _null_padded(
        {
            "role": "tool",
            "name": "str_replace_editor",
            "tool_call_id": "call_A",
            "content": "OBSERVATION:\nHere's the files and directories up to 2 levels deep in /workspace/python__mypy__1.6",
        }
    ),
    _null_padded(
        {
            "role": "assistant",
            "content": "Run the tests and look at the checker at once.",
            "tool_calls": [
                _tc("call_B", "execute_bash", {"command": "cd /workspace && python -m pytest -q"}),
                _tc(
                    "call_C",
                    "str_replace_editor",
                    {"command": "view", "path": "/workspace/m.py", "view_range": "[1, 5]"},
                ),
            ],
        }
    ),
    _null_padded({"role": "tool", "tool_call_id": "call_C", "content": "OBSERVATION:\n1\timport os"}),
    _null_padded(
        {
            "role": "tool",
            "tool_call_id": "call_B",
            "content": "OBSERVATION:\n3 passed\nroot@openhands-workspace:/workspace # \n[Command finished with exit code 0]",
        }
    ),
    _null_padded({"role": "assistant", "content": "I think I am done."}),
    _null_padded(
        {
            "role": "user",
            "content": "Please continue working on the task on whatever approach you think is suitable.",
        }
    ),
    _null_padded({"role": "assistant", "content": "", "tool_calls": [_tc("call_D", "finish", {})]}),
]


def test_openhands_swe_gym_row(tmp_path):
    row = {
        "instance_id": "python__mypy-15976",
        "run_id": "gpt-4o-2024-08-06_maxiter_50_N_v2.1",
        "resolved": True,
        "messages": OPENHANDS_MESSAGES,
        "tools": [],
        "test_result": {"git_patch": PATCH, "report": {"resolved": True, "empty_generation": False}},
    }
    traj = _only(_write(tmp_path, "swegym.jsonl", [row]))
    assert traj.source_format == "openai_tool_messages"
    assert traj.task == "<uploaded_files>\n/workspace/python__mypy__1.6\n</uploaded_files>\nFix the crash."
    assert _calls(traj) == [
        ("str_replace_editor", {"command": "view", "path": "/workspace/python__mypy__1.6"}),
        ("bash", {"command": "cd /workspace && python -m pytest -q"}),
        ("str_replace_editor", {"command": "view", "path": "/workspace/m.py", "view_range": [1, 5]}),
        ("submit", {}),
    ]
    assert [s.action.original_name for s in traj.steps] == [
        "str_replace_editor",
        "execute_bash",
        "str_replace_editor",
        "finish",
    ]
    assert traj.steps[1].observation.startswith("3 passed")  # matched by tool_call_id, not by order
    assert traj.steps[2].observation == "1\timport os"
    assert traj.steps[1].thought == "Run the tests and look at the checker at once."
    assert traj.steps[3].observation is None
    assert traj.meta["format_error_turns"] == 1 and traj.resolved is True and traj.final_patch == PATCH


def test_nebius_openhands_row_and_messages_as_json_string(tmp_path):
    row = {
        "trajectory_id": "t-1",
        "instance_id": "o__r-7",
        "repo": "o/r",
        "trajectory": OPENHANDS_MESSAGES,
        "tools": [],
        "model_patch": PATCH,
        "exit_status": "submit",
        "resolved": 1,
    }
    traj = _only(_write(tmp_path, "nebius_oh.jsonl", [row]))
    assert (
        traj.source_format == "openai_tool_messages" and traj.resolved is True and traj.final_patch == PATCH
    )
    assert traj.meta["trajectory_id"] == "t-1" and len(traj.steps) == 4

    as_string = {"messages": json.dumps(OPENHANDS_MESSAGES), "instance_id": "o__r-7", "resolved": False}
    traj = _only(_write(tmp_path, "coderforge.jsonl", [as_string]))
    assert len(traj.steps) == 4 and traj.resolved is False


# ---------------------------------------------------------------------------------------------------
# nebius/SWE-agent-trajectories (§4)


def test_nebius_swe_agent_row(tmp_path):
    state = "\n(Open file: n/a)\n(Current directory: /repo)\nbash-$"
    row = {
        "instance_id": "o__r-12",
        "model_name": "swe-agent-llama-70b",
        "target": True,
        "exit_status": "submitted",
        "generated_patch": PATCH,
        "eval_logs": "...",
        "trajectory": [
            {
                "role": "system",
                "text": None,
                "system_prompt": "SETTING: You are an autonomous programmer.",
                "mask": False,
            },
            {
                "role": "user",
                "text": "We're currently solving the following issue within our repository.\nISSUE:\nfoo breaks"
                + state,
                "mask": False,
            },
            {"role": "ai", "text": 'Let\'s search.\n```\nsearch_dir "foo"\n```', "mask": True},
            {"role": "user", "text": 'Found 2 matches for "foo" in /repo' + state, "mask": False},
            {"role": "ai", "text": "Open it.\n```\nopen src/foo.py 20\n```", "mask": True},
            {"role": "user", "text": "[File: /repo/src/foo.py (40 lines total)]" + state, "mask": False},
            {"role": "ai", "text": "Fix.\n```\nedit 20:20\n    return x + 1\nend_of_edit\n```", "mask": True},
            {"role": "user", "text": "File updated." + state, "mask": False},
            {"role": "ai", "text": "Done.\n```\nsubmit\n```", "mask": True},
            {"role": "user", "text": PATCH, "mask": False},
        ],
    }
    traj = _only(_write(tmp_path, "nebius.jsonl", [row]))
    assert traj.source_format == "nebius_sweagent" and traj.resolved is True
    assert traj.system == "SETTING: You are an autonomous programmer."
    assert (
        traj.task == "We're currently solving the following issue within our repository.\nISSUE:\nfoo breaks"
    )
    assert _calls(traj) == [
        ("search_dir", {"search_term": "foo"}),
        ("open", {"path": "src/foo.py", "line_number": 20}),
        ("edit", {"start": 20, "end": 20, "replacement": "    return x + 1"}),
        ("submit", {}),
    ]
    assert traj.steps[0].observation == 'Found 2 matches for "foo" in /repo'
    assert traj.steps[1].thought == "Open it."


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


# ---------------------------------------------------------------------------------------------------
# the project's own JSONL


def test_trajectory_jsonl_round_trip(tmp_path):
    original = Trajectory(
        task="Fix x",
        instance_id="o__r-9",
        system="sys",
        final_patch=PATCH,
        resolved=True,
        exit_status="submitted",
        source_format="policy_rollout",
        meta={"seed": 3},
        steps=[
            Step("look", ToolCall("bash", {"command": "cat x.py"}, "execute_bash", "c1"), "a = 1"),
            Step(
                "edit",
                ToolCall(
                    "str_replace_editor",
                    {"command": "insert", "path": "/x.py", "insert_line": 2, "new_str": "b = 2\n"},
                ),
                "ok",
            ),
            Step("", ToolCall("submit", {}), None),
        ],
    )
    path = tmp_path / "rollouts.jsonl"
    write_jsonl([original, original], path)
    result = read_source(path)
    assert result.skipped == [] and result.formats == {"policy_rollout": 2}
    back = result.items[0]
    back.meta.pop("position")
    assert back == original
    assert detect_format(original.to_dict()) == "srl_jsonl"


def test_own_jsonl_with_an_unknown_tool_follows_unknown_tools(tmp_path):
    traj = Trajectory(
        task="t", steps=[Step("", ToolCall("bash", {"command": "ls"})), Step("", ToolCall("browse", {}))]
    )
    write_jsonl([traj], tmp_path / "own.jsonl")
    assert len(read_source(tmp_path / "own.jsonl").items) == 1
    strict = read_source(tmp_path / "own.jsonl", unknown_tools="skip")
    assert strict.items == [] and strict.skipped[0].reason == "steps[1]: unknown tool 'browse'"
