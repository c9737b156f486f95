"""The one client of the OpenAI-compatible chat-completions API (vLLM's server, SGLang, hosted APIs).

Who uses it: the task factory's issue writer (`environments.factory.issues.ChatServerWriter`) and, in
`srl_agent`, every evaluation that takes a model string `openai:MODEL@URL` (`srl_agent.remote`). It
lives here because `environments` may not import `srl_agent`, while `srl_agent` may import this.

- `parse_model`: `openai:MODEL@URL` -> `ChatModel` (MODEL the served name, URL the API's base, the one
  that ends in `/v1`); a bad form is a ConfigError naming the flag it came from.
- `ChatClient`: `GET /models` (`check`: served? how long a context?) and `POST /chat/completions`
  (`complete`). The API key, where the server wants one, comes from `OPENAI_API_KEY`. Every request
  has a timeout; a connection that fails or drops, a timeout, HTTP 408, 429 and 5xx are tried again
  after a backoff that doubles (`ChatAPIConfig`; a `Retry-After` is honoured up to `backoff_max`).
- What a failure raises: `ChatAPIError` when no answer came (after the retries, or at once for another
  4xx): an infrastructure fault, never a verdict on the model; `ContextTooLong` (a `ChatAPIError`)
  when the server says the prompt exceeds the model's context, with the numbers it gave, which is the
  model's limit, not the server's fault (callers treat it as their context limit).

The API drops a stop string from the text it returns; `kept_stop` puts it back where the server says
one ended the completion (vLLM's `stop_reason`, SGLang's `matched_stop`), as in-process generation keeps
it (`srl_agent.config.GenerationConfig.stop`).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from trajectories.config import ConfigError, Section

OPENAI_PREFIX = "openai:"
_MODEL_STRING = re.compile(r"^openai:(?P<name>[^@]*)@(?P<url>.*)$", re.DOTALL)
_RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx
# what servers say when a prompt does not fit (vLLM, OpenAI, SGLang), and where they give the numbers
_CONTEXT = re.compile(r"context length|context_length|context window", re.IGNORECASE)
_LIMIT = (re.compile(r"maximum context length is (\d+)"), re.compile(r"maximum context length \((\d+)\)"))
_PROMPT = (
    re.compile(r"prompt contains (?:at least )?(\d+) input tokens"),
    re.compile(r"request has (\d+) input tokens"),
    re.compile(r"Input length \((\d+)\)"),
    re.compile(r"\((\d+) in the messages"),
    re.compile(r"messages resulted in (\d+) tokens"),
)


class ChatAPIConfig(Section):
    """How the chat-API client asks: its timeout and retries (`api` in an evaluation's config)."""

    timeout: float = Field(600.0, gt=0)
    """Seconds one request may take (a long completion on a slow server takes minutes)."""
    retries: int = Field(5, ge=0)
    """Tries after the first, for a failed connection, a timeout, HTTP 408, 429 or 5xx."""
    backoff: float = Field(1.0, ge=0)
    """Seconds before the first retry; each later one waits twice as long (with jitter)."""
    backoff_max: float = Field(60.0, ge=0)
    """The longest wait between two tries (also the cap on a server's `Retry-After`)."""
    concurrency: int = Field(8, ge=1)
    """Requests at once where a caller has many independent ones (the math benchmarks' problems); the
    SWE agent scaffold sends one per running episode (`environment.pool_size`)."""


class ChatAPIError(RuntimeError):
    """No answer from the chat server: unreachable, timed out, or an HTTP error, after the retries the
    failure allows. An infrastructure fault, never a verdict on the model. `status`: the HTTP status of
    the last answer (None when there was none)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ContextTooLong(ChatAPIError):
    """The server refused the prompt as longer than the model's context (HTTP 400); `prompt_tokens` and
    `limit` as the server's message gives them (None where it does not)."""

    def __init__(self, message: str, prompt_tokens: int | None, limit: int | None) -> None:
        super().__init__(message, 400)
        self.prompt_tokens, self.limit = prompt_tokens, limit


@dataclass(frozen=True)
class ChatModel:
    """A model on a server: its served `name` and the API's `base_url` (no trailing slash)."""

    name: str
    base_url: str

    def __str__(self) -> str:
        return f"{OPENAI_PREFIX}{self.name}@{self.base_url}"


def is_chat_model(text: str) -> bool:
    """Whether a model string names a model behind the chat API (`openai:...`)."""
    return text.startswith(OPENAI_PREFIX)


def parse_model(text: str, what: str = "model.name (--model)") -> ChatModel:
    """`openai:MODEL@URL` as a `ChatModel`. ConfigError naming `what` (the flag or key it came from)
    when MODEL is empty, or URL is not an http(s) address with a host and a path (the API's base, such
    as `http://127.0.0.1:8000/v1`), or names an endpoint instead of the base."""
    example = f"{OPENAI_PREFIX}MODEL@URL, e.g. {OPENAI_PREFIX}my-model@http://127.0.0.1:8000/v1"
    match = _MODEL_STRING.match(text.strip())
    if match is None:
        raise ConfigError(f"{what}: {text!r} is not {example}")
    name, url = match["name"].strip(), match["url"].strip().rstrip("/")
    if not name:
        raise ConfigError(f"{what}: {text!r} names no model before the @ ({example})")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: {url!r} is not an http:// or https:// address with a host ({example})")
    if not parts.path:
        raise ConfigError(f"{what}: {url!r} has no path: give the API's base, such as {url}/v1")
    if parts.path.endswith(("/chat/completions", "/completions", "/models")):
        raise ConfigError(f"{what}: {url!r} is an endpoint: give the API's base (the part before it)")
    return ChatModel(name, url)


@dataclass(frozen=True)
class Choice:
    """One completion of a reply: its text as the server sent it (a matched stop string dropped),
    why it ended (`stop`, `length`, ...), and which stop string ended it where the server says."""

    text: str
    finish_reason: str | None
    stop_reason: str | int | None = None
    reports_stop: bool = False
    """Whether the server says which stop ended a completion (vLLM and SGLang do, hosted APIs do not)."""


@dataclass(frozen=True)
class Reply:
    """A chat completion: its choices, the token counts the server reports (0 where it reports none,
    `completion_tokens` summed over the choices) and the seconds the request took, retries included."""

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def kept_stop(choice: Choice, stop: list[str]) -> str:
    """The choice's text with the stop string that ended it put back, as in-process generation keeps
    it: the one the server names (`stop_reason`); from a server that names none (a hosted API), the
    one stop string asked for when the completion ended by a stop (with several, none: which is
    unknown)."""
    if choice.finish_reason != "stop" or not stop:
        return choice.text
    if choice.reports_stop:
        named = choice.stop_reason
        matched = named if isinstance(named, str) and named in stop else None
    else:
        matched = stop[0] if len(stop) == 1 else None
    return choice.text + matched if matched and not choice.text.endswith(matched) else choice.text


class ChatClient:
    """Requests to `model`'s server with `cfg`'s timeout and retries (see the module). Thread-safe:
    every request opens its own connection."""

    def __init__(self, model: ChatModel, cfg: ChatAPIConfig | None = None) -> None:
        self.model, self.cfg = model, cfg or ChatAPIConfig()
        self.base_url = model.base_url.rstrip("/")

    def check(self) -> int | None:
        """One `GET /models`, no retry (a run fails before it starts): the model's context length where
        the server says it (vLLM's `max_model_len`), else None. ChatAPIError when the server cannot be
        reached or does not serve the model (naming what it serves)."""
        served = self.call("GET", "/models", tries=1).get("data") or []
        for entry in served:
            if isinstance(entry, dict) and entry.get("id") == self.model.name:
                length = entry.get("max_model_len")
                return int(length) if isinstance(length, int) else None
        names = ", ".join(str(e.get("id")) for e in served if isinstance(e, dict)) or "nothing"
        raise ChatAPIError(
            f"{self.base_url}: the server does not serve {self.model.name!r} (it serves: {names})"
        )

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
        n: int = 1,
        what: str = "",
        **params: Any,
    ) -> Reply:
        """`POST /chat/completions` of `messages`; `params` go into the request's body as they are
        (`top_p`, a server's extensions). `what` names the request in errors (an instance id)."""
        body: dict[str, Any] = {"model": self.model.name, "messages": messages, "temperature": temperature,
                                "max_tokens": max_tokens}  # fmt: skip
        if stop:
            body["stop"] = list(stop)
        if n != 1:
            body["n"] = n
        body.update(params)
        started = time.monotonic()
        answer = self.call("POST", "/chat/completions", body, what=what)
        seconds = time.monotonic() - started
        where = f"{what}: " if what else ""
        try:
            choices = [_choice(c) for c in answer["choices"]]
            if not choices:
                raise ValueError("no choices")
        except (KeyError, IndexError, TypeError, ValueError):
            raise ChatAPIError(
                f"{where}{self.base_url}/chat/completions answered without choices[i].message.content"
            ) from None
        usage = answer.get("usage") or {}
        return Reply(
            choices,
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            seconds,
        )

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        what: str = "",
        tries: int | None = None,
    ) -> dict[str, Any]:
        """One request's JSON answer, tried up to `tries` times (default: 1 + `cfg.retries`)."""
        tries = tries if tries is not None else 1 + self.cfg.retries
        url, where = self.base_url + path, f"{what}: " if what else ""
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, tries + 1):
            request = urllib.request.Request(url, data, headers, method=method)
            wait: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout) as r:
                    return json.loads(r.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = _error_message(e.read().decode("utf-8", "replace"))
                if e.code not in _RETRIED_STATUSES and e.code < 500:
                    raise _refused(
                        f"{where}{method} {url} answered HTTP {e.code}: {detail}", e.code
                    ) from None
                failure, status = f"answered HTTP {e.code}: {detail}", e.code
                wait = _retry_after(e.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}".rstrip(": ")
                failure, status = f"failed: {reason} (is the model server running?)", None
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ChatAPIError(f"{where}{method} {url} answered something that is not JSON") from None
            if attempt < tries:
                time.sleep(self._backoff(attempt, wait))
        after = f" (after {tries} tries)" if tries > 1 else ""
        raise ChatAPIError(f"{where}{method} {url} {failure}{after}", status)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self.cfg.backoff_max
        if retry_after is not None:
            return min(retry_after, cap)
        return min(self.cfg.backoff * 2 ** (attempt - 1), cap) * random.uniform(0.5, 1.0)


def _choice(entry: dict[str, Any]) -> Choice:
    text = entry["message"]["content"]
    if text is None:  # an empty answer, as some servers send it
        text = ""
    if not isinstance(text, str):
        raise TypeError("no text")
    reports = "stop_reason" in entry or "matched_stop" in entry
    reason = entry.get("stop_reason", entry.get("matched_stop"))
    return Choice(text, entry.get("finish_reason"), reason, reports)


def _error_message(text: str) -> str:
    """The message of an error body (OpenAI's `{"error": {"message"}}`, vLLM's `{"message"}`), else
    its first 300 characters."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:300]
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else data.get("message") or error
        if isinstance(message, str):
            return message[:1000]
    return text[:300]


def _refused(message: str, status: int) -> ChatAPIError:
    """The error of an answer that is not tried again: `ContextTooLong` when it says the prompt does not
    fit the context (with the numbers it gives), else a `ChatAPIError`."""
    if status in (400, 413) and _CONTEXT.search(message):
        limit = next((int(m[1]) for p in _LIMIT if (m := p.search(message))), None)
        prompt = next((int(m[1]) for p in _PROMPT if (m := p.search(message))), None)
        return ContextTooLong(message, prompt, limit)
    return ChatAPIError(message, status)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the exponential backoff instead
