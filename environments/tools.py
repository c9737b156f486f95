"""Executing an agent's tool calls in an environment: `bash`, `str_replace_editor` and `submit`.

Calls use the canonical names of `trajectories.record.ToolCall` (readers map `execute_bash`, `finish`,
... onto them). Every call returns a `ToolOutcome` whose `observation` is what the agent sees next;
faults (bad arguments, a failed edit, an unknown tool, an unparseable action) are observations with
`ok=False`, never exceptions, so an agent loop or a replay carries on as the expert's harness would.

- `bash`: runs `command` in the environment's persistent shell; output as SWE-agent shows it (an empty
  output reads "Your command ran successfully and did not produce any output."), plus a sentence when
  the command timed out, was cut off or the shell had to be restarted.
- `str_replace_editor`: `view` (file, `view_range`, or a directory listing two levels deep), `create`,
  `str_replace`, `insert`, `undo_edit`, with SWE-agent's messages. The editing itself runs inside the
  container (`editor_program.py`, arguments passed as base64), never on the host.
- `submit`: the repository's diff against the base commit is the patch (`ToolOutcome.patch`) and the
  episode ends (`submitted=True`).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from environments.protocol import Environment
from environments.shell import CommandResult, ansi_c_quote
from trajectories.actions import ActionParseError, parse_action
from trajectories.record import ToolCall

TOOL_NAMES = ("bash", "str_replace_editor", "submit")
EMPTY_OUTPUT = "Your command ran successfully and did not produce any output."
_EDITOR_SOURCE = (Path(__file__).parent / "editor_program.py").read_text(encoding="utf-8")
_EDITOR_KEYS = ("command", "path", "file_text", "old_str", "new_str", "insert_line", "view_range")


@dataclass
class ToolOutcome:
    """The result of one tool call. `observation` is shown to the agent; `ok` is False when the call
    was refused or failed (bad arguments, failed edit, non-zero exit of a bash command)."""

    observation: str
    ok: bool = True
    submitted: bool = False
    patch: str | None = None
    result: CommandResult | None = None


def execute(env: Environment, call: ToolCall, timeout: float | None = None) -> ToolOutcome:
    """Execute one tool call in `env`. `timeout` bounds a bash command (default: the environment's)."""
    if call.name == "bash":
        return _bash(env, call.arguments, timeout)
    if call.name == "str_replace_editor":
        return _editor(env, call.arguments)
    if call.name == "submit":
        patch = env.diff()
        return ToolOutcome(observation=patch, submitted=True, patch=patch)
    return ToolOutcome(
        observation=f"Unknown tool `{call.name}`. The available tools are: {', '.join(TOOL_NAMES)}.", ok=False
    )


def execute_action(env: Environment, text: str, timeout: float | None = None) -> ToolOutcome:
    """Execute an action given in the canonical text form (`<function=...>`); a malformed one is an
    observation telling the agent what is wrong, not an exception."""
    try:
        call = parse_action(text)
    except ActionParseError as e:
        return ToolOutcome(
            observation=(
                f"Your action could not be parsed: {e}. Write exactly one call, e.g.\n"
                "<function=bash>\n<parameter=command>ls</parameter>\n</function>"
            ),
            ok=False,
        )
    return execute(env, call, timeout)


def format_command_result(result: CommandResult, command: str = "") -> str:
    """The observation for a bash command, in SWE-agent's words."""
    text = result.output
    if not text.strip() and result.exit_code == 0 and not result.note:
        return EMPTY_OUTPUT
    if result.timed_out:
        text += (
            f"\nThe command '{command}' was cancelled because it took more than {result.duration:.0f}"
            " seconds."
            " Please try a different command that completes more quickly. Note: a common cause is a command"
            " that waits for input, which can never arrive here."
        )
    if result.note:
        text += f"\n[{result.note}]"
    return text


def editor_command(arguments: dict[str, Any]) -> str:
    """One bash command that makes the `str_replace_editor` call `arguments` inside the container: the
    editor program's source to `python3 -c`, the arguments as base64 JSON in a here-document (so file
    contents of any size and with any characters arrive intact). Self-contained: any bash with a
    python3 runs it, the agent's shell or another harness's (`srl_agent.eval.mini_swe_agent` replays
    expert edits with it). Exit status 0 on success, 1 when the call was refused."""
    payload = base64.b64encode(json.dumps(arguments).encode("utf-8")).decode("ascii")
    return f"python3 -c {ansi_c_quote(_EDITOR_SOURCE)} <<'__SRL_EDITOR_EOF__'\n{payload}\n__SRL_EDITOR_EOF__"


def _bash(env: Environment, arguments: dict[str, Any], timeout: float | None) -> ToolOutcome:
    command = arguments.get("command")
    if not isinstance(command, str) or not command.strip():
        return ToolOutcome(observation="Parameter `command` is required for tool: bash", ok=False)
    result = env.run(command, timeout)
    return ToolOutcome(
        observation=format_command_result(result, command), ok=result.exit_code == 0, result=result
    )


def _editor(env: Environment, arguments: dict[str, Any]) -> ToolOutcome:
    unknown = sorted(set(arguments) - set(_EDITOR_KEYS))
    if unknown:
        return ToolOutcome(
            observation=f"Unknown parameter(s) {', '.join(unknown)} for str_replace_editor; "
            f"allowed: {', '.join(_EDITOR_KEYS)}",
            ok=False,
        )
    # Through the agent's shell (sub-millisecond, and relative-path hints use its cwd).
    result = env.run(editor_command(arguments), 120.0)
    if result.timed_out or result.exit_code not in (0, 1):
        return ToolOutcome(
            observation=f"str_replace_editor failed (exit {result.exit_code}): {result.output[-2000:]}",
            ok=False,
            result=result,
        )
    return ToolOutcome(observation=result.output, ok=result.exit_code == 0, result=result)
