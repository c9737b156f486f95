"""The mini-swe-agent scaffold: `openai:MODEL@URL` parsed into an endpoint, mini's exit statuses split
into the model's verdicts and infrastructure errors, recorded actions turned into mini commands and
into replies its own parsers read back, its config with our limits and sandbox over its swebench.yaml,
the missing extra named; and end to end in real containers (mini-swe-agent's own agent, environment
and deterministic models): the experts' actions replayed resolve every bundled task in tool mode and
one in text mode (graded by the official harness), each trajectory saved where our reader parses it;
a served model acts through litellm (a stand-in OpenAI-compatible server) in both modes; a replay cut
by the step limit is graded with its exit status, in the project's sandbox; a model server that
does not answer is an infrastructure error, redone by a rerun."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from chat_server import ChatServer, free_url

from environments.tasks.bundled import get_task
from environments.tools import editor_command
from srl_agent import evaluate
from srl_agent.eval import swe
from srl_agent.eval.mini_swe_agent import (
    MODEL_EXITS,
    SUBMIT_COMMAND,
    Replays,
    check_model,
    is_infrastructure,
    load_package,
    mini_command,
    replay_commands,
    scripted_outputs,
)
from trajectories.config import ConfigError
from trajectories.record import Step, ToolCall, Trajectory, write_jsonl
from trajectories.sources import read_source

REPO = Path(__file__).resolve().parents[2]
PAGINATE = "srl-agent__paginate-1"


def need_mini() -> None:
    """Skip where the `scaffolds` extra is missing (the reason names it); imported as the scaffold
    imports it (`load_package`: mini's banner off)."""
    try:
        load_package()
    except ConfigError as e:
        pytest.skip(str(e))


def config(*overrides: str, model: str = "replay:environments/tasks"):
    args = ["--task", "swe", "--instances", "--scaffold", "mini-swe-agent", "--model", model]
    return evaluate.parse_args([*args, *overrides])[1]


# ---------------------------------------------------------------------------------------------------
# Model strings and exit statuses


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("openai:my-model", "is not openai:MODEL@URL"),
        ("openai:@http://127.0.0.1:8000/v1", "names no model before the @"),
        ("openai:m@ftp://host/v1", "is not an http:// or https:// address"),
        ("smollm2-135m", "runs a served model, openai:MODEL@URL"),
        ("replay:", "names no path"),
    ],
)
def test_a_model_string_the_scaffold_cannot_run_is_refused_naming_the_flag(model, says):
    with pytest.raises(ConfigError, match=rf"model\.name \(--model\).*{says}"):
        config(model=model)
    with pytest.raises(ConfigError):
        check_model(model)


def test_engines_of_the_pool_are_refused_since_mini_runs_the_docker_cli_on_the_default_one():
    with pytest.raises(ConfigError, match="environment.docker_hosts: the mini-swe-agent scaffold"):
        config('environment.docker_hosts=[{url: "tcp://h:2375", capacity: 2}]')


def test_a_served_model_and_a_replay_are_taken():
    for model in ("openai:m@http://127.0.0.1:8000/v1", "replay:environments/tasks"):
        assert config(model=model).swe.scaffold == "mini-swe-agent"


def test_the_models_exits_are_verdicts_and_every_exception_is_an_infrastructure_error():
    assert MODEL_EXITS == {
        "Submitted", "LimitsExceeded", "TimeExceeded", "RepeatedFormatError", "ContextWindowExceededError",
    }  # fmt: skip
    assert not any(is_infrastructure(status) for status in MODEL_EXITS)
    for exception in ("APIConnectionError", "InternalServerError", "Timeout", "ServiceUnavailableError",
                      "CalledProcessError", "TimeoutExpired", "ImageMissing", "RuntimeError", "IndexError"):  # fmt: skip
        assert is_infrastructure(exception)


def test_the_scaffold_keeps_its_own_folders_and_its_settings_in_the_run_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config("swe.mini.step_limit=7", "swe.mini.mode=text")
    settings = swe.run_settings(cfg)
    assert settings["scaffold"] == "mini-swe-agent" and settings["oracle_max_new_tokens"] is None
    assert settings["mini"]["step_limit"] == 7 and settings["mini"]["mode"] == "text"
    agent = evaluate.parse_args(["--task", "swe", "--instances", "--model", "replay:x"])[1]
    assert "mini" not in swe.run_settings(agent)  # the other scaffolds' folders resume as before
    out = swe.output_dir(cfg)
    assert out == Path("runs/eval-swe-mini-swe-agent/replay_environments_tasks") and (out / "mini").is_dir()


# ---------------------------------------------------------------------------------------------------
# Replays: recorded actions as mini commands


