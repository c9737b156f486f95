"""Readers for SWE agent trajectories: one function per source format, record (dict) -> `Trajectory`.

Formats (formats.md §1-§6): SWE-agent `.traj` in every generation, SWE-smith SFT rows (XML function
calls or ``` ticks in chat messages; R2E-Gym's XML rows read the same way), OpenAI-style chats with
`tool_calls` (OpenHands/SWE-Gym, nebius OpenHands, SWE-smith `tool` split, mini-swe-agent v2 tool
mode), nebius SWE-agent rows (`trajectory` with `ai` turns) and mini-swe-agent runs (```bash /
```mswea_bash_command blocks). `sources.detect_format` picks the reader.

Shared rules:
- `task` is the first user message that is not a demonstration (`is_demo`, or a user turn starting
  "Here is a demonstration ..."); `system` the first system message.
- An assistant turn without a parsable action is a format-error turn: it and the reply to it are left
  out of `steps` (no tool call is invented) and counted in `meta["format_error_turns"]`.
- Observations: `\\r\\n` becomes `\\n`; the `OBSERVATION:` prefix and SWE-agent 0.x's state suffix
  `(Open file: ...)\\n(Current directory: ...)\\nbash-$` are removed.
- A record that yields no step raises `BadRecord("no actions")` (the project's own records excepted:
  `read_srl_jsonl`); every other problem raises `BadRecord` with the field that is wrong, so the
  record is skipped and listed, never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from trajectories.errors import BadRecord
from trajectories.record import RecordError, Step, ToolCall, Trajectory
from trajectories.tools import (
    KNOWN_TOOLS,
    UnknownTools,
    canonical_call,
    decode_json_field,
    parse_rendered_action,
    split_fenced_action,
    split_xml_command,
)

DEMO_PREFIX = "Here is a demonstration of how to correctly accomplish this task."
MINI_SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")

_STATE_SUFFIX = re.compile(r"\n*\(Open file: [^\n]*\)\n\(Current directory: [^\n]*\)\n?bash-\$\s*$")
_MINI_BLOCK = re.compile(r"```(?:bash|mswea_bash_command)\s*\n(.*?)\n```", re.DOTALL)
_MINI_XML = re.compile(r"<mswea_bash_command>(.*?)</mswea_bash_command>", re.DOTALL)

_XML_HEAD = re.compile(r"<function\s*=\s*([^>\n]+)>\n?")
_PARAM_HEAD = re.compile(r"<parameter\s*=\s*([^>\n]+)>")


INSTANCE_TEMPLATE = """<uploaded_files>
/testbed
</uploaded_files>
I've uploaded a python code repository in the directory /testbed. Consider the following PR description:

<pr_description>
{problem_statement}
</pr_description>

Can you help me implement the necessary changes to the repository so that the requirements specified in the \
<pr_description> are met? I've already taken care of all changes to any of the test files described in the \
<pr_description>. Make the minimal changes to non-test files in the /testbed directory to ensure the \
<pr_description> is satisfied. Your thinking should be thorough and so it's fine if it's very long."""
"""The first user message of SWE-agent's default config, which SWE-smith's trajectories and the
project's generated experts (`environments.recorder`) carry: the task as an expert saw it. The agent
shows the policy its task through it (`agent.instance_template`), so acting matches training."""


def last_xml_call(content: str) -> tuple[str, str, dict[str, str], str] | None:
    """(thought, name, arguments, raw block) of the last `<function=NAME>...</function>` in `content`.

    Same result as SWE-agent's regexes (`<function=([^>]+)>\\n(.*?)</function>`, then
    `<parameter=([^>]+)>(.*?)</parameter>`, one leading and trailing newline stripped from values),
    found with `str.find` because lazy `.*?` over multi-kilobyte file contents is slow.
    """
    found = None  # scan forward like re.finditer, so a "<function" inside a parameter value is content
    pos = 0
    while (i := content.find("<function", pos)) >= 0:
        head = _XML_HEAD.match(content, i)
        end = content.find("</function>", head.end()) if head else -1
        if end < 0:
            pos = i + len("<function")
            continue
        found = (found[0] if found else i, i, head, end)
        pos = end + len("</function>")
    if found is None:
        return None
    first, start, head, end = found
    body = content[head.end() : end]
    args: dict[str, str] = {}
    pos = 0
    while (i := body.find("<parameter", pos)) >= 0:
        p = _PARAM_HEAD.match(body, i)
        close = body.find("</parameter>", p.end()) if p else -1
        if close < 0:
            pos = i + len("<parameter")
            continue
        args[p.group(1).strip()] = body[p.end() : close].removeprefix("\n").removesuffix("\n")
        pos = close + len("</parameter>")
    thought = content[:first].strip()
    return thought, head.group(1).strip(), args, content[start : end + len("</function>")]


