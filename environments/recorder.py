"""Record expert steps into a SWE-agent `.traj`: execute each (thought, tool call) in an environment and
keep what the environment really answered.

Shared by the bundled experts (`environments.tasks.experts`, handwritten steps) and the task factory
(`environments.factory.experts`, steps derived from an injected bug). `record_steps(env, steps, ...)`
runs the calls in order through `environments.tools` in a started environment of the task's image, up
to and including the first `submit`, and returns the document in SWE-agent 1.x function-calling form:
`history` (system prompt, instance prompt, then per step an assistant message with `tool_calls` and a
`role: tool` observation), `trajectory` (action, observation, thought, execution time per step),
`info.submission` (the submit's patch), `info.exit_status` and `replay_config` naming the image, base
commit and instance. `trajectories.sources` reads it back and `environments.replay` replays it.

A failed `str_replace_editor` or unknown tool call is an error (the steps are wrong, so the recording
would teach a mistake); a bash command's non-zero exit is not (failing tests are the point of a
reproduce step). Steps without a submit are an error too. The only non-deterministic fields are
`execution_time` and whatever the commands themselves print (pytest's durations).
"""

from __future__ import annotations

import json
import shlex
import time
from typing import TYPE_CHECKING, Any

from trajectories.record import ToolCall
from trajectories.swe_readers import INSTANCE_TEMPLATE

if TYPE_CHECKING:
    from environments.protocol import Environment

SYSTEM_PROMPT = "You are a helpful assistant that can interact with a computer to solve tasks."
INSTANCE_PROMPT = INSTANCE_TEMPLATE  # the experts see the task as SWE-agent's and SWE-smith's do

Steps = list[tuple[str, ToolCall]]
"""An expert's steps: (thought, tool call) in order, ending with a submit."""


class RecordingError(RuntimeError):
    """The steps cannot be recorded as they are: an edit failed, or no step submits."""


def bash(command: str) -> ToolCall:
    return ToolCall("bash", {"command": command})


def editor(command: str, path: str, **arguments: Any) -> ToolCall:
    return ToolCall("str_replace_editor", {"command": command, "path": path, **arguments})


SUBMIT = ToolCall("submit", {})


def rendered(call: ToolCall) -> str:
    """The action line SWE-agent stores in `trajectory[i].action` for a function call."""
    if call.name == "bash":
        return call.arguments["command"]
    if call.name == "submit":
        return "submit"
    args = dict(call.arguments)
    words = ["str_replace_editor", args.pop("command"), args.pop("path")]
    for key, value in args.items():
        text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        words.append(f"--{key} {text if isinstance(value, (int, list)) else shlex.quote(text)}")
    return " ".join(words)


def record_steps(
    env: Environment,
    steps: Steps,
    *,
    instance_id: str,
    problem_statement: str,
    image: str,
    base_commit: str | None,
    call_prefix: str | None = None,
) -> dict[str, Any]:
    """Execute `steps` in `env` (started, at the base commit) and return the `.traj` document.

    `call_prefix` names the tool call ids (`call_<prefix>_<step:02d>`; default: the instance id).
    Raises `RecordingError` naming the instance and step when an editor call fails or nothing submits.
    """
    from environments import tools

    prefix = call_prefix or instance_id
    history: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT, "agent": "main", "message_type": "system_prompt"},
        {"role": "user", "content": INSTANCE_PROMPT.format(problem_statement=problem_statement),
         "agent": "main", "message_type": "observation"},
    ]  # fmt: skip
    trajectory, submission = [], None
    for i, (thought, call) in enumerate(steps):
        started = time.monotonic()
        outcome = tools.execute(env, call)
        if not outcome.ok and call.name != "bash":
            raise RecordingError(f"{instance_id} step {i} ({call.name}) failed: {outcome.observation}")
        action, call_id = rendered(call), f"call_{prefix}_{i:02d}"
        trajectory.append({
            "action": action, "observation": outcome.observation, "response": thought, "thought": thought,
            "execution_time": round(time.monotonic() - started, 3),
            "state": {"open_file": call.arguments.get("path", "n/a"), "working_dir": "/testbed"},
            "query": [], "extra_info": {},
        })  # fmt: skip
        history.append({
            "role": "assistant", "content": thought, "thought": thought, "action": action, "agent": "main",
            "message_type": "action",
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}],
        })  # fmt: skip
        history.append({"role": "tool", "content": f"OBSERVATION:\n{outcome.observation}", "agent": "main",
                        "message_type": "observation", "tool_call_ids": [call_id]})  # fmt: skip
        if outcome.submitted:
            submission = outcome.patch
            break
    if submission is None:
        raise RecordingError(f"{instance_id}: the expert steps end without a submit")
    return {
        "environment": "main",
        "trajectory": trajectory,
        "history": history,
        "info": {
            "submission": submission,
            "exit_status": "submitted",
            "model_stats": {
                "instance_cost": 0,
                "tokens_sent": 0,
                "tokens_received": 0,
                "api_calls": len(trajectory),
            },
        },
        "replay_config": {
            "env": {
                "deployment": {"type": "docker", "image": image},
                "repo": {"base_commit": base_commit},
            },
            "problem_statement": {"type": "text", "id": instance_id, "text": problem_statement},
        },
    }
