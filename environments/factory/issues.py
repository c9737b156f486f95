"""Problem statements written by a model (`make-tasks --issue-model`), as SWE-smith's `issue_gen` does.

The model reaches the factory through a seam, `IssueWriter`: anything with `write(request) -> str`.
`environments` does not import `srl_agent`, so the writer the command line builds talks to a model
over the wire: `ChatServerWriter`, on the project's one client of the OpenAI-compatible
chat-completions API (`environments.chat_api`: timeouts, retries) that vLLM's server, SGLang and
hosted APIs speak (`--issue-model openai:NAME@URL`, or `--issue-model NAME` with
`tasks.issue_api_base`). A Python caller may hand `make_tasks` any other writer (a model in its own
process, say).

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

import re
from dataclasses import dataclass
from typing import Protocol

from environments.chat_api import (
    ChatAPIConfig,
    ChatAPIError,
    ChatClient,
    ChatModel,
    is_chat_model,
    parse_model,
)

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
    temperature 0, through `environments.chat_api.ChatClient` (`api`: its timeout and retries). The
    API key, where the server wants one, is read from `OPENAI_API_KEY`."""

    def __init__(
        self, model: str, base_url: str, *, api: ChatAPIConfig | None = None, max_tokens: int = 1024
    ) -> None:
        self.client = ChatClient(ChatModel(model, base_url.rstrip("/")), api)
        self.max_tokens = max_tokens

    def check(self) -> None:
        """Fail early, before any task is made: the server answers `GET /models` and serves `model`."""
        try:
            self.client.check()
        except ChatAPIError as e:
            raise IssueWriterError(str(e)) from None

    def write(self, request: IssueRequest) -> str:
        try:
            reply = self.client.complete(
                issue_messages(request), max_tokens=self.max_tokens, temperature=0.0, what=request.instance_id
            )
        except ChatAPIError as e:
            raise IssueWriterError(str(e)) from None
        return accept(reply.choices[0].text, request)


def writer_for(issue_model: str, api_base: str, api: ChatAPIConfig | None = None) -> ChatServerWriter:
    """The writer `--issue-model` names: `openai:NAME@URL`, or a bare NAME served at `api_base` (the
    older spelling, `tasks.issue_api_base`). ConfigError naming `--issue-model` for a bad form."""
    if is_chat_model(issue_model):
        model = parse_model(issue_model, "tasks.issue_model (--issue-model)")
        return ChatServerWriter(model.name, model.base_url, api=api)
    return ChatServerWriter(issue_model, api_base, api=api)