# (thought, call) pairs found in one assistant message; an empty list marks a format-error turn.
Extractor = Callable[[dict[str, Any]], list[tuple[str, ToolCall]]]


# ---------------------------------------------------------------------------------------------------
# text helpers


def text_of(content: Any, where: str = "content") -> str:
    """Message content as text: a string, None (empty) or a list of parts whose text parts are joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    raise BadRecord(f"{where}: expected a string or a list of parts, got {type(content).__name__}")


def clean_observation(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\r\n", "\n")
    for prefix in ("OBSERVATION:\n", "Observation: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if "(Current directory: " in text[-1000:]:  # the regex is slow to try at every position
        text = _STATE_SUFFIX.sub("", text)
    return text


def is_demo(message: dict[str, Any]) -> bool:
    if message.get("is_demo"):
        return True
    return message.get("role") == "user" and text_of(message.get("content")).lstrip().startswith(DEMO_PREFIX)


def load_messages(record: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`record[key]` as a list of message dicts with a string role (a JSON string is decoded first)."""
    messages = decode_json_field(record.get(key), key, list, "a list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRecord(f"{key}[{i}]: expected an object with a string 'role'")
    return messages


def _system_and_task(messages: list[dict[str, Any]], key: str) -> tuple[str | None, str, int]:
    """(system, task, index of the task message) from a chat; BadRecord when there is no task."""
    system = None
    for i, m in enumerate(messages):
        if is_demo(m):
            continue
        if m["role"] == "system" and system is None:
            system = text_of(m.get("content"), f"{key}[{i}].content") or m.get("system_prompt")
        elif m["role"] == "user":
            task = text_of(m.get("content") if "content" in m else m.get("text"), f"{key}[{i}].content")
            return system, clean_observation(task) or "", i
    raise BadRecord(f"{key}: no user message holding the task")


def _finish(traj: Trajectory, format_errors: int) -> Trajectory:
    if format_errors:
        traj.meta["format_error_turns"] = format_errors
    if not traj.steps:
        raise BadRecord("no actions (no assistant turn with a parsable tool call)")
    if not traj.task.strip():
        raise BadRecord("empty task text")
    return traj


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value)
    return None


# ---------------------------------------------------------------------------------------------------
# the shared chat walk


def chat_steps(
    messages: list[dict[str, Any]], start: int, extract: Extractor, key: str = "messages"
) -> tuple[list[Step], int]:
    """Steps from the messages after the task: each assistant turn's calls, each followed by its reply.

    Replies are the following `tool`/`user` messages up to the next assistant turn; a reply with a
    `tool_call_id` goes to the call with that id, others go to the calls in order. Returns the steps
    and the number of format-error turns (assistant turns with no call).
    """
    steps: list[Step] = []
    errors = 0
    i = start + 1
    while i < len(messages):
        m = messages[i]
        if m["role"] != "assistant" or is_demo(m):
            i += 1
            continue
        replies = []
        j = i + 1
        while j < len(messages) and messages[j]["role"] in ("user", "tool", "function"):
            replies.append(messages[j])
            j += 1
        calls = extract(m)
        if not calls:
            errors += 1
        else:
            steps.extend(_pair(calls, replies, f"{key}[{i}]"))
        i = j
    return steps, errors


def _pair(calls: list[tuple[str, ToolCall]], replies: list[dict[str, Any]], where: str) -> list[Step]:
    by_id = {}
    loose = []
    for r in replies:
        text = text_of(r.get("content"), f"{where} reply")
        ids = r.get("tool_call_ids") or ([r["tool_call_id"]] if r.get("tool_call_id") else [])
        if ids:
            for call_id in ids:
                by_id[call_id] = text
        else:
            loose.append(text)
    steps = []
    for thought, call in calls:
        if call.id is not None and call.id in by_id:
            obs = by_id.pop(call.id)
        elif loose:
            obs = loose.pop(0)
        elif by_id and len(calls) == 1:
            obs = by_id.popitem()[1]
        else:
            obs = None
        steps.append(Step(thought=thought, action=call, observation=clean_observation(obs)))
    return steps


