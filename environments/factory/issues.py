"""Problem statements written by a model (`make-tasks --issue-model`), as SWE-smith's `issue_gen` does.

The model reaches the factory through a seam, `IssueWriter`: anything with `write(request) -> str`.
`environments` does not import `srl_agent`, so the writer the command line builds talks to a model
over the wire: `ChatServerWriter`, a client of the OpenAI-compatible chat-completions API that vLLM's
`vllm serve`, SGLang and hosted APIs speak (`--issue-model NAME`, `tasks.issue_api_base`). A Python
caller may hand `make_tasks` any other writer (a model in its own process, say).

What the model is shown, as SWE-smith's prompt: the patch that introduced the bug, the failing tests'
ids and the test-based statement (a failing test's source and its output at the bug). It is asked for
an issue a user would file: the symptom, how to reproduce it, what was expected; not the cause or the
fix. `accept` then checks the answer: reasoning (`<think>...</think>`) dropped, not empty, and not
quoting a line of the fix (a line the bug's patch removed) verbatim. A request the writer cannot answer,
or an answer `accept` refuses, raises `IssueWriterError`; the factory then keeps the test-based
statement and counts the task under `statements.test` with the reason logged, so a model's bad day
loses no task.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

SYSTEM = (
    "You write GitHub issues for a Python project. Given a code change that introduced a bug and the"
    " tests it breaks, write the issue a user who hit the bug would file: a title line, what they did,"
    " what happened (quote the error or the wrong value), what they expected, and a short snippet that"
    " reproduces it. Describe the symptom only: do not mention the change, its cause or how to fix it,"
    " and do not quote the original code."
)
PATCH_MAX = 6000
"""Characters of the bug's patch shown to the model."""
FIX_LINE_MIN = 20
"""A removed line at least this long (stripped) that the answer quotes verbatim gives the fix away."""

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


class IssueWriterError(RuntimeError):
    """The writer gave no usable statement: the message says which task and why."""


@dataclass(frozen=True)
class IssueRequest:
    """What a writer is told about one task."""

    instance_id: str
    file: str
    entity: str
    bug_patch: str
    """The diff that introduced the bug (its reverse is the fix)."""
    fail_to_pass: list[str]
    test_statement: str
    """The test-based statement: a failing test's source and its output at the bug."""


class IssueWriter(Protocol):
    """Writes a task's problem statement; raises `IssueWriterError` when it cannot."""

    def write(self, request: IssueRequest) -> str: ...


def issue_messages(request: IssueRequest) -> list[dict[str, str]]:
    """The chat messages asking for `request`'s issue (system and user turns)."""
    patch = (
        request.bug_patch if len(request.bug_patch) <= PATCH_MAX else request.bug_patch[:PATCH_MAX] + "\n..."
    )
    tests = "\n".join(f"- {test_id}" for test_id in sorted(request.fail_to_pass)[:10])
    user = (
        f"The change to `{request.entity}` in `{request.file}`:\n\n```diff\n{patch}\n```\n\n"
        f"It makes these tests fail:\n{tests}\n\nOne of them, and what it prints:\n\n{request.test_statement}\n"
        "Write the issue."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def accept(text: str, request: IssueRequest) -> str:
    """`text` as a statement: reasoning dropped, whitespace stripped. Raises `IssueWriterError` when it
    is empty or quotes a line of the fix."""
    statement = _THINK.sub("", text).strip()
    if not statement:
        raise IssueWriterError(f"{request.instance_id}: the model's answer is empty")
    for line in request.bug_patch.splitlines():
        removed = line[1:].strip()
        fix_line = line.startswith("-") and not line.startswith("---") and len(removed) >= FIX_LINE_MIN
        if fix_line and removed in statement:
            raise IssueWriterError(f"{request.instance_id}: the answer quotes the fix ({removed[:60]!r})")
    return statement + "\n"


class ChatServerWriter:
    """An `IssueWriter` asking `model` on an OpenAI-compatible server (`base_url` ends in `/v1`), at
    temperature 0. The API key, where the server wants one, is read from `OPENAI_API_KEY`."""

    def __init__(self, model: str, base_url: str, *, timeout: float = 300, max_tokens: int = 1024) -> None:
        self.model, self.base_url = model, base_url.rstrip("/")
        self.timeout, self.max_tokens = timeout, max_tokens

    def check(self) -> None:
        """Fail early, before any task is made: the server answers `GET /models` and serves `model`."""
        served = [entry.get("id") for entry in self._call("GET", "/models").get("data", [])]
        if self.model not in served:
            raise IssueWriterError(
                f"{self.base_url}: the server does not serve {self.model!r} (it serves: {', '.join(map(str, served)) or 'nothing'})"
            )

    def write(self, request: IssueRequest) -> str:
        body = {"model": self.model, "messages": issue_messages(request), "temperature": 0.0,
                "max_tokens": self.max_tokens}  # fmt: skip
        answer = self._call("POST", "/chat/completions", body, what=request.instance_id)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise IssueWriterError(
                f"{request.instance_id}: {self.base_url}/chat/completions answered without choices[0].message.content"
            ) from None
        return accept(text or "", request)

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, what: str = ""
    ) -> dict[str, Any]:
        url = self.base_url + path
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        where = f"{what}: " if what else ""
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, data, headers, method=method), timeout=self.timeout
            ) as r:
                return json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            raise IssueWriterError(f"{where}{method} {url} answered HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise IssueWriterError(
                f"{where}{method} {url} failed: {reason} (is the model server running?)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise IssueWriterError(f"{where}{method} {url} answered something that is not JSON") from None
