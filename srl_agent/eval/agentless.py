"""The SWE end-to-end setting: `python -m srl_agent.evaluate --task swe --instances SOURCE --scaffold agentless`.

The paper's "end-to-end" SWE-bench Verified column (greedy; 3.2 base, 8.6 SRL) runs Agentless-mini
(swe-rl) with the model localizing the files itself: file-level localization, then the repair step
of the oracle scaffold (`srl_agent.eval.oracle`) on the localized files instead of the gold patch's.
Agentless-mini's reproduction and regression tests are not run: with one greedy sample they cannot
change the outcome, and with several the patch is chosen by its reranker's fallback, a majority vote.

Per instance, in one pass over the repository at the base commit (a bundled task's `repo/`, else
`/testbed` in the instance's image: `oracle.base_files`, the oracle's own reading):
1. Localization, one user message and no system prompt (`localization_prompt`): the issue and an
   indented tree of the repository's Python files (`render_tree`), without any directory or file whose
   name starts with `test` (kept for pytest's own repository, as Agentless-mini keeps them); it asks for
   at most 5 full paths, most important first, in a code fence. `parse_paths` reads the answer after
   `</think>` (nothing when a `<think>` is never closed, the whole text when there is none) line by
   line, whitespace and fence backticks stripped; a line is kept only when it is exactly a file of the
   tree; repeats are dropped and at most 5 kept.
2. Repair: the oracle's prompt (`oracle.repair_chat`) with the localized files in full, in their order.
   A file is left out when the prompt with it would leave the model less than
   `swe.oracle_max_new_tokens` of its context (Agentless-mini skips files past a 60,000-token budget);
   when none fits, the first file alone. The response becomes a patch as the oracle's does
   (`oracle.response_edits`: SEARCH/REPLACE edits after `</think>`).
3. `swe.samples` K (default 1: one localization and one repair, greedy unless `agent.greedy=false`, the
   paper's column). With K > 1, K localizations and K repairs are sampled at
   `generation.temperature`, each from a prompt of its own as Agentless-mini varies them
   (`localization_prompts`: at most 2-5 files asked for, the tree indented by 2 or 4, each directory's
   entries shuffled; the repair's files shuffled), drawn from a generator seeded by the run's seed, the
   instance and the sample, so a rerun asks the same; the distinct non-empty file lists are cycled over the K repairs
   (`repair_lists`, as Agentless-mini's repair does) and the patch submitted is the majority vote over
   normalized patches (`normalize_patch`, `majority_vote`; ties go to the earliest sample, empty
   patches do not vote unless all are empty).

`exit_status`: the chosen repair's (the oracle's `edited`, `partly_edited`, `edits_failed`, `no_edits`,
`format_error`, `context_limit`), or `no_files_localized` when no localization named a file of the tree:
the patch is empty and the instance is graded like any empty patch (`empty_patch`, unresolved).

Localization is scored against the gold patch's Python files that exist at the base commit, the ones a
localization can name (`localization_scores`, after swe-rl's `check_loc_perf.py`): per instance the
share of them named (averaged over the samples), the share of samples whose first file is one of them,
and whether some sample names one of them / all of them; nothing when the row has no gold patch. The
report sums them (`localization_summary`).

Each instance's record, `agentless/<instance_id>.json`: `exit_status`, `detail`, `files` and `patch` of
the chosen repair, `chosen` (its sample, None without one), `votes` (the samples that share its
normalized patch), `gold_files`, `localization_prompt` (the first sample's), `localizations` (per
sample the raw response, the parsed `files`, and the `n` files and tree `indent` its prompt asked with) and `repairs` (per sample the oracle's record: the files shown and those
`left_out` for the context, the response, edits, problems, patch, and `vote`, a digest of its
normalized patch).

`--model openai:MODEL@URL` asks a model behind an OpenAI-compatible chat API (the oracle's
`RemoteResponder`); a request that gets no answer after its retries is the instance's
`infrastructure_error`, redone by the next run into the same folder.

`--model replay:PATH` takes recorded responses: PATH is a JSONL file of rows
`{"instance_id", "localization", "response"}`, each a string (one sample) or a list of strings (sample
i is item i; `swe.samples` K takes the first K), `response` the repair answers, asked for only when a
file was localized (an empty list will do otherwise); or a folder of an earlier run's records.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from srl_agent.eval.oracle import (
    REPLAY_PREFIX,
    Attempt,
    Response,
    base_files,
    oracle_paths,
    repair_chat,
    replay_rows,
    response_edits,
)
from srl_agent.rewards import THINK_CLOSE, THINK_OPEN

if TYPE_CHECKING:
    from collections.abc import Callable

    from environments.protocol import TaskInstance
    from srl_agent.config import EvalConfig
    from srl_agent.eval.oracle import ModelResponder, RemoteResponder

log = logging.getLogger(__name__)

Chat = list[dict[str, str]]
MAX_FILES = 5
"""The files a localization may name (Agentless-mini asks for 5 with one sample)."""
INDENT = 4

LOCALIZATION_PROMPT = """\
Read the issue below and the structure of its repository, and name the files one would edit to \
resolve the issue.

