"""Canonical tool names and the text forms of actions (pure functions, hand-written cases)."""

from __future__ import annotations

import pytest

from trajectories.errors import BadRecord
from trajectories.tools import canonical_call, parse_rendered_action, split_fenced_action, split_xml_command


@pytest.mark.parametrize(
    "action, name, arguments",
    [
        ("ls -F\n", "bash", {"command": "ls -F"}),
        ("python reproduce.py", "bash", {"command": "python reproduce.py"}),
        ("submit\n", "submit", {}),
        ("open setup.py", "open", {"path": "setup.py"}),
        ('open "src/a b.py" 12', "open", {"path": "src/a b.py", "line_number": 12}),
        ("goto 583", "goto", {"line_number": 583}),
        ("scroll_down", "scroll_down", {}),
        ("create reproduce.py", "create", {"filename": "reproduce.py"}),
        ('find_file "fields.py" src', "find_file", {"file_name": "fields.py", "dir": "src"}),
        ('search_dir "TimeDelta"', "search_dir", {"search_term": "TimeDelta"}),
        ("search_file round src/x.py", "search_file", {"search_term": "round", "file": "src/x.py"}),
        (
            "edit 3:4\n    x = 1\n    y = 2\nend_of_edit",
            "edit",
            {"start": 3, "end": 4, "replacement": "    x = 1\n    y = 2"},
        ),
        ("edit 'a = 1' 'a = 2'", "edit", {"search": "a = 1", "replace": "a = 2"}),
        ("insert 'import os'", "insert", {"text": "import os"}),
        ("insert 5\nimport os\nend_of_insert", "insert", {"line_number": 5, "text": "import os"}),
        (
            "str_replace_editor view /testbed/x.py",
            "str_replace_editor",
            {"command": "view", "path": "/testbed/x.py"},
        ),
        (
            "str_replace_editor view /t/x.py --view_range 5 9",
            "str_replace_editor",
            {"command": "view", "path": "/t/x.py", "view_range": [5, 9]},
        ),
        (
            "str_replace_editor view /t/x.py --view_range [5, -1]",
            "str_replace_editor",
            {"command": "view", "path": "/t/x.py", "view_range": [5, -1]},
        ),
        (
            "str_replace_editor create /t/n.py --file_text 'print(1)\n'",
            "str_replace_editor",
            {"command": "create", "path": "/t/n.py", "file_text": "print(1)\n"},
        ),
        (
            "str_replace_editor str_replace /t/x.py --old_str '--x' --new_str ''",
            "str_replace_editor",
            {"command": "str_replace", "path": "/t/x.py", "old_str": "--x", "new_str": ""},
        ),
    ],
)
def test_rendered_actions(action, name, arguments):
    call = parse_rendered_action(action)
    assert (call.name, call.arguments) == (name, arguments)
    assert call.raw == action


@pytest.mark.parametrize("action", ["goto", "goto abc", "open a b c", "edit 3:4\nno end marker", "create"])
def test_legacy_command_that_does_not_fit_runs_as_shell_text(action):
    call = parse_rendered_action(action)
    assert (call.name, call.arguments, call.original_name) == ("bash", {"command": action}, action.split()[0])


@pytest.mark.parametrize(
    "action, reason",
    [
        ("str_replace_editor view", "needs a command and a path"),
        ("str_replace_editor view /x --bogus 1", "unexpected '--bogus'"),
        (
            "str_replace_editor insert /x --insert_line two --new_str a",
            "bad value for str_replace_editor --insert_line",
        ),
        ("str_replace_editor str_replace /x --old_str 'open", "cannot split"),
        ("   \n", "empty action"),
    ],
)
def test_bad_editor_actions_are_bad_records(action, reason):
    with pytest.raises(BadRecord, match=reason):
        parse_rendered_action(action)


def test_canonical_names_and_arguments():
    bash = canonical_call("execute_bash", '{"cmd": "ls", "timeout": null}', call_id="c1")
    assert (bash.name, bash.arguments, bash.original_name, bash.id) == (
        "bash",
        {"command": "ls"},
        "execute_bash",
        "c1",
    )
    done = canonical_call("finish", {"message": "all done"})
    assert (done.name, done.arguments) == ("submit", {}) and "all done" in done.raw
    editor = canonical_call(
        "file_editor", {"command": "insert", "path": "/a", "insert_line": "4", "new_str": "x"}
    )
    assert editor.name == "str_replace_editor" and editor.arguments["insert_line"] == 4
    assert canonical_call("think", {"thought": "hm"}).name == "think"
    with pytest.raises(BadRecord, match="unknown tool 'think'"):
        canonical_call("think", {}, unknown_tools="skip")
    with pytest.raises(BadRecord, match=r"^arguments of 'bash': a string that is not valid JSON \("):
        canonical_call("bash", '{"command": ')
    with pytest.raises(BadRecord, match="^arguments of 'bash': expected a JSON object, got list$"):
        canonical_call("bash", "[1]")


def test_fenced_action_takes_the_last_top_level_block_and_keeps_nested_fences():
    text = "Look:\n```python\nprint(1)\n```\nNow edit.\n```\nedit 1:1\n```python\nx\n```\nend_of_edit\n```\n"
    thought, action = split_fenced_action(text)
    assert action == "edit 1:1\n```python\nx\n```\nend_of_edit"
    assert thought == "Look:\n```python\nprint(1)\n```\nNow edit."
    assert split_fenced_action("no block here") is None


def test_xml_command_split():
    assert split_xml_command("Run it.\n<command>\npython x.py\n</command>") == ("Run it.", "python x.py")
    assert split_xml_command("<command>unclosed") is None


def test_json_string_fields_share_one_decoder_and_one_message_style():
    from trajectories.swe_readers import load_messages

    assert load_messages({"messages": '[{"role": "user", "content": "x"}]'}, "messages")[0]["role"] == "user"
    assert canonical_call("bash", '{"command": "ls"}').arguments == {"command": "ls"}
    with pytest.raises(BadRecord, match=r"^messages: a string that is not valid JSON \("):
        load_messages({"messages": "[{"}, "messages")
    with pytest.raises(BadRecord, match=r"^arguments of 'bash': a string that is not valid JSON \("):
        canonical_call("bash", "{")
    with pytest.raises(BadRecord, match="^history: expected a list of messages, got dict$"):
        load_messages({"history": {}}, "history")
