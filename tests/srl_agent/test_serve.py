"""`python -m srl_agent.serve CHECKPOINT`: the vLLM command it builds for a run's checkpoint folder, for a
LoRA checkpoint (merged once into a cache folder) and for the embedded default (its converted folder),
with the tokenizer's chat template, the served name and the context length; and, with vLLM installed,
the embedded default served for real and the agent scaffold acting on a bundled task through it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from chat_server import free_url

from srl_agent import evaluate, lora, serve
from srl_agent.config import LoRAConfig
from srl_agent.models import ensure_converted, tiny_model_and_tokenizer
from trajectories.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
ON_CPU = "float32"  # these machines have no CUDA GPU; with one, `auto` is bfloat16


def dry_run(*argv: str) -> list[str]:
    """The lines `serve --dry-run` prints: [comments...], the command, the model string."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # after a `--` too: never a server started by a dry run
        assert serve.main([*argv, "--dry-run"]) == 0
    return out.getvalue().splitlines()


def flags(command: str) -> dict[str, str]:
    words = shlex.split(command)
    return {w: words[i + 1] for i, w in enumerate(words) if w.startswith("--") and i + 1 < len(words)}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A run's checkpoint folder as the trainer saves one (a tiny model and its ChatML tokenizer)."""
    model, tokenizer = tiny_model_and_tokenizer()
    folder = tmp_path / "runs" / "swe-srl" / "checkpoints" / "best"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_checkpoint_folder_is_served_with_its_template_name_and_context(checkpoint, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    command, model = dry_run(str(checkpoint), "--port", "8123")
    words = shlex.split(command)
    assert words[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert flags(command) == {
        "--model": str(checkpoint),
        "--served-model-name": "swe-srl-best",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--dtype": ON_CPU,
        "--chat-template": str(checkpoint / "chat_template.jinja"),
        "--generation-config": "vllm",
        "--max-model-len": "4096",  # the tiny model's max_position_embeddings
        "--kv-cache-memory-bytes": str(2 * 2**30),  # not 92% of the host's memory, which a busy one lacks
    }
    assert "im_start" in (checkpoint / "chat_template.jinja").read_text()  # the template it was trained with
    assert model == "openai:swe-srl-best@http://127.0.0.1:8123/v1"
    command, model = dry_run(str(checkpoint), "--name", "mine", "--host", "0.0.0.0", "--", "--seed", "3")
    assert flags(command)["--served-model-name"] == "mine" and command.endswith("--seed 3")
    assert model == "openai:mine@http://127.0.0.1:8000/v1"  # a server on every address is asked locally
    for sized in (["--gpu-memory-utilization", "0.5"], ["--kv-cache-memory-bytes=1000000000"]):
        command, _ = dry_run(str(checkpoint), "--", *sized)  # the user's own sizing, and no other
        assert command.count("--kv-cache-memory-bytes") + command.count("--gpu-memory-utilization") == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "--kv-cache-memory-bytes" not in dry_run(str(checkpoint))[0]  # a GPU's memory fraction is vLLM's


def test_a_template_kept_in_the_tokenizer_config_is_written_to_a_file(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SRL_AGENT_CACHE", str(tmp_path / "cache"))
    template = (checkpoint / "chat_template.jinja").read_text()
    (checkpoint / "chat_template.jinja").unlink()
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    planned = serve.plan(str(checkpoint))
    assert planned.chat_template.parent == tmp_path / "cache" / "served" / "templates"
    planned.prepare()
    assert planned.chat_template.read_text() == template
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="tokenizer has no chat template"):
        serve.plan(str(checkpoint))


def test_a_lora_checkpoint_is_merged_once_into_a_cache_folder_and_that_is_served(tmp_path, monkeypatch):
    monkeypatch.setenv("SRL_AGENT_CACHE", str(tmp_path / "cache"))
    base, tokenizer = tiny_model_and_tokenizer()
    adapter = tmp_path / "runs" / "swe-lora" / "checkpoints" / "last"
    lora.save(lora.add_adapter(base, LoRAConfig(r=2, alpha=4), "tiny-random"), adapter)
    tokenizer.save_pretrained(adapter)
    comment, command, model = dry_run(str(adapter))
    merged = Path(flags(command)["--model"])
    assert (
        comment == f"# merges {adapter} into {merged} first" and not merged.exists()
    )  # a dry run merges nothing
    assert merged.parent == tmp_path / "cache" / "served" and merged.name.startswith("swe-lora-last-")
    assert flags(command)["--chat-template"] == str(adapter / "chat_template.jinja")
    assert "--max-model-len" not in command  # tiny-random has no config to read before the merge
    assert model == "openai:swe-lora-last@http://127.0.0.1:8000/v1"

    planned = serve.plan(str(adapter))
    planned.prepare()
    assert (merged / "config.json").is_file() and not lora.is_adapter_folder(merged)
    assert planned.max_model_len == 4096 and "--max-model-len" in planned.command()
    stamp = (merged / serve.MERGED_MARKER).stat().st_mtime_ns
    serve.plan(str(adapter)).prepare()
    assert (merged / serve.MERGED_MARKER).stat().st_mtime_ns == stamp  # merged once


def test_what_is_no_model_is_refused_naming_it(tmp_path, capsys):
    from trajectories.config import run_cli

    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: serve.main([str(tmp_path), "--dry-run"]))
    assert exit_.value.code == 2
    assert f"error: CHECKPOINT: {tmp_path} is no model folder (no config.json)" in capsys.readouterr().err


def test_a_dry_run_of_the_embedded_default_names_its_conversion_and_converts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SRL_AGENT_CACHE", str(tmp_path / "cache"))
    comment, command, model = dry_run("smollm2-135m", "--dtype", "float32")
    folder = tmp_path / "cache" / "models" / "smollm2-135m"
    assert comment == f"# converts smollm2-135m into {folder} first" and not folder.exists()
    assert flags(command)["--model"] == str(folder) and "--max-model-len" not in command
    assert flags(command)["--chat-template"] == str(folder / "chat_template.jinja")
    assert model == "openai:smollm2-135m@http://127.0.0.1:8000/v1"


@pytest.mark.slow
def test_the_embedded_default_is_served_from_its_converted_folder():
    folder = ensure_converted("smollm2-135m")  # converted once, ~40 s, when the cache lacks it
    command, model = dry_run("smollm2-135m", "--port", "8001", "--dtype", "float32")
    assert flags(command)["--model"] == str(folder) and flags(command)["--max-model-len"] == "8192"
    assert flags(command)["--chat-template"] == str(folder / "chat_template.jinja")
    assert model == "openai:smollm2-135m@http://127.0.0.1:8001/v1"


# -- served for real ---------------------------------------------------------------------------------------


def wait_for(url: str, server: subprocess.Popen, seconds: float) -> float:
    """Seconds until `GET url` answers; fails when the server exits or `seconds` pass first."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if server.poll() is not None:
            pytest.fail(f"the server exited with status {server.returncode} before it answered")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as answer:
            if answer.status == 200:
                return time.monotonic() - started
        time.sleep(2)
    pytest.fail(f"the server did not answer {url} within {seconds:.0f} s")


@pytest.mark.vllm
@pytest.mark.docker
@pytest.mark.slow
def test_the_served_default_model_acts_as_an_agent_on_a_bundled_task(tmp_path, monkeypatch):
    """vLLM's server on the embedded default, then on one bundled task through `openai:` the agent
    scaffold and mini-swe-agent's own agent (text mode: this server parses no tool calls): whatever the
    small model does, each run ends with a normal exit status (the server answered every call), the
    agent's with the server's token counts."""
    monkeypatch.chdir(REPO)
    port = int(free_url().rsplit(":", 1)[1].split("/")[0])
    log = tmp_path / "serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "srl_agent.serve", "smollm2-135m", "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO,
        )  # fmt: skip
    try:
        up = wait_for(f"http://127.0.0.1:{port}/v1/models", server, 360)
        model = next(line for line in log.read_text().splitlines() if line.startswith("openai:"))
        assert model == f"openai:smollm2-135m@http://127.0.0.1:{port}/v1"
        started = time.monotonic()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert evaluate.main(["--task", "swe", "--json", "--instances", "--model", model, "--grader", "fast",
                                  "--out", str(tmp_path / "eval"), "swe.instance_ids=[srl-agent__paginate-1]",
                                  "agent.max_steps=3", "generation.max_new_tokens=64"]) == 0  # fmt: skip
        report = json.loads(out.getvalue())
        print(
            f"server up after {up:.0f} s; the episode and its grading took {time.monotonic() - started:.0f} s"
        )
        mini = io.StringIO()
        if importlib.util.find_spec("minisweagent") is not None:  # the scaffolds extra (setup.sh installs it)
            with contextlib.redirect_stdout(mini):
                assert evaluate.main(["--task", "swe", "--json", "--instances", "--model", model, "--grader", "fast",
                                      "--scaffold", "mini-swe-agent", "--out", str(tmp_path / "mini"),
                                      "swe.instance_ids=[srl-agent__paginate-1]", "swe.mini.mode=text",
                                      "swe.mini.step_limit=3", 'swe.mini.model_kwargs={"temperature": 0.0, "max_tokens": 128}',
                                      ]) == 0  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its engine process
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
    detail = report["instance_details"]["srl-agent__paginate-1"]
    assert report["infrastructure_error"] == 0, (detail, log.read_text()[-3000:])
    assert set(report["exit_statuses"]) <= {"submitted", "step_limit", "format_errors", "context_limit"}, (
        detail
    )
    assert report["episodes"]["prompt_tokens_mean"] > 0 and report["episodes"]["completion_tokens_mean"] > 0
    if mini.getvalue():
        by_mini = json.loads(mini.getvalue())
        assert by_mini["infrastructure_error"] == 0, by_mini["instance_details"]
        assert set(by_mini["exit_statuses"]) <= {"Submitted", "LimitsExceeded", "RepeatedFormatError",
                                                 "ContextWindowExceededError"}, by_mini["instance_details"]  # fmt: skip
        trajectory = tmp_path / "mini" / "mini" / "srl-agent__paginate-1.traj.json"
        assert json.loads(trajectory.read_text())["messages"], "mini's trajectory holds the conversation"