The issue:
<issue>
{issue}
</issue>

The repository's Python files (tests left out):
<structure>
{tree}
</structure>

Answer with the full paths of at most {n} files, one per line, the most important first, inside a \
code fence, for example:

```
package/module.py
package/sub/other.py
```"""


def localizable(paths: list[str], keep_tests: bool = False) -> list[str]:
    """The Python files of `paths` a localization may name: none under a directory, nor any file, whose
    name starts with `test` (unless `keep_tests`). Order kept. Pure."""
    return [
        p
        for p in paths
        if p.endswith(".py") and (keep_tests or not any(n.startswith("test") for n in p.split("/")))
    ]


def render_tree(paths: list[str], indent: int = INDENT, rng: random.Random | None = None) -> str:
    """`paths` as an indented tree, one name a line, a directory as `name/` above its entries, each
    level sorted by name, or in the order `rng` shuffles it into. Pure without `rng`."""
    tree: dict[str, Any] = {}
    for path in paths:
        *folders, name = path.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(f"{folder}/", {})
        node[name] = None
    lines: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        names = sorted(node)
        if rng is not None:
            rng.shuffle(names)
        for name in names:
            lines.append(" " * (indent * depth) + name)
            if node[name] is not None:
                walk(node[name], depth + 1)

    walk(tree, 0)
    return "\n".join(lines)


def localization_prompt(
    issue: str, files: list[str], n: int = MAX_FILES, indent: int = INDENT, rng: random.Random | None = None
) -> str:
    """The localization's one user message: the issue and the tree of `files`, asking for `n` files."""
    return LOCALIZATION_PROMPT.format(issue=issue.strip(), tree=render_tree(files, indent, rng), n=n)


@dataclass(frozen=True)
class Localization:
    """One sample's localization request: its prompt and how it was varied."""

    prompt: str
    n: int
    indent: int


def localization_prompts(issue: str, files: list[str], samples: int, seed: str) -> list[Localization]:
    """The prompt of each of `samples` localizations. One: 5 files, indent 4, sorted (the greedy
    column). Several: each its own, as Agentless-mini varies them, at most 2-5 files, indent 2 or 4,
    every directory's entries shuffled, from `sample_rng(seed, i)`. Pure."""
    if samples == 1:
        return [Localization(localization_prompt(issue, files), MAX_FILES, INDENT)]
    asks = []
    for i in range(samples):
        rng = sample_rng(seed, i)
        n, indent = rng.randint(2, MAX_FILES), rng.choice((2, 4))
        asks.append(Localization(localization_prompt(issue, files, n, indent, rng), n, indent))
    return asks


def sample_rng(seed: str, sample: int) -> random.Random:
    """The generator of one sample's variations: the same for the same run seed, instance and sample."""
    return random.Random(f"{seed}/{sample}")


def shuffled(paths: list[str], rng: random.Random) -> list[str]:
    order = list(paths)
    rng.shuffle(order)
    return order


def answer_text(response: str) -> str:
    """What follows the last `</think>`; '' when a `<think>` is never closed; else all of it."""
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1]
    return "" if THINK_OPEN in response else response


def parse_paths(response: str, files: list[str], limit: int = MAX_FILES) -> list[str]:
    """The files of `files` that lines of the answer name exactly (surrounding whitespace and fence
    backticks aside), in the answer's order, each once, at most `limit`. Pure."""
    known, found = set(files), []
    for line in answer_text(response).splitlines():
        path = line.strip().strip("`").strip()
        if path in known and path not in found:
            found.append(path)
    return found[:limit]