def _tool_call_pairs(
    m: dict[str, Any], unknown_tools: UnknownTools, where: str
) -> list[tuple[str, ToolCall]]:
    raw_calls = m.get("tool_calls")
    if not raw_calls:
        return []
    if not isinstance(raw_calls, list):
        raise BadRecord(f"{where}.tool_calls: expected a list, got {type(raw_calls).__name__}")
    thought = text_of(m.get("content"), f"{where}.content")
    out = []
    for k, tc in enumerate(raw_calls):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRecord(
                f"{where}.tool_calls[{k}]: expected {{'function': {{'name': ..., 'arguments': ...}}}}"
            )
        call = canonical_call(
            fn["name"], fn.get("arguments"), call_id=tc.get("id"), unknown_tools=unknown_tools
        )
        out.append((thought if k == 0 else "", call))
    return out


# ---------------------------------------------------------------------------------------------------
# SWE-agent .traj (§1)


def read_sweagent_traj(record: dict[str, Any], unknown_tools: UnknownTools = "keep") -> Trajectory:
    """A SWE-agent `.traj`: steps from `trajectory` (actions as executed, observations as returned),
    structured calls from the matching `history` items' `tool_calls`; with no `trajectory`, steps are
    rebuilt from `history` (or a step's `messages`/`query`). Demonstrations are never steps or task."""
    executed = record.get("trajectory") or []
    if not isinstance(executed, list):
        raise BadRecord(f"trajectory: expected a list, got {type(executed).__name__}")
    chat, chat_key = _sweagent_chat(record, executed)
    replay = _replay_config(record)
    problem = replay.get("problem_statement") if isinstance(replay.get("problem_statement"), dict) else {}
    try:
        system, task, task_at = _system_and_task(chat, chat_key)
    except BadRecord:
        if not isinstance(problem.get("text"), str):
            raise
        system, task, task_at = None, problem["text"], -1
    if executed:
        steps, errors = _steps_from_executed(executed, chat, unknown_tools), 0
    else:
        steps, errors = chat_steps(chat, task_at, _sweagent_extractor(unknown_tools), chat_key)
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    env = replay.get("env") if isinstance(replay.get("env"), dict) else {}
    meta = {
        "image": (env.get("deployment") or {}).get("image")
        if isinstance(env.get("deployment"), dict)
        else None,
        "base_commit": (env.get("repo") or {}).get("base_commit")
        if isinstance(env.get("repo"), dict)
        else None,
        "swe_agent_version": info.get("swe_agent_version"),
    }
    traj = Trajectory(
        task=task,
        steps=steps,
        instance_id=problem.get("id") if isinstance(problem.get("id"), str) else None,
        system=system,
        final_patch=info.get("submission") if isinstance(info.get("submission"), str) else None,
        exit_status=info.get("exit_status") if isinstance(info.get("exit_status"), str) else None,
        source_format="sweagent_traj",
        meta={k: v for k, v in meta.items() if v is not None},
    )
    return _finish(traj, errors)


def _sweagent_chat(record: dict[str, Any], executed: list[Any]) -> tuple[list[dict[str, Any]], str]:
    if record.get("history"):
        return [m for m in load_messages(record, "history") if not is_demo(m)], "history"
    if executed and isinstance(executed[-1], dict):
        for key in ("messages", "query"):
            if isinstance(executed[-1].get(key), list):
                chat = load_messages(executed[-1], key)
                return [m for m in chat if not is_demo(m)], f"trajectory[-1].{key}"
    return [], "history"


def _replay_config(record: dict[str, Any]) -> dict[str, Any]:
    replay = record.get("replay_config")
    if isinstance(replay, str):
        try:
            replay = json.loads(replay)
        except json.JSONDecodeError:
            return {}
    return replay if isinstance(replay, dict) else {}


def _steps_from_executed(
    executed: list[Any], chat: list[dict[str, Any]], unknown_tools: UnknownTools
) -> list[Step]:
    actions = [m for m in chat if m["role"] == "assistant" and isinstance(m.get("action"), str)]
    cursor = 0
    steps = []
    for i, s in enumerate(executed):
        if not isinstance(s, dict) or not isinstance(s.get("action"), str):
            raise BadRecord(f"trajectory[{i}].action: expected a string")
        observation = s.get("observation")
        if observation is not None and not isinstance(observation, str):
            raise BadRecord(
                f"trajectory[{i}].observation: expected a string, got {type(observation).__name__}"
            )
        call = None
        for k in range(cursor, len(actions)):
            if actions[k]["action"].strip() == s["action"].strip():
                cursor = k + 1
                tool_calls = actions[k].get("tool_calls")
                if isinstance(tool_calls, list) and len(tool_calls) == 1:
                    call = _tool_call_pairs(actions[k], unknown_tools, f"history action {k}")[0][1]
                    call.raw = s["action"]
                break
        if call is None:
            try:
                call = parse_rendered_action(s["action"], unknown_tools=unknown_tools)
            except BadRecord as e:
                raise BadRecord(f"trajectory[{i}]: {e}") from None
        thought = s.get("thought") if isinstance(s.get("thought"), str) else ""
        steps.append(Step(thought=thought, action=call, observation=clean_observation(observation)))
    return steps


