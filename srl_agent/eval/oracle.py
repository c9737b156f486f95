"""The SWE oracle-file setting: `python -m srl_agent.evaluate --task swe --instances SOURCE --scaffold oracle`.

The paper's "oracle file" evaluation (SWE-bench Verified: 5.8 base, 14.8 SRL), which is Agentless-mini's
repair step from swe-rl with the files given instead of localised: one prompt per instance holds the
issue and the full content of every file the gold patch edits; the model writes its reasoning in
`<think>...</think>` and then SEARCH/REPLACE edits (`srl_agent.eval.search_replace`); the edits become a
patch, which is graded like the agent scaffold's (`srl_agent.eval.swe.grade`: the official harness, or
`--grader fast`). One completion per instance, greedy unless `agent.greedy=false`, at most
`swe.oracle_max_new_tokens` tokens (less when the prompt leaves less of the model's context).

The files are read at the instance's base commit: from a bundled task's `repo/` folder, else inside
the instance's image at `/testbed` (an environment started for the read, through the `Environment`
seam). Files the gold patch creates are not shown (they do not exist yet); an instance whose row has
no gold patch is `not_evaluable`, since the patch is what names the files.

How the response becomes a patch, and what `exit_status` records (the report counts them):
- `format_error`: the response breaks the output contract (`srl_agent.rewards.extract_action`: one
  `<think>`, one `</think>`, something after it); no edits are read, the patch is empty. Edits are
  read only after `</think>`, so drafts inside the monologue are never applied.
- `no_edits`: no SEARCH/REPLACE block after `</think>`.
- `edited`: every edit applied; `partly_edited`: some did not (their file, block and reason are in
  the record) and the patch holds the ones that did, as Agentless-mini applies what matches;
  `edits_failed`: none applied, the patch is empty.
- `context_limit`: the prompt leaves no room to write in the model's context; nothing is generated.

Each instance's record, `oracle/<instance_id>.json` in the output folder, holds the prompt's files, the
raw response, the edits, the problems (malformed blocks and edits not applied) and the patch; the
ledger and report are the agent scaffold's, with these statistics in place of an episode's.

`--model replay:PATH` grades responses written elsewhere (a vLLM or API run): PATH is a JSONL file of
`{"instance_id", "response"}` rows, or a folder of such JSON records (an earlier run's `oracle/`).
`--model openai:MODEL@URL` asks a model behind an OpenAI-compatible chat API (`RemoteResponder`,
`srl_agent.remote`); a request that gets no answer after its retries is the instance's
`infrastructure_error`, redone by the next run into the same folder.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from srl_agent.eval.search_replace import DIVIDER, REPLACE, SEARCH, apply_edits, parse_edits, unified_diff
from srl_agent.rewards import THINK_CLOSE, THINK_OPEN, extract_action

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from environments.config import EnvConfig
    from environments.protocol import Environment, TaskInstance
    from srl_agent.config import EvalConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

REPLAY_PREFIX = "replay:"
TESTBED = "/testbed"  # where the repository is in an instance's image
# NUL-separated: the files git tracks at HEAD, else (no repository) every file outside .git/
_LIST_FILES = "git ls-files -z 2>/dev/null || find . -type f ! -path './.git/*' -printf '%P\\0'"
_EDITED_FILE = re.compile(r"^--- a/(.+)$", re.MULTILINE)

ORACLE_SYSTEM = f"""\
You are a software engineer fixing an issue in a code repository. You are given the issue and the \
full content of the files the fix touches. Find the cause of the issue, then fix it by editing those \
files.

First think in an inner monologue between {THINK_OPEN} and {THINK_CLOSE}. After {THINK_CLOSE}, write \
only the edits. Each edit is one block in a ```python fence: a line `### ` with the file's path, then \
the lines to find, then the lines to put in their place:

```python
### src/app.py
{SEARCH}
    return a - b
{DIVIDER}
    return a + b
{REPLACE}
```

