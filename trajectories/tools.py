"""Canonical tool vocabulary, and parsing of the text forms actions take in the wild.

Every reader turns a source's action into a `ToolCall` through `canonical_call` (structured calls:
OpenAI `tool_calls`, XML function calls) or `parse_rendered_action` (SWE-agent's rendered command
lines such as `str_replace_editor view /testbed/x.py` or 0.7's `edit 3:4\\n...\\nend_of_edit`).

Canonical names (formats.md §0): `bash {command}`, `str_replace_editor {command, path, file_text?,
old_str?, new_str?, insert_line?, view_range?}`, `submit {}`, `search {search_term, path?}`. Aliases
are renamed (`execute_bash` -> `bash`, with R2E-Gym's `cmd` -> `command`; `finish` -> `submit`;
`file_editor` -> `str_replace_editor`) and the source's name is kept in `ToolCall.original_name`.
SWE-agent's legacy windowed commands (`open`, `goto`, `scroll_up`, `scroll_down`, `create`, `edit`,
`insert`, `find_file`, `search_dir`, `search_file`) keep their names. Any other name is "unknown": the
caller decides whether to keep it as-is or skip the record (`unknown_tools`).

`submit` is canonically argument-free: what a source attached to it (R2E's `command: submit`, a final
message) stays in `raw`, because the environment computes the patch itself.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any, Literal

from trajectories.errors import BadRecord
from trajectories.record import ToolCall

UnknownTools = Literal["keep", "skip"]

CANONICAL_TOOLS = frozenset({"bash", "str_replace_editor", "submit", "search"})
LEGACY_TOOLS = frozenset(
    {
        "open",
        "goto",
        "scroll_up",
        "scroll_down",
        "create",
        "edit",
        "insert",
        "find_file",
        "search_dir",
        "search_file",
    }
)
ALIASES = {"execute_bash": "bash", "finish": "submit", "file_editor": "str_replace_editor"}
# The arguments a canonical tool cannot be called without, as SWE-agent's tool configs declare them;
# its parsers refuse a call that lacks one ("Required argument(s) missing") before anything runs.
REQUIRED_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "bash": ("command",),
    "str_replace_editor": ("command", "path"),
    "search": ("search_term",),
    "submit": (),
}
KNOWN_TOOLS = CANONICAL_TOOLS | LEGACY_TOOLS | frozenset(ALIASES)

_EDITOR_FLAGS = frozenset({"file_text", "old_str", "new_str", "insert_line", "view_range", "concise"})


def missing_arguments(call: ToolCall) -> list[str]:
    """The required arguments of a canonical tool that `call` leaves out (none for other tools)."""
    return [key for key in REQUIRED_ARGUMENTS.get(call.name, ()) if key not in call.arguments]


def canonical_call(
    name: str,
    arguments: dict[str, Any] | str | None,
    *,
    call_id: str | None = None,
    raw: str | None = None,
    unknown_tools: UnknownTools = "keep",
) -> ToolCall:
    """A structured call (name + arguments as a dict or a JSON string) in the canonical vocabulary.

    Null-valued arguments are dropped (Parquet exports pad every tool's arguments with nulls).
    Raises BadRecord for arguments that are not a JSON object, and for an unknown tool name when
    `unknown_tools == "skip"`.
    """
    name = name.strip()
    if not name:
        raise BadRecord("tool call with an empty name")
    args = _decode_arguments(name, arguments)
    if name not in KNOWN_TOOLS and unknown_tools == "skip":
        raise BadRecord(f"unknown tool {name!r}")
    canonical = ALIASES.get(name, name)
    if canonical == "bash" and "command" not in args and "cmd" in args:
        args["command"] = args.pop("cmd")
    if canonical == "submit":
        if args and raw is None:
            raw = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
        args = {}
    if canonical == "str_replace_editor":
        args = _normalize_editor_args(args)
    return ToolCall(name=canonical, arguments=args, original_name=name, id=call_id, raw=raw)


def parse_rendered_action(action: str, *, unknown_tools: UnknownTools = "keep") -> ToolCall:
    """Turn SWE-agent's rendered action line(s) into a structured call.

    `str_replace_editor <command> <path> --flag value ...` is split with shlex and must parse (else
    BadRecord); `submit` becomes `submit {}`; a legacy windowed command gets its arguments parsed and
    falls back to `bash {command}` (keeping its name as `original_name`) when they do not fit, which
    is faithful: in SWE-agent 0.x those commands were shell functions. Anything else is a shell
    command, `bash {command}`.
    """
    text = action.strip()
    if not text:
        raise BadRecord("empty action")
    first = text.split(None, 1)[0]
    if first == "submit" and text == "submit":
        return ToolCall(name="submit", arguments={}, original_name="submit", raw=action)
    if first == "str_replace_editor":
        return ToolCall(
            name="str_replace_editor", arguments=_parse_editor(text), original_name=first, raw=action
        )
    if first in _LEGACY_PARSERS:
        try:
            args = _LEGACY_PARSERS[first](text)
        except ValueError:
            return ToolCall(name="bash", arguments={"command": text}, original_name=first, raw=action)
        return ToolCall(name=first, arguments=args, original_name=first, raw=action)
    return ToolCall(name="bash", arguments={"command": text}, original_name="bash", raw=action)


def split_fenced_action(text: str) -> tuple[str, str] | None:
    """SWE-agent's `thought_action` rule: (thought, action) from the last top-level ``` block, or None.

    A fence line with a language tag always opens a block; a bare fence closes the innermost open
    block, or opens one when none is open (so nested fences inside the action survive).
    """
    lines = text.split("\n")
    stack: list[int] = []
    last: tuple[int, int] | None = None
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if not m:
            continue
        if stack and not m.group(1):
            start = stack.pop()
            if not stack:
                last = (start, i)
        else:
            stack.append(i)
    if last is None:
        return None
    start, end = last
    action = "\n".join(lines[start + 1 : end])
    thought = "\n".join(lines[:start] + lines[end + 1 :]).strip()
    return thought, action


def split_xml_command(text: str) -> tuple[str, str] | None:
    """SWE-agent's `xml_thought_action` rule: (thought, action) around the last <command>...</command>."""
    start = text.rfind("<command>")
    end = text.find("</command>", start)
    if start < 0 or end < 0:
        return None
    action = text[start + len("<command>") : end]
    thought = (text[:start] + text[end + len("</command>") :]).strip()
    return thought, action.strip("\n")


_FENCE = re.compile(r"^```(\S*)\s*$")


# ---------------------------------------------------------------------------------------------------
# argument normalisation


def decode_json_field(value: Any, where: str, expected: type, what: str) -> Any:
    """`value` as an `expected` (`dict`, `list`), decoded first when the source stored it as a JSON
    string (OpenAI `function.arguments`, `messages` in Parquet and Hub exports).

    BadRecord `"<where>: a string that is not valid JSON (...)"` or `"<where>: expected <what>, got
    <type>"` otherwise.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BadRecord(f"{where}: a string that is not valid JSON ({e.msg})") from None
    if not isinstance(value, expected):
        raise BadRecord(f"{where}: expected {what}, got {type(value).__name__}")
    return value


def _decode_arguments(name: str, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, dict):
        arguments = decode_json_field(arguments, f"arguments of {name!r}", dict, "a JSON object")
    return {k: v for k, v in arguments.items() if v is not None}


def _normalize_editor_args(args: dict[str, Any]) -> dict[str, Any]:
    """Give `insert_line` an int and `view_range` a list of ints when the source wrote them as text."""
    out = dict(args)
    if isinstance(out.get("insert_line"), str) and out["insert_line"].strip().lstrip("-").isdigit():
        out["insert_line"] = int(out["insert_line"])
    if isinstance(out.get("view_range"), str):
        out["view_range"] = _view_range(out["view_range"].split())
    return out


def _view_range(tokens: list[str]) -> list[int]:
    text = " ".join(tokens).strip()
    if text.startswith("["):
        value = json.loads(text)
    else:
        value = [int(t) for t in tokens]
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ValueError(f"view_range must be integers, got {text!r}")
    return value


def _parse_editor(text: str) -> dict[str, Any]:
    try:
        tokens = shlex.split(text, posix=True)
    except ValueError as e:
        raise BadRecord(f"cannot split str_replace_editor action ({e}): {text[:80]!r}") from None
    if len(tokens) < 3:
        raise BadRecord(f"str_replace_editor action needs a command and a path: {text[:80]!r}")
    args: dict[str, Any] = {"command": tokens[1], "path": tokens[2]}
    i = 3
    while i < len(tokens):
        flag = tokens[i]
        key = flag[2:] if flag.startswith("--") else ""
        if key not in _EDITOR_FLAGS:
            raise BadRecord(f"unexpected {flag!r} in str_replace_editor action: {text[:80]!r}")
        values = []
        i += 1
        while i < len(tokens) and not (tokens[i].startswith("--") and tokens[i][2:] in _EDITOR_FLAGS):
            values.append(tokens[i])
            i += 1
            if key != "view_range":
                break
        if not values:
            raise BadRecord(f"str_replace_editor flag {flag} has no value")
        try:
            if key == "view_range":
                args[key] = _view_range(values)
            elif key == "insert_line":
                args[key] = int(values[0])
            else:
                args[key] = values[0]
        except ValueError as e:
            raise BadRecord(f"bad value for str_replace_editor {flag}: {e}") from None
    return args


# ---------------------------------------------------------------------------------------------------
# SWE-agent 0.x windowed commands in their text form (each raises ValueError when the text does not fit)


def _words(text: str, name: str, low: int, high: int) -> list[str]:
    if "\n" in text:
        raise ValueError("multi-line")
    words = shlex.split(text)[1:]
    if not low <= len(words) <= high:
        raise ValueError(f"{name} takes {low}..{high} arguments")
    return words


def _open(text: str) -> dict[str, Any]:
    words = _words(text, "open", 1, 2)
    args: dict[str, Any] = {"path": words[0]}
    if len(words) == 2:
        args["line_number"] = int(words[1])
    return args


def _edit(text: str) -> dict[str, Any]:
    head, _, body = text.partition("\n")
    m = re.fullmatch(r"edit\s+(\d+):(\d+)\s*", head)
    if m:
        if not body.rstrip().endswith("end_of_edit"):
            raise ValueError("edit block without end_of_edit")
        replacement = body.rstrip()[: -len("end_of_edit")]
        return {
            "start": int(m.group(1)),
            "end": int(m.group(2)),
            "replacement": replacement.removesuffix("\n"),
        }
    words = shlex.split(text)[1:]
    if len(words) not in (2, 3):
        raise ValueError("edit takes search and replace")
    args: dict[str, Any] = {"search": words[0], "replace": words[1]}
    if len(words) == 3:
        args["replace_all"] = words[2]
    return args


def _insert(text: str) -> dict[str, Any]:
    head, _, body = text.partition("\n")
    m = re.fullmatch(r"insert\s+(\d+)\s*", head)
    if m and body.rstrip().endswith("end_of_insert"):
        return {
            "line_number": int(m.group(1)),
            "text": body.rstrip()[: -len("end_of_insert")].removesuffix("\n"),
        }
    words = shlex.split(text)[1:]
    if len(words) != 1:
        raise ValueError("insert takes one text argument")
    return {"text": words[0]}


def _named(
    name: str, keys: tuple[str, ...], required: int, ints: tuple[str, ...] = ()
) -> Callable[[str], dict]:
    def parse(text: str) -> dict[str, Any]:
        words = _words(text, name, required, len(keys))
        return {k: int(w) if k in ints else w for k, w in zip(keys, words)}

    return parse


_LEGACY_PARSERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "open": _open,
    "goto": _named("goto", ("line_number",), 1, ints=("line_number",)),
    "scroll_up": _named("scroll_up", (), 0),
    "scroll_down": _named("scroll_down", (), 0),
    "create": _named("create", ("filename",), 1),
    "edit": _edit,
    "insert": _insert,
    "find_file": _named("find_file", ("file_name", "dir"), 1),
    "search_dir": _named("search_dir", ("search_term", "dir"), 1),
    "search_file": _named("search_file", ("search_term", "file"), 1),
}