def test_recorded_actions_become_the_commands_mini_runs_and_a_submit_is_added_when_missing():
    view = ToolCall("str_replace_editor", {"command": "view", "path": "/testbed/a.py"})
    assert mini_command(ToolCall("bash", {"command": "ls -a"})) == "ls -a"
    assert mini_command(view) == editor_command(view.arguments)
    assert mini_command(ToolCall("submit")) == SUBMIT_COMMAND
    unknown = mini_command(ToolCall("browse", {"url": "x"}))
    run = subprocess.run(["bash", "-c", unknown], check=False, capture_output=True, text=True)
    assert run.returncode == 1 and "Unknown tool `browse`" in run.stderr

    steps = [Step(thought="look", action=ToolCall("bash", {"command": "ls"}), observation="a.py")]
    assert replay_commands(Trajectory(task="t", steps=steps)) == [
        ("look", "ls"),
        ("The recorded actions are done.", SUBMIT_COMMAND),
    ]
    submitted = [*steps, Step(thought="done", action=ToolCall("submit"))]
    assert replay_commands(Trajectory(task="t", steps=submitted))[-1] == ("done", SUBMIT_COMMAND)


def test_the_editor_command_edits_a_file_in_any_bash_with_a_python3(tmp_path):
    target = tmp_path / "a.py"
    target.write_text("x = 1\n")
    call = {"command": "str_replace", "path": str(target), "old_str": "x = 1", "new_str": "x = 'it''s'"}
    run = subprocess.run(["bash", "-c", editor_command(call)], check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert target.read_text() == "x = 'it''s'\n"


def test_scripted_replies_are_read_back_by_minis_own_parsers():
    need_mini()
    from minisweagent.models.litellm_textbased_model import LitellmTextbasedModelConfig
    from minisweagent.models.utils.actions_text import parse_regex_actions
    from minisweagent.models.utils.actions_toolcall import parse_toolcall_actions

    replies = [("look around", "ls -a\ncat 'x'"), ("done", SUBMIT_COMMAND)]
    regex = LitellmTextbasedModelConfig.model_fields["action_regex"].default
    for output, (_, command) in zip(scripted_outputs(replies, "text"), replies, strict=True):
        assert parse_regex_actions(output["content"], action_regex=regex, format_error_template="") == [
            {"command": command}
        ]
        assert output["extra"]["actions"] == [{"command": command}] and output["extra"]["cost"] == 0.0
    for output in scripted_outputs(replies, "tool"):
        calls = [SimpleNamespace(id=c["id"], function=SimpleNamespace(**c["function"])) for c in output["tool_calls"]]  # fmt: skip
        assert parse_toolcall_actions(calls, format_error_template="") == output["extra"]["actions"]


# ---------------------------------------------------------------------------------------------------
# mini's configuration


def test_minis_swebench_config_gets_our_limits_sandbox_and_workdir():
    need_mini()
    from environments.container import docker_run_args
    from srl_agent.eval.mini_swe_agent import mini_config, model_config

    cfg = config(
        "swe.mini.step_limit=5", "swe.mini.command_timeout=9", "swe.mini.wall_time_limit=30",
        "environment.memory=1g", "environment.network=true",
    )  # fmt: skip
    made = mini_config(cfg)
    assert made["agent"]["step_limit"] == 5 and made["agent"]["wall_time_limit_seconds"] == 30
    assert "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT" in made["agent"]["instance_template"]
    environment = made["environment"]
    assert environment["cwd"] == "/testbed" and environment["timeout"] == 9
    assert environment["env"]["BASH_ENV"] == "/root/.bashrc"
    assert environment["run_args"] == ["--rm", *docker_run_args(cfg.environment)]
    flags = environment["run_args"]
    assert flags[flags.index("--memory") + 1] == "1g" and flags[flags.index("--network") + 1] == "bridge"
    assert "--cap-drop" in flags and "srl-agent.managed=1" in flags

    served = model_config(cfg, "openai:Qwen/Q@http://h:8000/v1", made, None)
    assert served["model_class"] == "litellm" and served["model_name"] == "openai/Qwen/Q"
    assert (
        served["model_kwargs"]["api_base"] == "http://h:8000/v1"
        and served["model_kwargs"]["temperature"] == 0
    )
    assert served["model_kwargs"]["drop_params"] is True and served["cost_tracking"] == "ignore_errors"
    text = config("swe.mini.mode=text", "swe.mini.model_kwargs.max_tokens=64")
    served = model_config(text, "openai:m@http://h:8000/v1", mini_config(text), None)
    assert served["model_class"] == "litellm_textbased" and served["model_kwargs"]["max_tokens"] == 64
    assert "mswea_bash_command" in mini_config(text)["agent"]["instance_template"]


def test_a_missing_extra_is_one_message_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "minisweagent", None)
    with pytest.raises(
        ConfigError, match=r"needs the mini-swe-agent package.*pip install -e '\.\[scaffolds\]'"
    ):
        load_package()