def _sweagent_extractor(unknown_tools: UnknownTools) -> Extractor:
    def extract(m: dict[str, Any]) -> list[tuple[str, ToolCall]]:
        if m.get("tool_calls"):
            return _tool_call_pairs(m, unknown_tools, "history")
        content = text_of(m.get("content"))
        thought = m.get("thought") if isinstance(m.get("thought"), str) else None
        action = m.get("action") if isinstance(m.get("action"), str) else None
        if action is None:
            split = split_xml_command(content) or split_fenced_action(content)
            if split is None:
                return []
            thought = thought if thought is not None else split[0]
            action = split[1]
        if not action.strip():
            return []
        return [
            (
                thought if thought is not None else content,
                parse_rendered_action(action, unknown_tools=unknown_tools),
            )
        ]

    return extract


# ---------------------------------------------------------------------------------------------------
# chat-message rows (§2.2-§2.3, §3, §5, §6)


def read_xml_messages(record: dict[str, Any], unknown_tools: UnknownTools = "keep") -> Trajectory:
    """SWE-smith `xml` SFT rows (and R2E-Gym's): one `<function=NAME>` block per assistant message."""

    def extract(m: dict[str, Any]) -> list[tuple[str, ToolCall]]:
        content = text_of(m.get("content"))
        found = last_xml_call(content)
        if found is None:
            return []
        thought, name, args, raw = found
        return [(thought, canonical_call(name, args, raw=raw, unknown_tools=unknown_tools))]

    traj = _read_chat_row(record, "messages", extract, "swesmith_sft_xml")
    if any(s.action.original_name in ("execute_bash", "file_editor") for s in traj.steps):
        traj.source_format = "r2egym_sft"
    return traj


def read_ticks_messages(record: dict[str, Any], unknown_tools: UnknownTools = "keep") -> Trajectory:
    """SWE-smith `ticks` rows: the rendered action in the last ``` block of each assistant message."""

    def extract(m: dict[str, Any]) -> list[tuple[str, ToolCall]]:
        split = split_fenced_action(text_of(m.get("content")))
        if split is None or not split[1].strip():
            return []
        return [(split[0], parse_rendered_action(split[1], unknown_tools=unknown_tools))]

    return _read_chat_row(record, "messages", extract, "swesmith_sft_ticks")


def read_tool_messages(record: dict[str, Any], unknown_tools: UnknownTools = "keep") -> Trajectory:
    """OpenAI-style chats with `tool_calls` (OpenHands/SWE-Gym, nebius OpenHands, SWE-smith `tool`)."""
    key = "messages" if "messages" in record else "trajectory"
    traj = _read_chat_row(
        record, key, lambda m: _tool_call_pairs(m, unknown_tools, key), "openai_tool_messages"
    )
    test_result = record.get("test_result") if isinstance(record.get("test_result"), dict) else {}
    report = test_result.get("report") if isinstance(test_result.get("report"), dict) else {}
    if traj.final_patch is None and isinstance(test_result.get("git_patch"), str):
        traj.final_patch = test_result["git_patch"]
    if traj.resolved is None:
        traj.resolved = _bool(report.get("resolved"))
    return traj


def read_mini_swe_agent(record: dict[str, Any], unknown_tools: UnknownTools = "keep") -> Trajectory:
    """mini-swe-agent runs: v1 ```bash blocks, v2 ```mswea_bash_command / tool calls; the echo of
    either end marker becomes `submit` (its command kept in `raw`)."""

    def extract(m: dict[str, Any]) -> list[tuple[str, ToolCall]]:
        if m.get("tool_calls"):
            pairs = _tool_call_pairs(m, unknown_tools, "messages")
        else:
            content = text_of(m.get("content"))
            blocks = _MINI_BLOCK.findall(content) or _MINI_XML.findall(content)
            if len(blocks) != 1:
                xml = (
                    last_xml_call(content) if not blocks else None
                )  # ADP mini-coder rows end with <function=submit>
                if xml is not None and xml[1] == "submit":
                    return [(xml[0], ToolCall("submit", {}, "submit", raw=xml[3]))]
                return []
            thought = re.split(r"```|<mswea_bash_command>", content, maxsplit=1)[0].strip()
            pairs = [(thought, ToolCall("bash", {"command": blocks[0].strip()}, "bash", raw=blocks[0]))]
        return [(t, _mini_submit(c)) for t, c in pairs]

    traj = _read_chat_row(record, "messages", extract, "minisweagent")
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    if traj.exit_status is None and isinstance(info.get("exit_status"), str):
        traj.exit_status = info["exit_status"]
    if traj.final_patch is None and isinstance(info.get("submission"), str):
        traj.final_patch = info["submission"]
    if traj.final_patch is None and traj.steps[-1].action.name == "submit":
        traj.final_patch = traj.steps[-1].observation
    for key in ("trajectory_format", "mini_version"):
        value = record.get(key) or info.get(key)
        if isinstance(value, str):
            traj.meta[key] = value
    return traj


