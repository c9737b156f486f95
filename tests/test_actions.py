"""The canonical XML action form: exact round trips and strict parsing of policy output."""

from __future__ import annotations

import pytest

from trajectories.actions import ActionParseError, parse_action, render_action
from trajectories.record import ToolCall

CALLS = [
    ToolCall("bash", {"command": 'find /testbed -name "*.py"'}),
    ToolCall("submit", {}),
    ToolCall(
        "str_replace_editor",
        {"command": "str_replace", "path": "/testbed/a.py", "old_str": "x = 1\n", "new_str": "\nx = 2"},
    ),
    ToolCall("str_replace_editor", {"command": "create", "path": "/t/e.py", "file_text": ""}),
    ToolCall("str_replace_editor", {"command": "view", "path": "/t/a.py", "view_range": [1, 20]}),
    ToolCall(
        "str_replace_editor", {"command": "insert", "path": "/t/a.py", "insert_line": 4, "new_str": "y"}
    ),
    ToolCall("bash", {"command": "\nleading and trailing newlines\n"}),
    ToolCall("bash", {"command": "printf 'a<b>c'\n"}),
]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c.name}-{sorted(c.arguments)}")
def test_render_then_parse_is_identity(call):
    text = render_action(call)
    parsed = parse_action(text)
    assert (parsed.name, parsed.arguments) == (call.name, call.arguments)
    assert list(parsed.arguments) == list(call.arguments)  # parameter order is kept
    assert render_action(parsed) == text


def test_rendered_form_matches_swe_agent():
    text = render_action(ToolCall("bash", {"command": "ls"}))
    assert text == "<function=bash>\n<parameter=command>ls</parameter>\n</function>"
    edit = render_action(
        ToolCall("str_replace_editor", {"command": "create", "path": "/p", "file_text": "a"})
    )
    assert "<parameter=file_text>\na\n</parameter>" in edit


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ls -la", "no <function"),
        ("<function=bash>\n<parameter=command>ls</parameter>\n", "no <function"),
        ("sure! <function=bash>\n<parameter=command>ls</parameter>\n</function>", "outside"),
        ("<function=bash>\n</function>\n<function=submit>\n</function>", "2 function calls"),
        (
            "<function=bash>\n<parameter=command>a</parameter>\n<parameter=command>b</parameter>\n</function>",
            "twice",
        ),
        ("<function=bash>\nstray <parameter=command>a</parameter>\n</function>", "unexpected text"),
        ("<function=x>\n<parameter=insert_line>four</parameter>\n</function>", "must be JSON"),
    ],
)
def test_parse_rejects_broken_output(text, reason):
    with pytest.raises(ActionParseError, match=reason):
        parse_action(text)


def test_unrenderable_value_is_refused():
    with pytest.raises(ValueError, match="closing tag"):
        render_action(ToolCall("bash", {"command": "echo </parameter>"}))
