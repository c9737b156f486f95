"""Problem statements written by a model (`make-tasks --issue-model`): the prompt, the checks on the
answer, the client of the OpenAI-compatible chat API against a server on a local port that speaks that
API, the command line's early refusal, and `make_tasks` with a writer on the fixture repository."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest

from environments.factory.issues import (
    ChatServerWriter,
    IssueRequest,
    IssueWriterError,
    accept,
    issue_messages,
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


class ChatServer:
    """An HTTP server on a local port answering the OpenAI API's `GET /v1/models` and
    `POST /v1/chat/completions`; `answer(body)` gives the content of each completion."""

    def __init__(self, answer: Callable[[dict], str], model: str = "issue-writer") -> None:
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": model, "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                try:
                    content = answer(body)
                except RuntimeError as e:
                    self._send(500, {"error": {"message": str(e)}})
                    return
                message = {"role": "assistant", "content": content}
                self._send(200, {"object": "chat.completion", "choices": [{"index": 0, "message": message}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def unused_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()
    yield f"http://127.0.0.1:{port}/v1"


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

    with (
        ChatServer(fail) as server,
        pytest.raises(
            IssueWriterError, match=r"calc.1.func_pm_op_change__x: POST .* HTTP 500.*out of memory"
        ),
    ):
        ChatServerWriter("issue-writer", server.base_url).write(REQUEST)
    with pytest.raises(IssueWriterError, match="is the model server running"):
        ChatServerWriter("issue-writer", unused_url, timeout=5).check()


def test_make_tasks_refuses_an_issue_model_it_cannot_reach_before_making_anything(unused_url, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "environments", "make-tasks", str(FIXTURE), "--out", str(tmp_path / "out"),
         "--issue-model", "writer", f"tasks.issue_api_base={unused_url}"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"error: --issue-model: GET {unused_url}/models failed" in done.stderr
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
