"""Problem statements written by a model (`make-tasks --issue-model`): the prompt, the checks on the
answer, the client of the OpenAI-compatible chat API against a server on a local port that speaks that
API, the command line's early refusal, and `make_tasks` with a writer on the fixture repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from chat_server import ChatServer, free_url

from environments.chat_api import ChatAPIConfig
from environments.factory.issues import (
    ChatServerWriter,
    IssueRequest,
    IssueWriterError,
    accept,
    issue_messages,
    writer_for,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "factory_repo"
BUG = (
    "diff --git a/calc/core.py b/calc/core.py\n--- a/calc/core.py\n+++ b/calc/core.py\n"
    "@@ -1,3 +1,3 @@\n def mean(values):\n-    return sum(values) / len(values)\n+    return sum(values) * len(values)\n"
)
REQUEST = IssueRequest(
    "calc.1.func_pm_op_change__x", "calc/core.py", "mean", BUG, ["tests/test_core.py::test_mean"],
    "The test `tests/test_core.py::test_mean` fails.\n\nassert 12 == 3\n",
)  # fmt: skip


@pytest.fixture
def unused_url() -> str:
    return free_url()


FAST = ChatAPIConfig(retries=1, backoff=0.01, timeout=5)
"""A client that tries twice, at once: the failure tests stay fast."""


def test_the_prompt_shows_the_bug_and_the_failing_test_and_asks_for_the_symptom_only():
    system, user = issue_messages(REQUEST)
    assert system["role"] == "system" and "do not mention the change" in system["content"]
    assert BUG in user["content"] and REQUEST.test_statement in user["content"]
    assert "tests/test_core.py::test_mean" in user["content"]


def test_an_answer_is_accepted_without_its_reasoning_and_refused_when_empty_or_quoting_the_fix():
    assert accept("<think>the * should be /</think>\nmean() returns 12 for [1, 2, 3]\n", REQUEST) == (
        "mean() returns 12 for [1, 2, 3]\n"
    )
    with pytest.raises(IssueWriterError, match="empty"):
        accept("<think>hmm</think>  ", REQUEST)
    with pytest.raises(IssueWriterError, match="quotes the fix"):
        accept("Change it back to `return sum(values) / len(values)`.", REQUEST)


def test_the_chat_server_writer_speaks_the_openai_api():
    with ChatServer(lambda body: "mean() is wrong\n\n`mean([1, 2, 3])` gives 12, expected 2.") as server:
        writer = ChatServerWriter("issue-writer", server.base_url)
        writer.check()
        assert writer.write(REQUEST) == "mean() is wrong\n\n`mean([1, 2, 3])` gives 12, expected 2.\n"
        (body,) = server.requests
        assert body["model"] == "issue-writer" and body["temperature"] == 0.0
        assert body["messages"] == issue_messages(REQUEST)
        with pytest.raises(IssueWriterError, match="does not serve 'other'"):
            ChatServerWriter("other", server.base_url).check()


def test_a_server_error_or_no_server_is_an_error_naming_the_task_and_the_address(unused_url):
    def fail(body: dict) -> str:
        raise RuntimeError("out of memory")

    with ChatServer(fail) as server:
        with pytest.raises(
            IssueWriterError,
            match=r"calc.1.func_pm_op_change__x: POST .* HTTP 500: out of memory \(after 2 tries\)",
        ):
            ChatServerWriter("issue-writer", server.base_url, api=FAST).write(REQUEST)
        assert len(server.requests) == 2  # a 5xx is tried again
    with pytest.raises(IssueWriterError, match="is the model server running"):
        ChatServerWriter("issue-writer", unused_url, api=FAST).check()


def test_the_issue_model_is_openai_name_at_url_or_a_name_served_at_the_api_base():
    """The new spelling maps onto the same writer; the old one keeps working; a bad form names the flag."""
    from trajectories.config import ConfigError

    new = writer_for("openai:Qwen/Qwen2.5-7B@http://10.0.0.5:8000/v1/", "http://localhost:8000/v1")
    assert (new.client.model.name, new.client.base_url) == ("Qwen/Qwen2.5-7B", "http://10.0.0.5:8000/v1")
    old = writer_for("writer", "http://localhost:8000/v1")
    assert (old.client.model.name, old.client.base_url) == ("writer", "http://localhost:8000/v1")
    with pytest.raises(ConfigError, match=r"^tasks.issue_model \(--issue-model\): 'openai:writer' is not"):
        writer_for("openai:writer", "http://localhost:8000/v1")


def make_tasks_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "environments", "make-tasks", str(FIXTURE), "--out", str(tmp_path / "out"), *args],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("spelling", ["openai:NAME@URL", "NAME and tasks.issue_api_base"])
def test_make_tasks_refuses_an_issue_model_it_cannot_reach_before_making_anything(
    spelling, unused_url, tmp_path
):
    if spelling == "openai:NAME@URL":
        done = make_tasks_cli(tmp_path, "--issue-model", f"openai:writer@{unused_url}")
    else:
        done = make_tasks_cli(tmp_path, "--issue-model", "writer", f"tasks.issue_api_base={unused_url}")
    assert done.returncode == 2, done.stderr
    assert f"error: --issue-model: GET {unused_url}/models failed" in done.stderr
    assert not (tmp_path / "out").exists()


def test_make_tasks_refuses_a_malformed_issue_model_naming_the_flag(tmp_path):
    done = make_tasks_cli(tmp_path, "--issue-model", "openai:writer@localhost:8000/v1")
    assert done.returncode == 2 and "error: --issue-model: 'localhost:8000/v1' is not an http" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.docker
def test_make_tasks_with_a_writer_keeps_the_test_statement_where_the_model_fails(tmp_path):
    """The writer's statements become the tasks'; an empty answer is refused and that task keeps its
    test-based statement; the report counts which wrote what."""
    from environments.config import EnvConfig
    from environments.factory.make_tasks import MakeTasksConfig, make_tasks
    from environments.factory.tasks import load_folder

    def answer(body: dict) -> str:
        asked.append(body)
        return (
            "<think>nothing to say</think>" if len(asked) == 1 else "The results are wrong since the update."
        )

    asked: list[dict] = []
    out = tmp_path / "tasks"
    with ChatServer(answer) as server:
        writer = ChatServerWriter("issue-writer", server.base_url)
        cfg = MakeTasksConfig(source=str(FIXTURE), out=str(out), max_tasks=2)
        report = make_tasks(cfg, EnvConfig(pool_size=1), progress=False, writer=writer)
    assert report["tasks"] == 2 and report["statements"] == {"model": 1, "test": 1}, report
    statements = sorted(task.problem_statement for task in load_folder(out))
    assert statements[0] == "The results are wrong since the update.\n"
    assert statements[1].startswith("The test `")


def test_a_template_statement_excludes_an_issue_model():
    from pydantic import ValidationError

    from environments.factory.make_tasks import MakeTasksConfig

    with pytest.raises(ValidationError, match="issue_model writes from the test-based statement"):
        MakeTasksConfig(source=str(FIXTURE), issue_model="writer", statements="template")


@pytest.mark.docker
def test_make_tasks_with_template_statements_names_the_function_file_and_tests(tmp_path):
    """`--statements template`: each task's statement, and its expert's, is the short fixed text naming
    the bug's file, function and failing tests (no test output); the folder then refuses the default
    test-based statements, which would mix two kinds of text."""
    from environments.config import EnvConfig
    from environments.factory.make_tasks import CandidateEntry, MakeTasksConfig, make_tasks
    from environments.factory.tasks import load_folder
    from trajectories.config import ConfigError
    from trajectories.ledger import Ledger

    out = tmp_path / "tasks"
    cfg = MakeTasksConfig(source=str(FIXTURE), out=str(out), max_tasks=2, statements="template")
    report = make_tasks(cfg, EnvConfig(pool_size=1), progress=False)
    assert report["tasks"] == 2 and report["statements"] == {"template": 2}, report
    verdicts = Ledger(out / "results.jsonl", CandidateEntry, key="candidate_id").latest()
    for task in load_folder(out):
        entry = verdicts[task.instance_id.rsplit(".", 1)[-1]]
        text = task.problem_statement
        assert entry.file in text and entry.entity.rsplit(".", 1)[-1] in text, text
        assert min(entry.fail_to_pass) in text and "pytest -v" not in text, text
        traj = json.loads((out / "trajectories" / f"{task.instance_id}.traj").read_text())
        assert text in traj["history"][1]["content"]
    with pytest.raises(ConfigError, match=r"statements: 'template' there, None now"):
        make_tasks(MakeTasksConfig(source=str(FIXTURE), out=str(out), max_tasks=2), EnvConfig(pool_size=1))
