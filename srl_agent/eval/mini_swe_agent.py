"""The mini-swe-agent scaffold: `python -m srl_agent.evaluate --task swe --instances SOURCE --scaffold
mini-swe-agent --model openai:MODEL@URL`.

The mini-swe-agent package (PyPI `mini-swe-agent`, the `scaffolds` extra; imported here and nowhere
else, only when this scaffold runs) runs each instance with its own agent loop, prompts and
environment, through its Python API as its SWE-bench batch mode does; nothing of it is re-implemented.
Per instance (`run_instance`):
1. the instance's image as this project makes it (`sources.prepare_image`: bundled and generated
   tasks built, SWE-bench images found or pulled, SWE-smith rows derived), on the default engine;
2. mini's SWE-bench environment on that image (`get_sb_environment` with `image_name`: `docker run -d
   ... sleep`, then one `docker exec -w /testbed ... bash -c` per command), with the project's sandbox
   (`container.docker_run_args`: no network, the memory, CPU and process limits, the labels by which a
   crashed run's containers are reaped) and `BASH_ENV=/root/.bashrc` in both modes, as swebench.yaml
   sets it, so an image's conda environment is on PATH. With `environment.hide_history` the
   project's history hiding runs first (`container.history_script`), as in its own environments;
3. mini's `DefaultAgent` with its benchmark config for `swe.mini.mode` (`swebench.yaml` for tool
   calls, `swebench_backticks.yaml` for text) and the `swe.mini` limits over it, on the issue;
4. the trajectory saved as its batch mode saves it, `mini/<instance_id>.traj.json` in the output
   folder (`trajectories` reads it back), and the submission returned for the project's grading.

Models (`--model`):
- `openai:MODEL@URL`: any OpenAI-compatible server (vLLM, `python -m srl_agent.serve`, an API):
  litellm's `openai/MODEL` with `api_base` the URL (ending in /v1, added when missing), the key
  `OPENAI_API_KEY` or a placeholder (which a local server ignores), cost tracking off for models
  litellm has no price for.
- `replay:PATH`: recorded trajectories (any format `trajectories` reads, as for the agent scaffold),
  their actions written by mini's own deterministic test models (`DeterministicModel` in text mode,
  `DeterministicToolcallModel` in tool mode): a bash call as its command, a `str_replace_editor`
  call as the project's editor program in one command (`tools.editor_command`), submit as
  `SUBMIT_COMMAND`, which is added after the last action when the trajectory has none.

Exit statuses are mini's, kept in the ledger and the report. `MODEL_EXITS` are verdicts on the model:
`Submitted` (the submission is the patch graded) and, with no submission and so an empty patch, as in
mini's batch mode, `LimitsExceeded`, `TimeExceeded`, `RepeatedFormatError` and
`ContextWindowExceededError`. Any other is the name of an exception that ended the instance (the model
server unreachable, `docker run` failed, a missing image): an infrastructure error, redone on a rerun.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from environments.chat_api import OPENAI_PREFIX, parse_model
from srl_agent.eval.report import file_name
from trajectories.config import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

    from environments.protocol import TaskInstance
    from srl_agent.config import EvalConfig
    from trajectories.record import ToolCall, Trajectory

log = logging.getLogger(__name__)

EXTRA = "scaffolds"
REPLAY_PREFIX = "replay:"
SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
SUBMIT_COMMAND = f"echo {SUBMIT_MARKER} && git add -A && git diff --cached"
"""What a replay runs for submit: mini ends the run on the marker and takes the rest as the patch."""
BASE_CONFIGS = {"tool": "swebench.yaml", "text": "swebench_backticks.yaml"}
MODEL_CLASSES = {"tool": "litellm", "text": "litellm_textbased"}
SCRIPTED_CLASSES = {
    "tool": "minisweagent.models.test_models.DeterministicToolcallModel",
    "text": "minisweagent.models.test_models.DeterministicModel",
}
MODEL_EXITS = frozenset(
    {"Submitted", "LimitsExceeded", "TimeExceeded", "RepeatedFormatError", "ContextWindowExceededError"}
)
"""Exit statuses that are the model's: graded (an empty patch unless `Submitted`). Any other exit
status is an exception's name: an infrastructure error."""
HISTORY_TIMEOUT = 600  # seconds for hiding the history (a repack of a large repository)


