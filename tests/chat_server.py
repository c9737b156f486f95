"""A local HTTP server that speaks the OpenAI chat-completions API the way vLLM's server does, for tests
of the chat-API client and of everything built on it (the factory's issue writer, the `openai:` models
of the evaluations). Stdlib only, one thread, a free port on 127.0.0.1.

`answer(body)` scripts each completion: it returns the content (a string; a list gives one choice
each, for `n`; a dict `{"content", "finish_reason"}` is a choice sent as it is), raises `Failure` for an HTTP error (a RuntimeError: HTTP 500 with its message),
or returns `DROP` to close the connection without an answer. As vLLM does, a stop string of the
request ends the content where it first occurs and is left out of it, and the choice names it in
`stop_reason` (`reports_stop=False`: no such key, as hosted APIs answer). Usage counts words.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

DROP = object()
"""What `answer` returns to close the connection without answering (a server that died mid-request)."""


class Failure(Exception):
    """Raised by `answer`: the server answers HTTP `code` with an OpenAI-style error body."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def free_url() -> str:
    """The API base of a port nothing listens on (it was free a moment ago)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()
    return f"http://127.0.0.1:{port}/v1"


class ChatServer:
    """`GET /v1/models` (serving `model`, with `max_model_len` when given) and
    `POST /v1/chat/completions` answered by `answer`; every request's body is kept in `requests`."""

    def __init__(
        self,
        answer: Callable[[dict], Any],
        model: str = "issue-writer",
        *,
        max_model_len: int | None = None,
        reports_stop: bool = True,
    ) -> None:
        self.answer, self.requests = answer, []
        self.lock = threading.Lock()
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
                entry: dict[str, Any] = {"id": model, "object": "model"}
                if max_model_len is not None:
                    entry["max_model_len"] = max_model_len
                self._send(200, {"object": "list", "data": [entry]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                try:
                    content = server.answer(body)
                except Failure as e:
                    self._send(e.code, {"error": {"message": str(e), "code": e.code}})
                    return
                except RuntimeError as e:
                    self._send(500, {"error": {"message": str(e)}})
                    return
                if content is DROP:
                    self.close_connection = True
                    self.connection.close()
                    return
                texts = content if isinstance(content, list) else [content]
                choices = [
                    _choice(i, text, body.get("stop") or [], reports_stop) for i, text in enumerate(texts)
                ]
                words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                written = [t["content"] if isinstance(t, dict) else t for t in texts]
                usage = {"prompt_tokens": words, "completion_tokens": sum(len(t.split()) for t in written)}
                self._send(200, {"object": "chat.completion", "choices": choices, "usage": usage})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def model_string(self, name: str) -> str:
        return f"openai:{name}@{self.base_url}"

    def __enter__(self) -> Self:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _choice(index: int, text: str | dict, stop: list[str], reports_stop: bool) -> dict[str, Any]:
    """One choice as vLLM sends it: cut at the first stop string, which is left out and named. A dict
    `{"content", "finish_reason"[, "tool_calls"]}` is sent as it is (a completion cut at `length`, a
    reply with tool calls)."""
    if isinstance(text, dict):
        message = {"role": "assistant", "content": text["content"]}
        if "tool_calls" in text:
            message["tool_calls"] = text["tool_calls"]
        return {
            "index": index,
            "message": message,
            "finish_reason": text["finish_reason"],
            "stop_reason": None,
        }
    found = [(text.index(s), s) for s in stop if s in text]
    matched = min(found)[1] if found else None
    content = text[: text.index(matched)] if matched else text
    choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}  # fmt: skip
    if reports_stop:
        choice["stop_reason"] = matched
    return choice