def test_a_replay_without_an_instances_trajectory_is_refused_naming_it(monkeypatch):
    monkeypatch.chdir(REPO)
    replays = Replays.from_model(f"replay:{get_task(PAGINATE).expert_trajectory}")
    replays.check([PAGINATE])
    with pytest.raises(ConfigError, match="holds no trajectory for srl-agent__intervals-1 and 1 more"):
        replays.check([PAGINATE, "srl-agent__intervals-1", "srl-agent__configlite-1"])
    with pytest.raises(ConfigError, match=r"model\.name \(--model\): replay:no/such: no such file"):
        Replays.from_model("replay:no/such")


# ---------------------------------------------------------------------------------------------------
# End to end in real containers


def run_eval(*args: str) -> dict:
    """The report `evaluate --json` prints on stdout (nothing else goes there: mini's banner and logs
    go to stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main(["--task", "swe", "--scaffold", "mini-swe-agent", "--json", *args]) == 0
    return json.loads(out.getvalue())


def ledger_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def read_trajectory(path: Path) -> Trajectory:
    """A saved mini trajectory through our reader (it must detect the format and parse every step)."""
    result = read_source(path)
    assert result.skipped == [] and result.formats == {"minisweagent": 1}
    return result.items[0]


@pytest.mark.docker
def test_expert_replays_resolve_every_bundled_task_and_their_trajectories_read_back(tmp_path, monkeypatch):
    need_mini()
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    args = ["--instances", "--model", "replay:environments/tasks", "--grader", "fast", "--out", str(out)]
    report = run_eval(*args)
    assert report["total"] == 3 and report["resolved"] == 3 and report["exit_statuses"] == {"Submitted": 3}
    assert report["episodes"]["count"] == 3 and report["episodes"]["format_errors_mean"] == 0
    patches = {
        p["instance_id"]: p["model_patch"]
        for p in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
    }
    for iid in report["instances"]:
        expert = read_source(get_task(iid).expert_trajectory).items[0]
        traj = read_trajectory(out / "mini" / f"{iid}.traj.json")
        assert traj.instance_id == iid and traj.exit_status == "Submitted"
        assert traj.final_patch == patches[iid] and patches[iid].startswith("diff --git")
        assert [s.action.name for s in traj.steps][-1] == "submit" and len(traj.steps) == len(expert.steps)
        for step, recorded in zip(traj.steps, expert.steps, strict=True):  # the same program edits alike
            if recorded.action.name == "str_replace_editor":
                assert step.observation.startswith("<returncode>0</returncode>\n<output>\n")
                assert (
                    step.observation.split("<output>\n", 1)[1].removesuffix("</output>")
                    == recorded.observation
                )
        saved = json.loads((out / "mini" / f"{iid}.traj.json").read_text())
        assert saved["trajectory_format"] == "mini-swe-agent-1.1" and saved["info"]["mini_version"] == "2.4.6"
        assert saved["messages"][2]["tool_calls"] and saved["messages"][3]["role"] == "tool"
    before = len(ledger_rows(out))
    assert run_eval(*args)["resolved"] == 3 and len(ledger_rows(out)) == before  # a rerun redoes nothing


@pytest.mark.docker
def test_in_text_mode_the_replay_writes_command_blocks_and_the_harness_resolves_it(tmp_path, monkeypatch):
    need_mini()
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    report = run_eval("--instances", "--model", "replay:environments/tasks", "--grader", "harness",
                      "--out", str(out), f"swe.instance_ids=[{PAGINATE}]", "swe.mini.mode=text")  # fmt: skip
    assert report["instances"] == {PAGINATE: "resolved"} and report["grader"] == "harness"
    saved = json.loads((out / "mini" / f"{PAGINATE}.traj.json").read_text())
    assert (
        "```mswea_bash_command" in saved["messages"][2]["content"] and saved["messages"][3]["role"] == "user"
    )
    assert saved["info"]["config"]["model_type"].endswith("DeterministicModel")
    assert read_trajectory(out / "mini" / f"{PAGINATE}.traj.json").exit_status == "Submitted"


PROBES = ["pwd", "ls /sys/class/net", "python --version", "git status --short", "echo $BASH_ENV"]


@pytest.mark.docker
def test_a_replay_cut_by_the_step_limit_is_graded_with_its_exit_status_in_our_sandbox(tmp_path, monkeypatch):
    """The probes run where the project's environments run: /testbed, no network but loopback, the
    image's python on PATH, a clean checkout; they never submit, so the step limit ends the run and,
    as in mini's batch mode, nothing is submitted: an empty patch, the model's verdict."""
    need_mini()
    monkeypatch.chdir(REPO)
    steps = [
        Step(thought=f"probe {i}", action=ToolCall("bash", {"command": c})) for i, c in enumerate(PROBES)
    ]
    task = get_task(PAGINATE)
    write_jsonl(
        [Trajectory(task=task.problem_statement, steps=steps, instance_id=PAGINATE)], tmp_path / "p.jsonl"
    )
    out = tmp_path / "eval"
    report = run_eval("--instances", "environments/tasks/paginate", "--model", f"replay:{tmp_path / 'p.jsonl'}",
                      "--grader", "fast", "--out", str(out), f"swe.mini.step_limit={len(PROBES)}")  # fmt: skip
    assert report["instances"] == {PAGINATE: "empty_patch"} and report["infrastructure_error"] == 0
    assert report["exit_statuses"] == {"LimitsExceeded": 1}
    assert "swe.mini.step_limit=5" in ledger_rows(out)[0]["detail"]
    traj = read_trajectory(out / "mini" / f"{PAGINATE}.traj.json")
    assert traj.exit_status == "LimitsExceeded" and traj.final_patch == "" and len(traj.steps) == len(PROBES)
    seen = [s.observation.split("<output>\n", 1)[1] for s in traj.steps]
    assert seen[0].startswith("/testbed\n") and seen[1].startswith("lo\n")
    assert seen[2].startswith("Python 3") and seen[3].startswith("</output>") and "/root/.bashrc" in seen[4]


@pytest.mark.docker
def test_a_model_server_that_does_not_answer_is_an_infrastructure_error_redone_on_a_rerun(
    tmp_path, monkeypatch
):
    need_mini()
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    args = ["--instances", "--model", f"openai:m@{free_url()}", "--grader", "fast",
            "--out", str(out), f"swe.instance_ids=[{PAGINATE}]", "swe.mini.api_attempts=1"]  # fmt: skip
    report = run_eval(*args)
    assert report["instances"] == {PAGINATE: "infrastructure_error"} and report["resolve_rate_all"] == 0
    (status,) = report["exit_statuses"]
    assert status in ("APIConnectionError", "InternalServerError") and is_infrastructure(status)
    assert "Connection error" in report["instance_details"][PAGINATE]["detail"]
    assert not (out / "predictions.jsonl").exists()  # nothing to grade
    saved = json.loads((out / "mini" / f"{PAGINATE}.traj.json").read_text())
    assert saved["info"]["exit_status"] == status and "traceback" in saved["info"]
    run_eval(*args)
    assert [r["status"] for r in ledger_rows(out)] == ["infrastructure_error"] * 2  # redone, not kept


def scripted_replies(commands: list[str], mode: str) -> Callable[[dict], dict]:
    """A chat server's answers: each request gets the next of `commands`, as a `bash` tool call, or in
    text mode as a command block."""
    replies = enumerate(commands)

    def answer(body: dict) -> dict:
        n, command = next(replies)
        reply: dict = {"content": f"```mswea_bash_command\n{command}\n```", "finish_reason": "stop"}
        if mode == "tool":
            function = {"name": "bash", "arguments": json.dumps({"command": command})}
            reply["tool_calls"] = [{"id": f"c{n}", "type": "function", "function": function}]
        return reply

    return answer


@pytest.mark.docker
@pytest.mark.parametrize("mode", ["tool", "text"])
def test_a_served_model_acts_through_litellm_and_its_submission_is_graded(mode, tmp_path, monkeypatch):
    """The real model path: litellm's `openai/MODEL` against an OpenAI-compatible server (here one that
    writes the gold patch, then submits), the replies parsed by mini, the patch graded."""
    need_mini()
    monkeypatch.chdir(REPO)
    gold = get_task(PAGINATE).gold_patch
    commands = [f"git apply - <<'__GOLD__'\n{gold}__GOLD__", SUBMIT_COMMAND]
    with ChatServer(scripted_replies(commands, mode), "served/m") as server:
        report = run_eval("--instances", "--model", server.model_string("served/m"), "--grader", "fast",
                          "--out", str(tmp_path / "eval"), f"swe.instance_ids=[{PAGINATE}]",
                          f"swe.mini.mode={mode}")  # fmt: skip
    assert report["instances"] == {PAGINATE: "resolved"} and report["exit_statuses"] == {"Submitted": 1}
    assert len(server.requests) == 2
    first = server.requests[0]
    assert first["model"] == "served/m" and first["temperature"] == 0
    assert ("tools" in first) == (mode == "tool")
    assert "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT" in first["messages"][1]["content"]
    traj = read_trajectory(tmp_path / "eval" / "mini" / f"{PAGINATE}.traj.json")
    assert traj.final_patch == gold and [s.action.name for s in traj.steps] == ["bash", "submit"]