# ---------------------------------------------------------------------------------------------------
# Model strings


def check_model(model: str) -> None:
    """ConfigError naming `--model` unless `model` is a model string this scaffold runs."""
    what = "model.name (--model)"
    if model.startswith(REPLAY_PREFIX):
        if not model.removeprefix(REPLAY_PREFIX).strip():
            raise ConfigError(f"{what}: {model!r} names no path: replay:PATH, a recorded file or folder")
        return
    if not model.startswith(OPENAI_PREFIX):
        raise ConfigError(
            f"{what}: the mini-swe-agent scaffold runs a served model, openai:MODEL@URL (e.g. a checkpoint "
            f"served with vLLM), or replay:PATH; {model!r} is neither"
        )
    parse_model(model, what)


# ---------------------------------------------------------------------------------------------------
# Exit statuses


def is_infrastructure(exit_status: str) -> bool:
    """Whether an instance that ended with `exit_status` has no verdict on the model (see the module)."""
    return exit_status not in MODEL_EXITS


def exit_detail(exit_status: str, settings: Any) -> str:
    """The ledger's words for one of `MODEL_EXITS` (`settings`: the `swe.mini` section)."""
    return {
        "Submitted": "the agent submitted",
        "LimitsExceeded": f"a limit was reached (swe.mini.step_limit={settings.step_limit}, "
        f"swe.mini.cost_limit={settings.cost_limit}) before a submission",
        "TimeExceeded": f"swe.mini.wall_time_limit={settings.wall_time_limit} s passed before a submission",
        "RepeatedFormatError": f"{settings.max_format_errors} replies in a row without exactly one action",
        "ContextWindowExceededError": "the conversation outgrew the model's context before a submission",
    }.get(exit_status, exit_status)


# ---------------------------------------------------------------------------------------------------
# Replays: recorded actions as mini commands and scripted replies


def mini_command(call: ToolCall) -> str:
    """One recorded action as the bash command mini runs for it (see the module); a tool of no
    meaning here is a command that says so and fails, as the project's tools answer it."""
    from environments.tools import TOOL_NAMES, editor_command

    if call.name == "bash" and isinstance(call.arguments.get("command"), str):
        return call.arguments["command"]
    if call.name == "str_replace_editor":
        return editor_command(call.arguments)
    if call.name == "submit":
        return SUBMIT_COMMAND
    message = f"Unknown tool `{call.name}`. The available tools are: {', '.join(TOOL_NAMES)}."
    return f"echo {shlex.quote(message)} >&2; false"


def replay_commands(trajectory: Trajectory) -> list[tuple[str, str]]:
    """(thought, command) per recorded step, ending with a submit (added when the trajectory has none,
    so that a trajectory recorded without one is graded on its changes, as the agent scaffold's
    replay is)."""
    replies = [(step.thought, mini_command(step.action)) for step in trajectory.steps]
    if not replies or replies[-1][1] != SUBMIT_COMMAND:
        replies.append(("The recorded actions are done.", SUBMIT_COMMAND))
    return replies


def scripted_outputs(replies: list[tuple[str, str]], mode: str) -> list[dict[str, Any]]:
    """The replies as mini's deterministic models return them, at no cost: in text mode a THOUGHT and
    one ```mswea_bash_command block (what `litellm_textbased` parses), in tool mode the thought and one
    `bash` tool call (what `litellm` parses), each with its parsed action in `extra`. Pure."""
    outputs = []
    for i, (thought, command) in enumerate(replies):
        extra: dict[str, Any] = {"cost": 0.0, "timestamp": 0.0}
        if mode == "text":
            content = f"THOUGHT: {thought}\n\n```mswea_bash_command\n{command}\n```"
            extra["actions"] = [{"command": command}]
            outputs.append({"role": "assistant", "content": content, "extra": extra})
            continue
        call = {"id": f"call_{i}", "type": "function"}
        call["function"] = {"name": "bash", "arguments": json.dumps({"command": command})}
        extra["actions"] = [{"command": command, "tool_call_id": call["id"]}]
        outputs.append({"role": "assistant", "content": thought, "tool_calls": [call], "extra": extra})
    return outputs