def repair_lists(found: list[list[str]], samples: int) -> list[list[str]]:
    """The file list of each of `samples` repairs: the distinct non-empty localizations, in order,
    cycled (Agentless-mini's repair); [] when no localization named a file. Pure."""
    distinct = [list(files) for files in dict.fromkeys(tuple(f) for f in found if f)]
    return [distinct[i % len(distinct)] for i in range(samples)] if distinct else []


def fit_files(paths: list[str], fits: Callable[[list[str]], bool]) -> list[str]:
    """The files of `paths`, in order, that the repair prompt holds: each is added when the prompt
    with it still `fits`, else skipped; the first alone when none fits. Pure when `fits` is."""
    shown: list[str] = []
    for path in paths:
        if fits([*shown, path]):
            shown.append(path)
    return shown or paths[:1]


class _StripDocstrings(ast.NodeTransformer):
    """Drop every statement that is a bare string (docstrings among them), as Agentless's tokenizer
    pass drops a string that opens a line; an emptied body gets a `pass`."""

    def visit_Expr(self, node: ast.Expr) -> ast.Expr | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if not isinstance(node, ast.Module) and getattr(node, "body", None) == []:
            node.body = [ast.Pass()]  # type: ignore[attr-defined]
        return node


def normalize_code(code: str) -> str:
    """`code` as its AST prints it back, without comments, docstrings and other bare strings (layout,
    quotes and blank lines normalized); `code` itself when it does not parse. Pure."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    return ast.unparse(_StripDocstrings().visit(tree))


def normalize_patch(originals: dict[str, str], edited: dict[str, str]) -> str:
    """The key majority voting compares patches by: for each edited file (sorted) whose normalized
    content (`normalize_code`) changed, `### path` and its normalized new content; '' for a patch that
    changes nothing but comments, docstrings or layout (it does not vote). Pure."""
    parts = []
    for path in sorted(edited):
        after = normalize_code(edited[path])
        if after != normalize_code(originals[path]):
            parts.append(f"### {path}\n{after}\n")
    return "".join(parts)


def majority_vote(keys: list[str]) -> int:
    """The sample chosen among normalized patches `keys`: the first of the most frequent non-empty key
    (ties go to the key that appeared first); 0 when every key is empty. Pure."""
    votes = Counter(key for key in keys if key)
    if not votes:
        return 0
    return max((i for i, key in enumerate(keys) if key), key=lambda i: (votes[keys[i]], -i))


def gold_files(task: TaskInstance) -> list[str] | None:
    """The gold patch's Python files that exist at the base commit; None when there are none."""
    return [p for p in oracle_paths(task.gold_patch or "") if p.endswith(".py")] or None


def localization_scores(found: list[list[str]], gold: list[str]) -> dict[str, float]:
    """How the localizations `found` (one list per sample) cover the `gold` files. Pure."""
    want = set(gold)
    return {
        "localization_recall": statistics.fmean(len(want & set(f)) / len(want) for f in found),
        "localization_top1": statistics.fmean(bool(f) and f[0] in want for f in found),
        "localization_any": float(any(want & set(f) for f in found)),
        "localization_all": float(any(want <= set(f) for f in found)),
    }