def _mini_submit(call: ToolCall) -> ToolCall:
    command = call.arguments.get("command")
    if call.name == "bash" and isinstance(command, str):
        words = command.strip().split(None, 2)
        if len(words) >= 2 and words[0] == "echo" and words[1].strip("'\"") in MINI_SUBMIT_MARKERS:
            return ToolCall("submit", {}, original_name=call.original_name or "bash", id=call.id, raw=command)
    return call


def _read_chat_row(record: dict[str, Any], key: str, extract: Extractor, source_format: str) -> Trajectory:
    messages = load_messages(record, key)
    system, task, task_at = _system_and_task(messages, key)
    steps, errors = chat_steps(messages, task_at, extract, key)
    traj = Trajectory(
        task=task,
        steps=steps,
        instance_id=record.get("instance_id") if isinstance(record.get("instance_id"), str) else None,
        system=system,
        final_patch=_first_str(record, "patch", "model_patch", "generated_patch"),
        resolved=_bool(record.get("resolved", record.get("target"))),
        exit_status=_first_str(record, "exit_status"),
        source_format=source_format,
        meta={
            k: record[k]
            for k in ("traj_id", "trajectory_id", "run_id", "model", "model_name")
            if isinstance(record.get(k), str)
        },
    )
    return _finish(traj, errors)


def _first_str(record: dict[str, Any], *keys: str) -> str | None:
    for k in keys:
        if isinstance(record.get(k), str) and record[k]:
            return record[k]
    return None


# ---------------------------------------------------------------------------------------------------
# nebius/SWE-agent-trajectories (§4)


def read_nebius_sweagent(record: dict[str, Any], unknown_tools: UnknownTools = "keep") -> Trajectory:
    """nebius SWE-agent rows: `trajectory` turns `{role: system|user|ai, text}`; `ai` text carries a
    SWE-agent 0.x backticks action."""
    turns = load_messages(record, "trajectory")
    messages = []
    for i, t in enumerate(turns):
        text = t.get("text") if t.get("text") is not None else t.get("system_prompt")
        if text is not None and not isinstance(text, str):
            raise BadRecord(f"trajectory[{i}].text: expected a string, got {type(text).__name__}")
        role = "assistant" if t["role"] == "ai" else t["role"]
        messages.append({"role": role, "content": text or ""})

    def extract(m: dict[str, Any]) -> list[tuple[str, ToolCall]]:
        split = split_fenced_action(m["content"])
        if split is None or not split[1].strip():
            return []
        return [(split[0], parse_rendered_action(split[1], unknown_tools=unknown_tools))]

    system, task, task_at = _system_and_task(messages, "trajectory")
    steps, errors = chat_steps(messages, task_at, extract, "trajectory")
    traj = Trajectory(
        task=task,
        steps=steps,
        instance_id=record.get("instance_id") if isinstance(record.get("instance_id"), str) else None,
        system=system,
        final_patch=_first_str(record, "generated_patch"),
        resolved=_bool(record.get("target")),
        exit_status=_first_str(record, "exit_status"),
        source_format="nebius_sweagent",
        meta={k: record[k] for k in ("model_name",) if isinstance(record.get(k), str)},
    )
    return _finish(traj, errors)


def read_srl_jsonl(record: dict[str, Any], unknown_tools: UnknownTools = "keep") -> Trajectory:
    """The project's own `Trajectory.to_dict` lines.

    Unlike the other formats, a record without steps is read: an agent episode that ended before its
    first valid tool call (`exit_status` says why) is a record of what happened, not a broken one.
    The build makes no example of it.
    """
    try:
        traj = Trajectory.from_dict(record)
    except RecordError as e:
        raise BadRecord(str(e)) from None
    if unknown_tools == "skip":
        for i, s in enumerate(traj.steps):
            if (s.action.original_name or s.action.name) not in KNOWN_TOOLS:
                raise BadRecord(f"steps[{i}]: unknown tool {s.action.original_name or s.action.name!r}")
    if not traj.task.strip():
        raise BadRecord("empty task text")
    return traj