@dataclass
class Replays:
    """`replay:PATH`: the recorded trajectories by instance id (the agent scaffold's reader)."""

    trajectories: dict[str, Trajectory]
    source: str

    @classmethod
    def from_model(cls, model: str) -> Replays:
        """ConfigError naming `--model` when PATH holds no usable trajectory."""
        from srl_agent.policies import PolicyError, ReplayPolicy

        try:
            policy = ReplayPolicy.from_path(model.removeprefix(REPLAY_PREFIX))
        except PolicyError as e:
            raise ConfigError(f"model.name (--model): {e}") from None
        return cls(policy.trajectories, policy.source)

    def check(self, instance_ids: list[str]) -> None:
        """ConfigError naming the first instance no trajectory is held for (before any container)."""
        missing = [iid for iid in instance_ids if iid not in self.trajectories]
        if missing:
            raise ConfigError(
                f"model.name (--model): {REPLAY_PREFIX}{self.source} holds no trajectory for {missing[0]}"
                f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; choose the instances "
                "it has with swe.instance_ids"
            )


# ---------------------------------------------------------------------------------------------------
# mini's configuration


def load_package() -> ModuleType:
    """The `minisweagent` package, or ConfigError naming the extra that installs it. Its banner and
    log lines go to stderr, not stdout (which `--json` keeps for the report), litellm prints no help
    text on errors and reads its price list from the wheel instead of the network."""
    os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
        import minisweagent
    except ImportError as e:
        raise ConfigError(
            f"swe.scaffold: the mini-swe-agent scaffold needs the mini-swe-agent package ({e}): "
            f"pip install -e '.[{EXTRA}]'"
        ) from None
    from rich.console import Console
    from rich.logging import RichHandler

    litellm.suppress_debug_info = True
    mini_log = logging.getLogger("minisweagent")
    mini_log.setLevel(logging.WARNING)
    for handler in mini_log.handlers:
        if isinstance(handler, RichHandler):
            handler.console = Console(stderr=True)
    return minisweagent


def mini_config(cfg: EvalConfig) -> dict[str, Any]:
    """mini's benchmark config for `swe.mini.mode` with the `swe.mini` limits, the project's sandbox
    and working directory over it (see the module)."""
    load_package()
    from minisweagent.config import get_config_from_spec

    from environments.container import docker_run_args

    settings, env_cfg = cfg.swe.mini, cfg.environment
    config = get_config_from_spec(BASE_CONFIGS[settings.mode])
    config["agent"] |= {
        "step_limit": settings.step_limit,
        "cost_limit": settings.cost_limit,
        "wall_time_limit_seconds": settings.wall_time_limit,
        "max_consecutive_format_errors": settings.max_format_errors,
    }
    environment = config["environment"]
    environment |= {
        "cwd": env_cfg.workdir,
        "timeout": settings.command_timeout,
        "run_args": ["--rm", *docker_run_args(env_cfg)],
        "env": {**environment.get("env", {}), "BASH_ENV": "/root/.bashrc"},
    }
    return config


def model_config(
    cfg: EvalConfig, model: str, base: dict[str, Any], replay: Trajectory | None
) -> dict[str, Any]:
    """The `model` section mini's `get_model` takes: the mode's litellm class on the endpoint, or for a
    replay the mode's deterministic model writing `replay`'s actions (with the config's observation
    template, so that the agent sees what it would see from a served model)."""
    mode = cfg.swe.mini.mode
    if replay is not None:
        return {
            "model_class": SCRIPTED_CLASSES[mode],
            "model_name": model,
            "outputs": scripted_outputs(replay_commands(replay), mode),
            "cost_per_call": 0.0,
            "observation_template": base["model"]["observation_template"],
        }
    endpoint = parse_model(model)
    kwargs = base["model"].get("model_kwargs", {})
    return {
        **base["model"],
        "model_class": MODEL_CLASSES[mode],
        "model_name": f"openai/{endpoint.name}",
        "model_kwargs": {
            **kwargs,
            "api_base": endpoint.base_url,
            "api_key": os.environ.get("OPENAI_API_KEY") or "EMPTY",
            **cfg.swe.mini.model_kwargs,
        },
        "cost_tracking": "ignore_errors",
    }


