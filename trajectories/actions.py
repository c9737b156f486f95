"""The one canonical text form of a SWE action: SWE-agent's XML function call.

    <function=bash>
    <parameter=command>find /testbed -name "*.py"</parameter>
    </function>

This is what the policy writes, what the similarity reward compares and what environments execute.
`render_action` and `parse_action` are exact inverses: `parse_action(render_action(c))` gives back the
same name and arguments for any call whose values can be written in this form, and
`render_action(parse_action(s)) == s` for any `s` that `render_action` produced.

Value encoding (follows SWE-agent / SWE-smith): a value is written between `<parameter=K>` and
`</parameter>`; multi-line editor payloads (`old_str`, `new_str`, `file_text`) and any value that starts
or ends with a newline are wrapped in one extra newline on each side, which the parser strips
(SWE-agent strips one leading and one trailing newline too). Non-string values are written as JSON and
read back as JSON for the keys that take them (`insert_line`, `view_range`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from trajectories.record import ToolCall
from trajectories.tools import missing_arguments

CALL_END = "</function>"  # closes every call (srl_agent.generation.hf also ends SWE rollouts at it)
_FUNCTION = re.compile(r"<function=([^>\n]+)>\n(.*?)</function>", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.DOTALL)
_WRAPPED_KEYS = frozenset({"old_str", "new_str", "file_text"})
_JSON_KEYS = frozenset({"insert_line", "view_range"})


class ActionParseError(ValueError):
    """The text is not exactly one well-formed function call; the message says what is wrong."""


def render_action(call: ToolCall) -> str:
    lines = [f"<function={call.name}>"]
    for key, value in call.arguments.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if "</parameter>" in text or CALL_END in text:
            raise ValueError(
                f"argument {key!r} of {call.name!r} contains a closing tag and cannot be rendered"
            )
        if key in _WRAPPED_KEYS or text.startswith("\n") or text.endswith("\n"):
            text = f"\n{text}\n"
        lines.append(f"<parameter={key}>{text}</parameter>")
    lines.append(CALL_END)
    return "\n".join(lines)


def parse_action(text: str) -> ToolCall:
    """Parse text that must hold exactly one function call and nothing else but surrounding whitespace."""
    matches = list(_FUNCTION.finditer(text))
    if not matches:
        raise ActionParseError("no <function=NAME> ... </function> block")
    if len(matches) > 1:
        raise ActionParseError(f"{len(matches)} function calls; exactly one is allowed")
    m = matches[0]
    if text[: m.start()].strip() or text[m.end() :].strip():
        raise ActionParseError("text outside the function call")
    name = m.group(1).strip()
    if not name:
        raise ActionParseError("empty function name")
    body = m.group(2)
    arguments: dict[str, Any] = {}
    pos = 0
    for p in _PARAMETER.finditer(body):
        if body[pos : p.start()].strip():
            raise ActionParseError(
                f"unexpected text in {name!r} call: {body[pos : p.start()].strip()[:40]!r}"
            )
        pos = p.end()
        key = p.group(1).strip()
        if key in arguments:
            raise ActionParseError(f"parameter {key!r} given twice")
        arguments[key] = _decode_value(key, p.group(2))
    if body[pos:].strip():
        raise ActionParseError(f"unexpected text in {name!r} call: {body[pos:].strip()[:40]!r}")
    return ToolCall(name=name, arguments=arguments, raw=text)


def parse_complete_action(text: str) -> ToolCall:
    """`parse_action`, then the call must carry every argument its tool requires
    (`tools.REQUIRED_ARGUMENTS`): what a policy's output must be to count as a tool call, as SWE-agent's
    parser refuses `<function=bash></function>` before running anything."""
    call = parse_action(text)
    if missing := missing_arguments(call):
        raise ActionParseError(f"{call.name!r} call without its required argument(s) {', '.join(missing)}")
    return call


def _decode_value(key: str, text: str) -> Any:
    text = text.removeprefix("\n").removesuffix("\n")
    if key in _JSON_KEYS:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ActionParseError(f"parameter {key!r} must be JSON, got {text[:40]!r}") from None
    return text
