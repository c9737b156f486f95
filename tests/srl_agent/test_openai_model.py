"""`--model openai:MODEL@URL`: a model behind an OpenAI-compatible chat API, against a local server that
speaks it (`tests/chat_server.py`, scripted replies). The model string's forms; the client's retries
and errors; the requests each scaffold sends (the SRL stage's messages, the stop string, temperature 0,
the prefill continued); the context limit; a server that fails or is gone giving infrastructure errors
(never unresolved) after a few fast retries; the oracle and agentless scaffolds and the math benchmarks
on scripted replies; and, in real containers, the agent scaffold replaying the experts' actions as
chat replies resolving every bundled task, after a first run whose server failed is redone."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
from pathlib import Path

import pytest
from chat_server import DROP, ChatServer, Failure, free_url

from environments.chat_api import (
    ChatAPIConfig,
    ChatAPIError,
    ChatClient,
    ChatModel,
    Choice,
    ContextTooLong,
    kept_stop,
    parse_model,
)
from environments.replay import load_trajectory
from environments.tasks.bundled import get_task, load_tasks
from srl_agent import evaluate
from srl_agent.agent import next_example, parse_turn, run_episode
from srl_agent.config import AgentConfig, EvalConfig, GenerationConfig, PromptConfig
from srl_agent.eval import agentless, oracle, swe
from srl_agent.eval.math_bench import evaluate_benchmarks
from srl_agent.eval.search_replace import edits_from_patch
from srl_agent.policies import make_policy
from srl_agent.prompts import SWE_SYSTEM, messages, swe_user_turn
from srl_agent.remote import RemoteChat, RemotePolicy
from srl_agent.tasks import SWE
from trajectories.actions import render_action
from trajectories.build import BuildConfig
from trajectories.config import ConfigError
from trajectories.ledger import Ledger
from trajectories.record import ToolCall, Trajectory

REPO = Path(__file__).resolve().parents[2]
PREFILL = PromptConfig().prefill
FAST = ["api.retries=2", "api.backoff=0.01", "api.timeout=5"]
"""Three tries, at once: the failure tests take well under a second."""
FAST_API = ChatAPIConfig(retries=2, backoff=0.01, timeout=5)
GENERATION = GenerationConfig(stop=list(SWE.stop), stop_at_step_end=False, max_new_tokens=SWE.max_new_tokens)
CALL = "<function=bash>\n<parameter=command>ls</parameter>\n</function>"


class NoEnvironment:
    """An episode's environment where nothing may run: the policy's turns end the episode first."""

    def diff(self) -> str:
        return ""

    def __getattr__(self, name: str):
        raise AssertionError(f"the environment was used: {name}")


def first_example():
    """The first step example of an episode of a bundled task, as the agent loop makes it."""
    task = get_task("srl-agent__paginate-1")
    issue = AgentConfig().instance_template.replace("{problem_statement}", task.problem_statement)
    return next_example(Trajectory(task=issue, steps=[], instance_id=task.instance_id), BuildConfig())


def episode_of(policy, agent: AgentConfig | None = None):
    task = get_task("srl-agent__paginate-1")
    return run_episode(
        policy, NoEnvironment(), task.problem_statement, task.instance_id, agent or AgentConfig()
    )


def swe_config(*args: str) -> EvalConfig:
    return evaluate.parse_args(["--task", "swe", "--instances", *args])[1]


# -- the model string -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "url"),
    [
        ("openai:smol@http://127.0.0.1:8000/v1", "smol", "http://127.0.0.1:8000/v1"),
        ("openai:Qwen/Qwen2.5-Coder-7B-Instruct@https://api.example.com/v1/", "Qwen/Qwen2.5-Coder-7B-Instruct",
         "https://api.example.com/v1"),
        ("openai:gemini-2.0@https://host/v1beta/openai", "gemini-2.0", "https://host/v1beta/openai"),
    ],
)  # fmt: skip
def test_the_model_string_names_the_served_model_and_the_apis_base(text, name, url):
    assert parse_model(text) == ChatModel(name, url) and str(parse_model(text)) == text.rstrip("/")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("openai:", "is not openai:MODEL@URL"),
        ("openai:smol", "is not openai:MODEL@URL"),
        ("openai:@http://127.0.0.1:8000/v1", "names no model before the @"),
        ("openai:smol@127.0.0.1:8000/v1", "is not an http:// or https:// address with a host"),
        ("openai:smol@http:///v1", "is not an http:// or https:// address with a host"),
        ("openai:smol@http://127.0.0.1:8000", "has no path: give the API's base, such as http://127.0.0.1:8000/v1"),
        ("openai:smol@http://127.0.0.1:8000/v1/chat/completions", "is an endpoint"),
    ],
)  # fmt: skip
def test_a_bad_model_string_is_a_config_error_naming_the_flag(text, says):
    with pytest.raises(ConfigError, match=r"^model.name \(--model\): .*" + re.escape(says)):
        parse_model(text)
    with pytest.raises(ConfigError, match=r"^model.name \(--model\): .*" + re.escape(says)):
        swe_config("--model", text)  # refused by the command line, before anything loads


def test_the_held_out_step_reward_and_loading_refuse_a_model_behind_an_api():
    model = "openai:smol@http://127.0.0.1:8000/v1"
    with pytest.raises(ConfigError, match="answers the SWE scaffolds .* the held-out step reward needs"):
        evaluate.parse_args(["--task", "swe", "--model", model])
    from srl_agent.models import load_model_and_tokenizer

    with pytest.raises(ConfigError, match="model.init_from: openai:smol@.* is a model behind a chat API"):
        load_model_and_tokenizer(model, key="model.init_from")


# -- the client ------------------------------------------------------------------------------------------


def test_a_stop_string_the_api_dropped_is_put_back_where_it_ended_the_completion():
    stop = ["</function>"]
    assert (
        kept_stop(Choice("<function=x>\n", "stop", "</function>", True), stop) == "<function=x>\n</function>"
    )
    assert kept_stop(Choice("done", "stop", None, True), stop) == "done"  # the end of the turn
    assert kept_stop(Choice("cut", "length", None, True), stop) == "cut"
    assert kept_stop(Choice("<function=x>\n", "stop"), stop) == "<function=x>\n</function>"  # a hosted API
    assert kept_stop(Choice("a", "stop"), ["x", "y"]) == "a"  # which of two: unknown
    assert kept_stop(Choice("<function=x></function>", "stop", "</function>", True), stop).count("</") == 1


def test_the_client_retries_5xx_and_dropped_connections_then_answers():
    script = [RuntimeError("busy"), DROP, "ok"]

    def answer(body: dict):
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    with ChatServer(answer, "m") as server:
        client = ChatClient(ChatModel("m", server.base_url), FAST_API)
        reply = client.complete([{"role": "user", "content": "hi there"}], max_tokens=5, temperature=0.0)
        assert [c.text for c in reply.choices] == ["ok"] and len(server.requests) == 3
        assert (reply.prompt_tokens, reply.completion_tokens) == (2, 1)
        assert server.requests[0] == {"model": "m", "messages": [{"role": "user", "content": "hi there"}],
                                      "temperature": 0.0, "max_tokens": 5}  # fmt: skip


def test_a_4xx_is_not_retried_and_a_context_refusal_gives_the_servers_numbers():
    vllm_says = (
        "This model's maximum context length is 4096 tokens. However, your prompt contains 5000 input "
        "tokens, which exceeds this limit even without any output tokens."
    )
    errors = iter([Failure(401, "bad key"), Failure(400, vllm_says), Failure(400, "no such parameter")])

    def answer(body: dict):
        raise next(errors)

    with ChatServer(answer, "m") as server:
        client = ChatClient(ChatModel("m", server.base_url), FAST_API)
        ask = [{"role": "user", "content": "x"}]
        with pytest.raises(ChatAPIError, match=r"HTTP 401: bad key$") as refused:
            client.complete(ask, max_tokens=5, temperature=0.0)
        assert refused.value.status == 401 and not isinstance(refused.value, ContextTooLong)
        with pytest.raises(ContextTooLong) as too_long:
            client.complete(ask, max_tokens=5, temperature=0.0)
        assert (too_long.value.prompt_tokens, too_long.value.limit) == (5000, 4096)
        with pytest.raises(ChatAPIError, match="no such parameter"):
            client.complete(ask, max_tokens=5, temperature=0.0)
        assert len(server.requests) == 3  # one each


# -- the agent scaffold's policy -------------------------------------------------------------------------


@pytest.mark.parametrize("prefill", [PREFILL, ""])
def test_each_turn_sends_the_srl_stages_messages_with_the_stop_string_greedy(prefill):
    """The request holds the messages `ModelPolicy` renders through the chat template (the SWE SRL
    stage's system prompt and user turn of the step example), the stop string, temperature 0 and
    `generation.max_new_tokens`; the prefill opens the assistant turn for the model to continue. The
    turn is the prefill and the reply, with the stop string the API left out put back."""
    reply = CALL if prefill else f"<think>\nlook\n</think>\n{CALL}"  # the server leaves out the stop
    with ChatServer(lambda body: reply, "smol", max_model_len=8192) as server:
        policy = make_policy(
            server.model_string("smol"), generation=GENERATION, prompt=PromptConfig(prefill=prefill)
        )
        assert isinstance(policy, RemotePolicy) and policy.max_prompt_tokens == 8192 - 256
        example = first_example()
        turn = policy.act(example)
        [body] = server.requests
    chat = messages(example, SWE_SYSTEM, swe_user_turn)
    assert body["messages"][:2] == chat and chat[0]["content"] == SWE.stage("srl").system_prompt
    assert body["stop"] == ["</function>"] and body["temperature"] == 0.0 and body["max_tokens"] == 256
    assert body["model"] == "smol" and "n" not in body and "top_p" not in body
    if prefill:
        assert body["messages"][2:] == [{"role": "assistant", "content": prefill}]
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    else:
        assert len(body["messages"]) == 2 and "continue_final_message" not in body
    assert turn.text == prefill + reply and parse_turn(turn)[1].name == "bash"
    assert turn.prompt_tokens > 0 and turn.completion_tokens > 0


def test_sampled_turns_send_the_generation_settings():
    with ChatServer(lambda body: CALL, "smol") as server:
        generation = GENERATION.model_copy(update={"temperature": 0.7, "top_p": 0.9, "top_k": 20})
        policy = make_policy(server.model_string("smol"), AgentConfig(greedy=False), generation=generation)
        policy.act(first_example())
        [body] = server.requests
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.9, 20)


def test_a_prompt_past_the_context_ends_the_episode_with_the_context_limit():
    """As `ModelPolicy`'s: a prompt leaving less than max_new_tokens of the server's context (the reply
    dropped), or one the server refuses as too long."""
    with ChatServer(lambda body: CALL, "smol", max_model_len=256 + 50) as server:  # prompts are longer
        episode = episode_of(make_policy(server.model_string("smol"), generation=GENERATION))
    assert episode.exit_status == "context_limit" and "more than the 50 the policy takes" in episode.detail

    def refuse(body: dict):
        raise Failure(400, "This model's maximum context length is 2048 tokens. However, your prompt contains "
                           "3000 input tokens, which exceeds this limit even without any output tokens.")  # fmt: skip

    with ChatServer(refuse, "smol") as server:
        episode = episode_of(make_policy(server.model_string("smol"), generation=GENERATION))
    assert episode.exit_status == "context_limit" and "maximum context length is 2048" in episode.detail
    assert not episode.infrastructure_error


def test_a_failing_or_vanished_server_is_an_infrastructure_error_after_fast_retries():
    def down(body: dict):
        raise RuntimeError("the engine died")

    with ChatServer(down, "smol") as server:
        policy = make_policy(server.model_string("smol"), generation=GENERATION, api=FAST_API)
        started = time.monotonic()
        episode = episode_of(policy)
        assert len(server.requests) == 3  # the first try and the 2 retries
    assert time.monotonic() - started < 5
    assert episode.exit_status == "environment_error" and episode.infrastructure_error
    assert "the policy's server failed" in episode.detail and "HTTP 500: the engine died (after 3 tries)" in (
        episode.detail
    )
    assert episode.patch is None  # no diff is taken after an infrastructure error

    chat = RemoteChat(ChatClient(parse_model(f"openai:smol@{free_url()}"), FAST_API), None, PREFILL, 1.0)
    gone = RemotePolicy(chat, SWE_SYSTEM, swe_user_turn, omitted_steps_note=True, stop=list(SWE.stop),
                        max_new_tokens=256, greedy=True, max_prompt_tokens=None)  # fmt: skip
    episode = episode_of(gone)
    assert episode.exit_status == "environment_error" and "is the model server running?" in episode.detail


def test_a_server_that_is_down_or_serves_another_model_is_refused_before_anything_runs():
    url = free_url()
    with pytest.raises(ConfigError, match=rf"^model.name \(--model\): GET {url}/models failed: .*running"):
        make_policy(f"openai:smol@{url}", generation=GENERATION)
    with ChatServer(lambda body: "", "other") as server, pytest.raises(
        ConfigError, match=r"does not serve 'smol' \(it serves: other\)"
    ):  # fmt: skip
        make_policy(server.model_string("smol"), generation=GENERATION)


# -- the oracle and agentless scaffolds, on the bundled tasks' files (no container) ----------------------


def gold_edits(task) -> str:
    paths = oracle.oracle_paths(task.patch)
    return edits_from_patch(task.patch, {p: (task.repo_dir / p).read_text() for p in paths})


def test_the_oracle_scaffold_asks_the_served_model_and_makes_its_patch():
    task = get_task("srl-agent__configlite-1")
    with ChatServer(lambda body: gold_edits(task), "smol", max_model_len=32768) as server:
        cfg = swe_config("--scaffold", "oracle", "--model", server.model_string("smol"))
        done = oracle.attempt(cfg, task, oracle.make_responder(cfg, cfg.model.name))
        [body] = server.requests
    files = {p: (task.repo_dir / p).read_text() for p in oracle.oracle_paths(task.patch)}
    assert body["messages"] == [*oracle.repair_chat(task.problem_statement, files),
                                {"role": "assistant", "content": PREFILL}]  # fmt: skip
    assert (
        "stop" not in body
        and body["max_tokens"] == cfg.swe.oracle_max_new_tokens
        and body["temperature"] == 0
    )
    assert done.error is None and done.stats["exit_status"] == "edited"
    assert done.record["response"] == PREFILL + gold_edits(task)
    assert done.patch == oracle.make_patch(PREFILL + gold_edits(task), files)["patch"] != ""


def test_the_oracle_scaffold_records_a_failing_server_as_an_infrastructure_error():
    def down(body: dict):
        raise Failure(503, "overloaded")

    task = get_task("srl-agent__configlite-1")
    with ChatServer(down, "smol") as server:
        cfg = swe_config("--scaffold", "oracle", "--model", server.model_string("smol"), *FAST)
        done = oracle.attempt(cfg, task, oracle.make_responder(cfg, cfg.model.name))
        assert len(server.requests) == 3
    assert done.error is not None and done.error[0] == "infrastructure_error"
    assert "HTTP 503: overloaded (after 3 tries)" in done.error[1]


def test_the_agentless_scaffold_localizes_and_repairs_with_the_served_model():
    """The localization and the repair are asked as chats; with the server's context length known, each
    repair prompt is measured first (a one-token completion) to see that it fits."""
    task = get_task("srl-agent__configlite-1")
    gold = oracle.oracle_paths(task.patch)

    def answer(body: dict) -> str:
        if body["messages"][0]["content"].startswith("Read the issue below"):
            return "```\n" + "\n".join(gold) + "\n```"
        return gold_edits(task)

    with ChatServer(answer, "smol", max_model_len=32768) as server:
        cfg = swe_config("--scaffold", "agentless", "--model", server.model_string("smol"))
        done = agentless.attempt(cfg, task, agentless.make_asker(cfg, cfg.model.name))
        asked = [(len(b["messages"]), b["max_tokens"]) for b in server.requests]
    assert done.error is None and done.record["exit_status"] == "edited" and done.record["files"] == gold
    assert done.stats["localization_recall"] == 1.0 and done.patch.startswith("diff --git")
    budget = cfg.swe.oracle_max_new_tokens
    assert asked[0] == (2, budget) and asked[-1] == (3, budget)  # user + prefill; system + user + prefill
    assert (3, 1) in asked  # the repair prompt measured


def test_a_served_model_is_asked_for_several_instances_at_once(tmp_path):
    """With a chat API the prompted scaffolds send `environment.pool_size` instances' requests together,
    as Agentless-mini does (the server batches them): each answer here waits until three requests are
    in, which only happens if they were sent at once; every instance is still recorded."""
    tasks = load_tasks()
    golds = {t.problem_statement.strip(): gold_edits(t) for t in tasks}
    together = threading.Barrier(len(tasks), timeout=30)

    def answer(body: dict) -> str:
        together.wait()
        return next(edits for issue, edits in golds.items() if issue in body["messages"][1]["content"])

    with ChatServer(answer, "smol") as server:
        cfg = swe_config("--scaffold", "oracle", "--model", server.model_string("smol"), "--out", str(tmp_path),
                         f"environment.pool_size={len(tasks)}")  # fmt: skip
        (tmp_path / "oracle").mkdir()
        results = Ledger(tmp_path / "results.jsonl", swe.Outcome, key="instance_id")
        predictions = Ledger(tmp_path / "predictions.jsonl", swe.Prediction, key="instance_id")
        swe.run_prompted(cfg, tasks, results, predictions, tmp_path, progress=False)
    assert {o.exit_status for o in results.latest().values()} == {"edited"}
    assert sorted(predictions.latest()) == sorted(t.instance_id for t in tasks)
    assert all(p.model_patch.startswith("diff --git") for p in predictions.latest().values())


# -- the math benchmarks ---------------------------------------------------------------------------------


def test_the_math_benchmarks_ask_the_served_model_greedy_then_k_samples(tmp_path):
    bench = tmp_path / "amc23_test.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in [{"problem": "1+1?", "answer": "2"},
                                                          {"problem": "2+2?", "answer": "4"}]))  # fmt: skip

    def answer(body: dict):
        right = "\\boxed{2}" if "1+1" in body["messages"][1]["content"] else "\\boxed{5}"
        return [right] * body.get("n", 1)

    with ChatServer(answer, "smol") as server:
        cfg = evaluate.parse_args(["--task", "math", "--benchmark", str(bench), "--k", "2", "--out",
                                   str(tmp_path / "out"), "--model", server.model_string("smol")])[1]  # fmt: skip
        report = evaluate_benchmarks(cfg, progress=False)
        bodies = list(server.requests)
    result = report["benchmarks"]["amc23_test"]
    assert result["greedy_accuracy"] == 0.5 and result["avg@k"] == 0.5
    greedy, sampled = bodies[:2], bodies[2:]
    assert all(b["temperature"] == 0.0 and "n" not in b and "stop" not in b for b in greedy)
    assert all(b["n"] == 2 and b["temperature"] == 1.0 and b["top_p"] == 1.0 for b in sampled)
    assert all(b["max_tokens"] == cfg.math.max_new_tokens for b in bodies)
    assert greedy[0]["messages"][0]["content"].startswith("You are a helpful assistant for solving")


# -- end to end, in the bundled tasks' containers --------------------------------------------------------


def run_eval(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main(["--task", "swe", "--json", *args]) == 0
    return json.loads(out.getvalue())


def expert_replies(body: dict) -> str:
    """The expert's action for the step the prompt asks for (the last step it shows), of the task whose
    issue it shows; its submit after the last one. The prefill writes the empty monologue."""
    user = body["messages"][1]["content"]
    [task] = [t for t in load_tasks() if t.problem_statement.strip() in user]
    steps = load_trajectory(task.expert_trajectory).steps
    k = max((int(n) for n in re.findall(r"^Step (\d+):$", user, re.MULTILINE)), default=0)
    return render_action(steps[k].action if k < len(steps) else ToolCall("submit"))


@pytest.mark.docker
def test_the_experts_actions_as_chat_replies_resolve_every_bundled_task_after_a_failed_run_is_redone(
    tmp_path, monkeypatch
):
    """A first run whose server answers 500: every instance an infrastructure error (not unresolved),
    no patch predicted; the same command once the server answers: the infrastructure errors are
    redone, and the experts' actions, sent back as the model's replies, resolve every task."""
    monkeypatch.chdir(REPO)
    down = {"now": True}

    def answer(body: dict) -> str:
        if down["now"]:
            raise RuntimeError("the engine died")
        return expert_replies(body)

    out = tmp_path / "eval"
    with ChatServer(answer, "experts") as server:
        args = ["--instances", "--model", server.model_string("experts"), "--grader", "fast", "--workers", "2",
                "--out", str(out), *FAST]  # fmt: skip
        failed = run_eval(*args)
        assert failed["infrastructure_error"] == 3 and failed["unresolved"] == failed["resolved"] == 0
        assert failed["exit_statuses"] == {"environment_error": 3} and failed["resolve_rate_all"] == 0.0
        assert all("HTTP 500" in d["detail"] for d in failed["instance_details"].values())
        assert not (out / "predictions.jsonl").exists() or not (out / "predictions.jsonl").read_text()
        down["now"] = False
        report = run_eval(*args)
        first = next(b for b in server.requests[9:] if "No steps taken yet." in b["messages"][1]["content"])
    assert report["resolved"] == 3 and report["infrastructure_error"] == 0 and report["resolve_rate"] == 1.0
    assert report["exit_statuses"] == {"submitted": 3}
    assert first["stop"] == ["</function>"] and first["temperature"] == 0.0 and first["max_tokens"] == 256
    assert first["messages"][0] == {"role": "system", "content": SWE_SYSTEM}
    assert first["messages"][2] == {"role": "assistant", "content": PREFILL}


@pytest.mark.docker
def test_the_oracle_scaffold_redoes_the_server_failures_of_an_earlier_run(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    down = {"now": True}
    golds = {t.problem_statement.strip(): gold_edits(t) for t in load_tasks()}

    def answer(body: dict) -> str:
        if down["now"]:
            raise Failure(502, "bad gateway")
        return next(edits for issue, edits in golds.items() if issue in body["messages"][1]["content"])

    with ChatServer(answer, "smol") as server:
        args = ["--instances", "--scaffold", "oracle", "--model", server.model_string("smol"), "--grader", "fast",
                "--out", str(tmp_path / "eval"), *FAST]  # fmt: skip
        failed = run_eval(*args)
        assert (
            failed["infrastructure_error"] == 3
            and failed["unresolved"] == 0
            and failed["exit_statuses"] == {}
        )
        down["now"] = False
        report = run_eval(*args)
    assert report["resolved"] == 3 and report["exit_statuses"] == {"edited": 3}