@contextmanager
def api_attempts(attempts: int) -> Iterator[None]:
    """mini's tries per model call (read from the environment at each call) for the block."""
    name = "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT"
    before = os.environ.get(name)
    os.environ[name] = str(attempts)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


# ---------------------------------------------------------------------------------------------------
# One instance


@dataclass
class MiniRun:
    """What mini made of one instance: its exit status, the submission (the patch to grade), the
    ledger's statistics and whether it is an infrastructure error (no verdict on the model)."""

    exit_status: str
    submission: str
    detail: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def infrastructure_error(self) -> bool:
        return is_infrastructure(self.exit_status)


def run_instance(
    cfg: EvalConfig, task: TaskInstance, model: str, out: Path, replay: Trajectory | None = None
) -> MiniRun:
    """Run mini on `task` (see the module) and save its trajectory in the folder `out`. Never raises
    for the image, the engine, the model or mini: an exception is the exit status, as in mini's batch
    mode (and the trajectory, when the agent started, records it with its traceback)."""
    load_package()
    from minisweagent.agents.default import DefaultAgent
    from minisweagent.models import get_model
    from minisweagent.run.benchmarks.swebench import get_sb_environment

    from environments.container import history_script
    from environments.tasks.sources import prepare_image

    iid, started = task.instance_id, time.perf_counter()
    path = out / f"{file_name(iid)}.traj.json"
    path.unlink(missing_ok=True)  # a rerun's trajectory is its own
    config = mini_config(cfg)
    agent = env = None
    extra: dict[str, Any] = {}
    try:
        mini_model = get_model(config=model_config(cfg, model, config, replay))
        instance = {"instance_id": iid, "problem_statement": task.problem_statement}
        instance["image_name"] = prepare_image(task, cfg.environment)
        env = get_sb_environment(config, instance)
        if cfg.environment.hide_history:
            hide = {"command": history_script(cfg.environment.workdir, prune=True)}
            hidden = env.execute(hide, timeout=HISTORY_TIMEOUT)
            if hidden["returncode"] != 0:
                raise RuntimeError(f"hiding the git history failed: {hidden['output'][-500:]}")
        agent = DefaultAgent(mini_model, env, **config["agent"])
        info = agent.run(task.problem_statement)
        exit_status, submission = info.get("exit_status") or "", info.get("submission") or ""
        detail = exit_detail(exit_status, cfg.swe.mini)
    except Exception as e:  # the exception's name is the exit status, as in mini's batch mode
        log.warning("mini-swe-agent on %s ended by %s", iid, type(e).__name__, exc_info=True)
        exit_status, submission = type(e).__name__, ""
        detail = f"{exit_status}: {str(e)[:300]}"
        if exit_status in MODEL_EXITS:  # the context window, which litellm raises
            detail = exit_detail(exit_status, cfg.swe.mini)
        extra = {"traceback": traceback.format_exc(), "exception_str": str(e)}
    finally:
        if env is not None:
            env.cleanup()
    stats: dict[str, Any] = {"exit_status": exit_status, "detail": detail}
    if agent is not None:
        info = {"exit_status": exit_status, "submission": submission, **extra}
        agent.save(path, {"info": info, "instance_id": iid})
        messages = agent.messages
        stats |= {
            "api_calls": agent.n_calls,
            "format_errors": sum(m.get("extra", {}).get("interrupt_type") == "FormatError" for m in messages),
            "cost": agent.cost,
        }
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return MiniRun(exit_status, submission, detail, stats)