def localization_summary(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report's localization section from each instance's statistics (those without scores, rows
    without a gold patch, are left out): mean recall, hit counts and each instance's recall. Pure."""
    scored = {iid: s for iid, s in stats.items() if "localization_recall" in s}

    def total(key: str) -> float:
        value = sum(s[key] for s in scored.values())
        return int(value) if float(value).is_integer() else round(value, 3)

    return {
        "instances": len(scored),
        "recall_mean": statistics.fmean(s["localization_recall"] for s in scored.values()) if scored else 0.0,
        "top1_hits": total("localization_top1"),
        "any_hits": total("localization_any"),
        "all_hits": total("localization_all"),
        "recall": {iid: round(s["localization_recall"], 3) for iid, s in scored.items()},
    }


class Asker(Protocol):
    """Where the scaffold's responses come from: the model (`ModelAsker`) or a replay (`ReplayAsker`)."""

    def localize(self, instance_id: str, chats: list[Chat]) -> list[Response]:
        """One answer to each localization prompt, in order."""
        ...

    def repair(self, instance_id: str, chats: list[Chat]) -> list[Response]:
        """One answer to each repair prompt, in order."""
        ...

    def fits(self, chat: Chat) -> bool:
        """Whether `chat` leaves the answer its full length in the model's context."""
        ...


def attempt(cfg: EvalConfig, task: TaskInstance, asker: Asker) -> Attempt:
    """Localize, repair, vote (see the module); an infrastructure error when no response could be had."""
    iid, issue, samples = task.instance_id, task.problem_statement, cfg.swe.samples
    seed = f"{cfg.seed}/{iid}"
    try:
        with base_files(task, cfg.environment) as repo:
            tree = localizable(repo.paths(), keep_tests=iid.startswith("pytest"))
            asks = localization_prompts(issue, tree, samples, seed)
            answers = asker.localize(iid, [[{"role": "user", "content": ask.prompt}] for ask in asks])
            found = [parse_paths(a.text, tree, ask.n) for a, ask in zip(answers, asks, strict=True)]
            lists = repair_lists(found, samples)
            if samples > 1:  # the files in another order in each repair's prompt
                lists = [shuffled(files, sample_rng(f"{seed}/repair", i)) for i, files in enumerate(lists)]
            contents = repo.read(list(dict.fromkeys(p for files in lists for p in files)))
        shown = [
            fit_files(files, lambda s: asker.fits(repair_chat(issue, _pick(contents, s)))) for files in lists
        ]
        responses = (
            asker.repair(iid, [repair_chat(issue, _pick(contents, s)) for s in shown]) if shown else []
        )
    except Exception as e:  # a missing image, a dead engine, a replay without this instance: no verdict
        log.warning("no response for %s", iid, exc_info=True)
        return Attempt(error=("infrastructure_error", f"{type(e).__name__}: {e}"))
    localizations = [
        {"response": a.text, "files": f, "n": ask.n, "indent": ask.indent}
        | ({"context_limit": a.context_limit} if a.context_limit else {})
        for a, f, ask in zip(answers, found, asks, strict=True)
    ]
    repairs, keys = [], []
    for localized, files, response in zip(lists, shown, responses, strict=True):
        originals = _pick(contents, files)
        made, edited = response_edits(response, originals, cfg.reward.allow_preamble)
        keys.append(normalize_patch(originals, edited))
        left_out = [p for p in localized if p not in files]  # past the model's context
        repairs.append({"files": files, "left_out": left_out, "response": response.text, **made})
        repairs[-1]["vote"] = _digest(keys[-1])
    chosen = majority_vote(keys) if repairs else None
    gold = gold_files(task)
    record = {
        "instance_id": iid,
        **_outcome(repairs, chosen, answers),
        "chosen": chosen,
        "votes": keys.count(keys[chosen]) if chosen is not None and keys[chosen] else 0,
        "gold_files": gold,
        "localization_prompt": asks[0].prompt,
        "localizations": localizations,
        "repairs": repairs,
    }
    calls = [*answers, *responses]
    stats = {
        **{k: record[k] for k in ("exit_status", "detail", "votes")},
        "samples": samples,
        "files": len(record["files"]),
        "edits": len(repairs[chosen]["edits"]) if chosen is not None else 0,
        "edit_problems": len(repairs[chosen]["problems"]) if chosen is not None else 0,
        "prompt_tokens": sum(r.prompt_tokens for r in calls),
        "completion_tokens": sum(r.completion_tokens for r in calls),
        "generation_seconds": round(sum(r.seconds for r in calls), 3),
        "truncated": sum(int(r.truncated) for r in calls),
        **(localization_scores(found, gold) if gold else {}),
    }
    return Attempt(record, record["patch"], stats)


def _outcome(repairs: list[dict[str, Any]], chosen: int | None, answers: list[Response]) -> dict[str, Any]:
    """The record's `exit_status`, `detail`, `files` and `patch`: the chosen repair's, or
    `no_files_localized`."""
    if chosen is not None:
        return {k: repairs[chosen][k] for k in ("exit_status", "detail", "files", "patch")}
    detail = f"no localization of {len(answers)} named a Python file of the repository's tree"
    if limits := [a.context_limit for a in answers if a.context_limit]:
        detail += f" ({len(limits)} with no room to answer: {limits[0]})"
    return {"exit_status": "no_files_localized", "detail": detail, "files": [], "patch": ""}


def _pick(contents: dict[str, str], paths: list[str]) -> dict[str, str]:
    return {p: contents[p] for p in paths}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""


def make_asker(cfg: EvalConfig, model: str) -> Asker:
    """`replay:PATH` (recorded responses by instance id), else the model `model` names (loaded here, or
    behind a chat API: `openai:MODEL@URL`)."""
    if model.startswith(REPLAY_PREFIX):
        from srl_agent.policies import replay_path

        return ReplayAsker.from_path(replay_path(model))
    from srl_agent.eval.oracle import model_responder

    return ModelAsker(cfg, model_responder(cfg, model))


class ModelAsker:
    """The model through the oracle's responder (`ModelResponder`: the Generator seam; or
    `RemoteResponder`: a chat API), completions capped at `swe.oracle_max_new_tokens`: greedy with one
    sample unless `agent.greedy=false`, sampled at `generation.temperature` with several."""

    def __init__(self, cfg: EvalConfig, responder: ModelResponder | RemoteResponder) -> None:
        self.responder = responder
        self.greedy = cfg.agent.greedy and cfg.swe.samples == 1

    def localize(self, instance_id: str, chats: list[Chat]) -> list[Response]:
        return self._answer(chats)

    def repair(self, instance_id: str, chats: list[Chat]) -> list[Response]:
        return self._answer(chats)

    def _answer(self, chats: list[Chat]) -> list[Response]:
        """One response per chat; the samples of one prompt (a file list cycled over the repairs, the
        one localization of a greedy run) drawn together."""
        same: dict[str, list[int]] = {}
        for i, chat in enumerate(chats):
            same.setdefault(json.dumps(chat), []).append(i)
        answers: dict[int, Response] = {}
        for at in same.values():
            answers.update(zip(at, self.responder.sample(chats[at[0]], len(at), self.greedy), strict=True))
        return [answers[i] for i in range(len(chats))]

    def fits(self, chat: Chat) -> bool:
        return self.responder.room(chat) >= self.responder.max_new_tokens


class ReplayAsker:
    """Responses recorded elsewhere, by instance id (see the module docstring)."""

    def __init__(self, rows: dict[str, tuple[list[str], list[str]]], source: str) -> None:
        self.rows, self.source = rows, source

    @classmethod
    def from_path(cls, path: str) -> ReplayAsker:
        """The rows of a JSONL file or a folder of records; a row without `instance_id`, a non-empty
        `localization` and a `response` is skipped with a warning naming its file and line; ConfigError
        when the path is missing or holds no usable row."""
        needs = "`localization` and `response` (strings or lists of strings) or a record's samples"
        return cls(replay_rows(path, "agentless", _replay_row, needs), path)

    def localize(self, instance_id: str, chats: list[Chat]) -> list[Response]:
        return [Response(text) for text in self._take(instance_id, 0, len(chats))]

    def repair(self, instance_id: str, chats: list[Chat]) -> list[Response]:
        return [Response(text) for text in self._take(instance_id, 1, len(chats))]

    def fits(self, chat: Chat) -> bool:
        return True  # a replay has no context to fill

    def _take(self, instance_id: str, part: int, n: int) -> list[str]:
        if instance_id not in self.rows:
            raise LookupError(f"{REPLAY_PREFIX}{self.source} has no response for {instance_id}")
        texts = self.rows[instance_id][part]
        if len(texts) < n:
            what = ("localization", "response")[part]
            raise LookupError(
                f"{REPLAY_PREFIX}{self.source} has {len(texts)} `{what}` answers for {instance_id}; "
                f"{n} are asked for (swe.samples)"
            )
        return texts[:n]


def _replay_row(row: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """(localization answers, repair answers) of a replay row or of an earlier run's record."""
    localizations, repairs = row.get("localizations"), row.get("repairs")
    if isinstance(localizations, list) and isinstance(repairs, list):  # a record: its samples' responses
        found, answers = (
            [s.get("response") if isinstance(s, dict) else None for s in part]
            for part in (localizations, repairs)
        )
    else:
        found, answers = row.get("localization"), row.get("response")
    found, answers = _texts(found), _texts(answers)
    return (found, answers) if found and answers is not None else None


def _texts(value: Any) -> list[str] | None:
    """A string as one sample, a list of strings as samples in order; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None