The lines between {SEARCH} and {DIVIDER} must be copied exactly from the file, indentation included, \
and occur in it only once (add a neighbouring line when they would occur twice). Use one block per \
change; several blocks may edit the same file."""


def user_turn(issue: str, files: dict[str, str]) -> str:
    """The issue and each file's full content, in the prompt's order."""
    shown = "\n\n".join(f"### {path}\n```\n{content.rstrip()}\n```" for path, content in files.items())
    return (
        f"The issue:\n<issue>\n{issue.strip()}\n</issue>\n\n"
        f"The files to edit, in full:\n\n{shown}\n\n"
        "Fix the issue with SEARCH/REPLACE edits to these files."
    )


def oracle_paths(patch: str) -> list[str]:
    """The files `patch` edits that exist before it (created files have no `--- a/` line), in order."""
    return list(dict.fromkeys(_EDITED_FILE.findall(patch)))


def repair_chat(issue: str, files: dict[str, str]) -> list[dict[str, str]]:
    """The repair prompt: the system prompt and the user turn with the issue and `files` in full."""
    return [
        {"role": "system", "content": ORACLE_SYSTEM},
        {"role": "user", "content": user_turn(issue, files)},
    ]


@dataclass
class BaseFiles:
    """The repository's files at an instance's base commit: in a local folder (`folder`, a bundled
    task's `repo/`), else in `/testbed` inside a started environment of the instance's image (`env`).
    Made by `base_files`; the agentless scaffold lists them, both scaffolds read them."""

    folder: Path | None = None
    env: Environment | None = None

    def paths(self) -> list[str]:
        """Every file's path relative to the repository, sorted: in the image, those git tracks at its
        HEAD (every file, `.git/` aside, when `/testbed` is no git repository); in a folder, every file
        outside hidden folders and `__pycache__`."""
        if self.folder is not None:
            found = (p.relative_to(self.folder) for p in self.folder.rglob("*") if p.is_file())
            skip = ("__pycache__",)
            return sorted(
                p.as_posix() for p in found if not any(n.startswith(".") or n in skip for n in p.parts)
            )
        assert self.env is not None
        code, output = self.env.exec(f"cd {TESTBED} && {{ {_LIST_FILES}; }}")
        if code != 0:
            raise RuntimeError(
                f"listing the files of {TESTBED} failed with exit status {code}: {output[-500:]}"
            )
        return sorted(p for p in output.split("\0") if p)

    def read(self, paths: list[str]) -> dict[str, str]:
        """The files' content (UTF-8), in the order of `paths`."""
        if self.folder is not None:
            return {p: (self.folder / p).read_text(encoding="utf-8") for p in paths}
        assert self.env is not None
        return {p: self.env.read_file(f"{TESTBED}/{p}").decode("utf-8") for p in paths}


@contextmanager
def base_files(task: TaskInstance, env_cfg: EnvConfig) -> Iterator[BaseFiles]:
    """The task's files at its base commit: a bundled task's `repo/`, else the image's `/testbed` (an
    environment of the image started for as long as the block runs, through the `Environment` seam)."""
    if task.repo_dir is not None:
        yield BaseFiles(folder=task.repo_dir)
        return
    from environments.container import DockerEnvironment
    from environments.tasks.sources import prepare_image

    with DockerEnvironment(prepare_image(task, env_cfg), env_cfg) as env:
        yield BaseFiles(env=env)


def read_files(task: TaskInstance, paths: list[str], env_cfg: EnvConfig) -> dict[str, str]:
    """The files' content at the base commit: a bundled task's `repo/`, else the image's `/testbed`."""
    with base_files(task, env_cfg) as files:
        return files.read(paths)


@dataclass
class Response:
    """One completion for an instance (`text`: the prefill included, as the contract applies to it)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    truncated: bool = False
    context_limit: str | None = None
    """Why nothing was generated: the prompt fills the model's context."""


def make_patch(response: str, files: dict[str, str], allow_preamble: bool = False) -> dict[str, Any]:
    """What one response makes of the files: `exit_status`, `edits`, `problems` and `patch` (see the
    module docstring). Pure."""
    return make_edits(response, files, allow_preamble)[0]


def make_edits(
    response: str, files: dict[str, str], allow_preamble: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """`make_patch`'s result and the new content of each file the applied edits changed. Pure."""
    answer, why = extract_action(response, allow_preamble)
    if answer is None:
        return {"exit_status": "format_error", "detail": why, "edits": [], "problems": [], "patch": ""}, {}
    edits, malformed = parse_edits(answer)
    edited, failed = apply_edits(files, edits)
    problems = malformed + failed
    patch = unified_diff(files, edited)
    if not edits:
        status, detail = "no_edits", "no complete SEARCH/REPLACE block after </think>"
    elif not failed:
        status, detail = "edited", f"{len(edits)} edits applied"
    else:
        status = "partly_edited" if len(failed) < len(edits) else "edits_failed"
        detail = f"{len(edits) - len(failed)} of {len(edits)} edits applied; " + "; ".join(map(str, failed))
    if malformed:
        detail += f"; {len(malformed)} malformed blocks"
    made = {
        "exit_status": status,
        "detail": detail[:2000],
        "edits": [e.to_dict() for e in edits],
        "problems": [p.to_dict() for p in problems],
        "patch": patch,
    }
    return made, edited


def response_edits(
    response: Response, files: dict[str, str], allow_preamble: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """`make_edits` of a response, or `context_limit` when nothing was generated. Pure."""
    if response.context_limit:
        made = {"exit_status": "context_limit", "detail": response.context_limit, "edits": [], "problems": []}
        return {**made, "patch": ""}, {}
    return make_edits(response.text, files, allow_preamble)


@dataclass
class Attempt:
    """What the oracle scaffold made of one instance: its `record` (saved as `oracle/<id>.json`), its
    `patch` and the `stats` the ledger keeps; or, when no response could be asked for, `error`: the
    instance's status (`not_evaluable`, `infrastructure_error`) and why."""

    record: dict[str, Any] = field(default_factory=dict)
    patch: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    error: tuple[Literal["not_evaluable", "infrastructure_error"], str] | None = None


def attempt(cfg: EvalConfig, task: TaskInstance, respond: Callable[..., Response]) -> Attempt:
    """Prompt with the gold patch's files, ask `respond` once, make the patch (see the module)."""
    iid = task.instance_id
    gold = task.gold_patch
    if gold is None:
        return Attempt(error=("not_evaluable", "the row has no gold patch to name the oracle files"))
    paths = oracle_paths(gold)
    try:
        files = read_files(task, paths, cfg.environment)
        response = respond(iid, repair_chat(task.problem_statement, files))
    except Exception as e:  # a missing image, a dead engine, a replay without this instance: no verdict
        log.warning("no response for %s", iid, exc_info=True)
        return Attempt(error=("infrastructure_error", f"{type(e).__name__}: {e}"))
    made, _ = response_edits(response, files, cfg.reward.allow_preamble)
    stats = {
        "exit_status": made["exit_status"],
        "detail": made["detail"],
        "files": len(paths),
        "edits": len(made["edits"]),
        "edit_problems": len(made["problems"]),
        "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens,
        "generation_seconds": round(response.seconds, 3),
        "truncated": int(response.truncated),
    }
    record = {"instance_id": iid, "files": paths, "response": response.text, **made}
    return Attempt(record, made["patch"], stats)


def _json_record(path: Path) -> dict[str, Any] | str:
    """One JSON object file, or why it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg})"
    return data if isinstance(data, dict) else "not a JSON object"


def make_responder(cfg: EvalConfig, model: str) -> Callable[[str, list[dict[str, str]]], Response]:
    """`replay:PATH` (recorded responses by instance id), else the model `model` names."""
    if model.startswith(REPLAY_PREFIX):
        from srl_agent.policies import replay_path

        return ReplayResponder.from_path(replay_path(model))
    return model_responder(cfg, model)


def model_responder(cfg: EvalConfig, model: str) -> ModelResponder | RemoteResponder:
    """The model `model` names: one behind a chat API (`openai:MODEL@URL`), else one loaded here."""
    from environments.chat_api import is_chat_model

    return RemoteResponder(cfg, model) if is_chat_model(model) else ModelResponder(cfg, model)


class ModelResponder:
    """One completion per prompt from the model through the Generator seam (no stop string: the answer
    is many edits; it ends at the end of the turn or at `swe.oracle_max_new_tokens`)."""

    def __init__(self, cfg: EvalConfig, model: str) -> None:
        from srl_agent.generation.loader import load_inference
        from srl_agent.tasks import task_spec

        # the prompt is the oracle's own chat (`user_turn`); the answer is many edits: no stop string
        generation = cfg.generation.model_copy(update={"stop": [], "stop_at_step_end": False})
        stage = task_spec(cfg.task).stage("srl")
        inference = load_inference(model, cfg.model, stage, generation, cfg.prompt, cfg.seed)
        self.tokenizer, self.generator = inference.tokenizer, inference.generator
        self.max_new_tokens, self.context = cfg.swe.oracle_max_new_tokens, inference.context_length
        self.prefill = cfg.prompt.prefill
        self.temperature, self.greedy = cfg.generation.temperature, cfg.agent.greedy

    def __call__(self, instance_id: str, chat: list[dict[str, str]]) -> Response:
        return self.sample(chat, 1, self.greedy)[0]

    def sample(self, chat: list[dict[str, str]], n: int, greedy: bool) -> list[Response]:
        """`n` completions of `chat` (`greedy`: one, whatever `n`), each with an equal share of the
        seconds the batch took; `n` copies of a `context_limit` response when the prompt leaves no room."""
        ids = self._ids(chat)
        room = min(self.max_new_tokens, self.context - len(ids))
        if room <= 0:
            why = f"the prompt has {len(ids)} tokens; the model takes {self.context}"
            return [Response("", prompt_tokens=len(ids), context_limit=why) for _ in range(n)]
        started = time.perf_counter()
        [completions] = self.generator.generate([ids], n, room, self.temperature, greedy=greedy)
        seconds = (time.perf_counter() - started) / len(completions)
        return [
            Response(
                self.prefill + c.text,
                prompt_tokens=len(ids),
                completion_tokens=len(c.token_ids),
                seconds=seconds,
                truncated=c.truncated,
            )
            for c in completions
        ]

    def room(self, chat: list[dict[str, str]]) -> int:
        """The tokens the model's context leaves to write after `chat` (and the prefill)."""
        return self.context - len(self._ids(chat))

    def _ids(self, chat: list[dict[str, str]]) -> list[int]:
        from srl_agent.prompts import prompt_ids

        prefill = self.tokenizer(self.prefill, add_special_tokens=False)["input_ids"] if self.prefill else []
        return prompt_ids(self.tokenizer, chat) + prefill


class RemoteResponder:
    """`ModelResponder`'s calls answered by a model behind an OpenAI-compatible chat API
    (`openai:MODEL@URL`, `srl_agent.remote`): the chat as messages, the prefill continued, no stop
    string, at most `swe.oracle_max_new_tokens` (fewer when the server says that many do not fit
    after the prompt). A prompt the server refuses as too long is a `context_limit` response; a server
    that gives no answer raises (`ChatAPIError`: the instance's infrastructure error)."""

    def __init__(self, cfg: EvalConfig, model: str) -> None:
        from srl_agent.remote import connect

        self.chat = connect(model, cfg.api, cfg.prompt, cfg.generation)
        self.max_new_tokens = cfg.swe.oracle_max_new_tokens
        self.greedy = cfg.agent.greedy

    def __call__(self, instance_id: str, chat: list[dict[str, str]]) -> Response:
        return self.sample(chat, 1, self.greedy, instance_id)[0]

    def sample(self, chat: list[dict[str, str]], n: int, greedy: bool, what: str = "") -> list[Response]:
        """`n` completions of `chat` (`greedy`: one), as `ModelResponder.sample` gives them."""
        from environments.chat_api import ContextTooLong

        try:
            reply = self.chat.ask(chat, max_tokens=self.max_new_tokens, n=n, greedy=greedy, what=what)
        except ContextTooLong as e:  # a server that refuses prompt + max_tokens: what room is left
            left = (e.limit or 0) - (e.prompt_tokens or e.limit or 0)
            if not 0 < left < self.max_new_tokens:
                why = f"the server refused the prompt: {e}"
                return [Response("", prompt_tokens=e.prompt_tokens or 0, context_limit=why) for _ in range(n)]
            reply = self.chat.ask(chat, max_tokens=left, n=n, greedy=greedy, what=what)
        k = len(reply.choices)
        return [
            Response(
                c.text,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=round(reply.completion_tokens / k),
                seconds=reply.seconds / k,
                truncated=c.finish_reason == "length",
            )
            for c in reply.choices
        ]

    def room(self, chat: list[dict[str, str]]) -> int:
        """The tokens the model's context leaves to write after `chat` (and the prefill), counted by the
        server; `max_new_tokens` where the server gave no context length (a hosted API's is long)."""
        if self.chat.context_length is None:
            return self.max_new_tokens
        tokens = self.chat.prompt_tokens(chat)
        return self.max_new_tokens if tokens is None else self.chat.context_length - tokens


class ReplayResponder:
    """Responses recorded elsewhere, by instance id (see the module docstring)."""

    def __init__(self, responses: dict[str, str], source: str) -> None:
        self.responses, self.source = responses, source

    @classmethod
    def from_path(cls, path: str | Path) -> ReplayResponder:
        """The responses of a JSONL file or a folder of JSON records. A row that is not JSON or lacks
        `instance_id` or a `response` string is skipped with a warning naming its file and line (the
        others are kept); ConfigError when the path is missing or holds no usable row."""

        def response(row: dict[str, Any]) -> str | None:
            return row["response"] if isinstance(row.get("response"), str) else None

        return cls(replay_rows(path, "oracle", response, "a `response` string"), str(path))

    def __call__(self, instance_id: str, chat: list[dict[str, str]]) -> Response:
        if instance_id not in self.responses:
            raise LookupError(f"{REPLAY_PREFIX}{self.source} has no response for {instance_id}")
        return Response(self.responses[instance_id])


def replay_rows(
    path: str | Path, scaffold: str, read: Callable[[dict[str, Any]], T | None], needs: str
) -> dict[str, T]:
    """{instance_id: read(row)} of the rows of a JSONL file or of a folder of JSON records (one
    object per `*.json` file). A row that is not a JSON object, has no `instance_id` or that `read`
    refuses (None) is skipped with a warning naming its file and line and what it `needs` (the others
    are kept); ConfigError naming `--model` when the path is missing or holds no usable row."""
    from srl_agent.eval.math_report import read_json_rows
    from trajectories.config import ConfigError

    path, what = Path(path), "model.name (--model)"
    if path.is_dir():
        found = [(f"{p}", _json_record(p)) for p in sorted(path.glob("*.json"))]
    elif path.is_file():
        found = [(f"{path}:{n}", row) for n, row in read_json_rows(path, what)]
    else:
        raise ConfigError(f"{what}: {REPLAY_PREFIX}{path}: no such file or folder")
    rows: dict[str, T] = {}
    for where, row in found:
        if isinstance(row, str):
            print(f"{scaffold}: skipped {where}: {row}", file=sys.stderr)
        elif not row.get("instance_id") or (value := read(row)) is None:
            print(f"{scaffold}: skipped {where}: it needs `instance_id` and {needs}", file=sys.stderr)
        else:
            rows[row["instance_id"]] = value
    if not rows:
        raise ConfigError(
            f"{what}: {REPLAY_PREFIX}{path}: no row with `instance_id` and {needs}"
            + (f" ({len(found)} skipped)" if found else "")
        )
    return rows
