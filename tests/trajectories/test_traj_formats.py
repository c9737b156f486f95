"""Formats with no sample in ../shared/data: small fixtures written from the documented shapes
(formats.md §1-§6), read through the same detection and readers as real files."""

from __future__ import annotations

import json
from pathlib import Path

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
# A conversation stored as a bare list of messages (mini-swe-agent's own test data, chat exports)

BARE_CONVERSATION = [
    {
        "role": "system",
        "content": "You can run shell commands. Reply with a THOUGHT and exactly one ```bash block.\n"
        "To finish, run `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` on its own.",
    },
    {"role": "user", "content": "Please solve this issue: " + TASK},
    {"role": "assistant", "content": "THOUGHT: Let me see what x.py holds.\n\n```bash\ncat x.py\n```"},
    {"role": "user", "content": "<returncode>0</returncode>\n<output>\na = 1\n</output>"},
    {"role": "assistant", "content": "THOUGHT: Set it to 2.\n\n```bash\nsed -i 's/a = 1/a = 2/' x.py\n```"},
    {"role": "user", "content": "<returncode>0</returncode>\n<output>\n</output>"},
    {
        "role": "assistant",
        "content": "THOUGHT: Done.\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```",
    },
    {"role": "user", "content": ""},
]


def test_a_bare_list_of_messages_is_one_conversation(tmp_path):
    path = _write(tmp_path, "local.traj.json", BARE_CONVERSATION)
    traj = _only(path)
    assert traj.source_format == "minisweagent" and traj.meta["position"] == str(path)
    assert traj.task == "Please solve this issue: " + TASK and traj.system.startswith("You can run")
    assert _calls(traj) == [
        ("bash", {"command": "cat x.py"}),
        ("bash", {"command": "sed -i 's/a = 1/a = 2/' x.py"}),
        ("submit", {}),
    ]
    assert traj.steps[0].observation == "<returncode>0</returncode>\n<output>\na = 1\n</output>"
    # one JSON line holding such a list is one conversation too
    lines = _write(tmp_path, "chats.jsonl", [BARE_CONVERSATION, BARE_CONVERSATION])
    assert [len(t.steps) for t in read_source(lines).items] == [3, 3]


def test_a_bare_list_with_tool_calls_is_read_by_the_tool_call_reader(tmp_path):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "bash", "arguments": '{"command": "ls"}'},
    }
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": TASK},
        {"role": "assistant", "content": "THOUGHT: look", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x.py"},
    ]
    traj = _only(_write(tmp_path, "chat.json", messages))
    assert traj.source_format == "openai_tool_messages" and _calls(traj) == [("bash", {"command": "ls"})]
    assert traj.steps[0].observation == "x.py"


def test_a_list_mixing_messages_and_other_objects_is_not_a_conversation(tmp_path):
    mixed = [*BARE_CONVERSATION[:4], {"instance_id": "o__r-1", "note": "not a message"}]
    path = _write(tmp_path, "mixed.json", mixed)
    result = read_source(path)
    assert result.items == []
    assert [s.record for s in result.skipped] == [f"{path}[{i}]" for i in range(5)]
    assert result.skipped[0].reason == "unrecognized record (keys: content, role)"
    assert result.skipped[4].reason == "unrecognized record (keys: instance_id, note)"
    no_content = [{"role": "user", "content": TASK}, {"role": "assistant"}]  # every item needs both keys
    assert len(read_source(_write(tmp_path, "partial.json", no_content)).skipped) == 2
    assert read_source(_write(tmp_path, "empty.json", [])).skipped == []


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


def test_own_jsonl_without_steps_is_read_as_an_episode_that_ended_early(tmp_path):
    """An agent episode that never made a valid call is a record of what happened; a foreign record
    without actions is still skipped (test_traj_malformed)."""
    episode = Trajectory(task="fix it", steps=[], exit_status="format_errors", meta={"format_error_turns": 3})
    write_jsonl([episode, Trajectory(task=" ", steps=[])], tmp_path / "own.jsonl")
    result = read_source(tmp_path / "own.jsonl")
    assert [t.exit_status for t in result.items] == ["format_errors"] and result.items[0].steps == []
    assert [s.reason for s in result.skipped] == ["empty task text"]


def test_mini_coder_row_ending_in_an_xml_submit(tmp_path):
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": TASK},
        {"role": "assistant", "content": "THOUGHT: fix\n```bash\nsed -i 's/1/2/' x.py\n```"},
        {"role": "user", "content": "<returncode>0</returncode>\n<output>\n</output>"},
        {"role": "assistant", "content": "All done.\n<function=submit>\n</function>"},
    ]
    traj = _only(_write(tmp_path, "mini_coder.jsonl", [{"messages": messages}]))
    assert traj.source_format == "minisweagent"
    assert [s.action.name for s in traj.steps] == ["bash", "submit"] and traj.steps[1].thought == "All done."
