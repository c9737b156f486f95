"""Math benchmarks: `python -m srl_agent.evaluate --task math --benchmark NAMES --model MODEL [--k K]`.

Reads top to bottom in `evaluate_benchmarks`: resolve each name to a source (an unknown name is an
error before any model loads); read every benchmark's problems; skip those the output folder holds
finished with the same settings; load the model once; per remaining benchmark, generate a greedy
response per problem and, with `math.k` > 0, k samples at `math.temperature`, grade them
(`srl_agent.eval.math_report`), save the responses with their verdicts and the benchmark's report; write the
whole report, with the paper's table when its seven columns are all present.

The protocol (docs/method.md): the prompt is the task spec's RLVR prompt (system prompt and the bare
problem), with `prompt.prefill` opening the assistant turn as in training, so a checkpoint is
evaluated in the format it was trained with; the response graded is the prefill plus the completion.
Completions are capped at `math.max_new_tokens` (not math's one-step `generation.max_new_tokens`)
and end only at the end of the turn. The final answer is the last `\\boxed{}` (else a `####` line).

`--model openai:MODEL@URL`: a model behind an OpenAI-compatible chat API answers, with the same prompt
as chat messages (`RemoteMathResponder`, `srl_agent.remote`).

Benchmark rows are in the Qwen2.5-Math evaluation data format: the problem in `problem` or
`question`; the gold in `answer` (a GSM8K answer ends with a `#### N` line: the gold is N; a boxed
answer is unboxed), else the last `\\boxed{}` of `solution` (as Minerva's rows give it). A row
without a problem or a gold answer is listed in the report with its reason.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from environments.chat_api import is_chat_model
from srl_agent.eval.math_grading import Checker, extract_answer
from srl_agent.eval.math_report import grade_rows, make_report, markdown, paper_table, read_json_rows
from srl_agent.eval.report import Bar, file_name, model_folder, model_string
from trajectories.config import ConfigError
from trajectories.errors import SourceError
from trajectories.math_steps import last_boxed
from trajectories.record import StepExample

if TYPE_CHECKING:
    from srl_agent.config import EvalConfig


@dataclass(frozen=True)
class Benchmark:
    """Where one benchmark's rows come from: a local file, or a dataset (`datasets.load_dataset`:
    an HF id or a local dataset folder) with its config and split."""

    name: str
    """Its name in the report and the output folder."""
    source: str
    split: str | None = None
    config: str | None = None
    paper_name: str | None = None
    """The short name of a benchmark of the paper's table (aime24, ...) when this is one of them."""


# short name -> (HF id, config, split): the copies of the Qwen2.5-Math evaluation sets most used
SHORT_NAMES: dict[str, tuple[str, str | None, str]] = {
    "aime24": ("HuggingFaceH4/aime_2024", None, "train"),
    "aime25": ("math-ai/aime25", None, "test"),
    "amc23": ("math-ai/amc23", None, "test"),
    "minerva": ("math-ai/minervamath", None, "test"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "gsm8k": ("openai/gsm8k", "main", "test"),
}
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def resolve_benchmarks(names: list[str], split: str) -> list[Benchmark]:
    """Each name as a benchmark source; ConfigError naming any that is none of a short name, an
    existing file or folder, or an HF id, and any two that would share a name."""
    benchmarks = []
    for name in names:
        path = Path(name)
        if name in SHORT_NAMES:
            source, config, own_split = SHORT_NAMES[name]
            benchmarks.append(Benchmark(name, source, own_split, config, name))
        elif path.exists():
            stem = path.stem if path.is_file() else path.name
            benchmarks.append(
                Benchmark(stem, str(path), None if path.is_file() else split, None, _paper_name(stem))
            )
        elif name.endswith(_FILE_SUFFIXES) or name.startswith((".", "/", "~")):
            raise ConfigError(f"math.benchmarks: no such file or folder: {name}")
        elif _HF_ID.match(name):
            short = next((s for s, (hf, _, _) in SHORT_NAMES.items() if hf == name), None)
            benchmarks.append(Benchmark(file_name(name), name, split, None, short))
        else:
            raise ConfigError(
                f"math.benchmarks: unknown benchmark {name!r}: not a short name ({', '.join(SHORT_NAMES)}), "
                "not a file or folder here, not an HF dataset id (owner/name)"
            )
    seen = [b.name for b in benchmarks]
    if dupes := sorted({n for n in seen if seen.count(n) > 1}):
        raise ConfigError(f"math.benchmarks: two benchmarks named {', '.join(dupes)} (rename a file)")
    return benchmarks


def _paper_name(stem: str) -> str | None:
    """`aime24_test` -> `aime24`: a file named after a short name stands for that benchmark."""
    return next((s for s in SHORT_NAMES if re.match(rf"{s}(?![A-Za-z0-9])", stem)), None)


def read_benchmark(bench: Benchmark) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The problems ({row, id, question, answer}) and the rows that are not problems ({row, reason});
    rows are numbered from 1. ConfigError when the source cannot be read at all."""
    problems, bad = [], []
    for number, row in enumerate(_rows(bench), 1):
        if isinstance(row, str):  # a line that is not a JSON object: the reason
            bad.append({"row": number, "reason": row})
            continue
        question = row.get("problem") or row.get("question")
        gold = gold_answer(row)
        if not isinstance(question, str) or not question.strip():
            bad.append({"row": number, "reason": "no problem (`problem` or `question`)"})
        elif gold is None:
            bad.append({"row": number, "reason": "no gold answer (`answer`, or a \\boxed{} in `solution`)"})
        else:
            problems.append({"row": number, "id": row.get("id", row.get("idx", number)), "question": question,
                             "answer": gold})  # fmt: skip
    return problems, bad


def gold_answer(row: dict[str, Any]) -> str | None:
    """The gold answer of a benchmark row (see the module docstring); None when it has none."""
    answer = row.get("answer")
    if isinstance(answer, list):  # some copies hold a list of accepted forms: the first
        answer = answer[0] if answer else None
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)  # AMC23's golds are floats (27.0)
    if answer is not None and str(answer).strip():
        text = str(answer).strip()
        return extract_answer(text) or text
    solution = row.get("solution")
    return last_boxed(solution) if isinstance(solution, str) else None


def _rows(bench: Benchmark) -> list[dict[str, Any] | str]:
    path = Path(bench.source)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        return [row for _, row in read_json_rows(path, "math.benchmarks")]
    from trajectories.hf import iter_rows

    try:
        if path.is_file():
            return list(
                iter_rows(path.suffix.lstrip("."), split="train", data_files=str(path), streaming=False)
            )
        return list(
            iter_rows(bench.source, split=bench.split or "test", config=bench.config, streaming=False)
        )
    except SourceError as e:
        raise ConfigError(f"math.benchmarks: {bench.name}: {e}") from None


def evaluate_benchmarks(
    cfg: EvalConfig, progress: bool = True, responder: Callable[..., Any] | None = None
) -> dict[str, Any]:
    """Run (or resume) the benchmarks `cfg.math` names; the report (also written to the output folder).

    `responder`: what answers the problems (default: `Responder(cfg)`, the model, loaded only when a
    benchmark is left to run); tests pass a scripted one with the same call."""
    benchmarks = resolve_benchmarks(cfg.math.benchmarks, cfg.math.split)
    out = output_dir(cfg)
    loaded = {b.name: read_benchmark(b) for b in benchmarks}
    todo = [b for b in benchmarks if not _finished(out, b, settings(cfg, b), cfg.math.redo)]
    print(f"math eval: {len(benchmarks)} benchmarks, {len(benchmarks) - len(todo)} already done, "
          f"output in {out}", file=sys.stderr, flush=True)  # fmt: skip
    if todo:
        generate = responder or (RemoteMathResponder if is_chat_model(model_string(cfg)) else Responder)(cfg)
        with Checker(cfg.math.check_timeout, lenient=cfg.math.lenient) as checker, Progress(progress) as bar:
            for bench in todo:
                run_benchmark(cfg, bench, *loaded[bench.name], generate, checker, bar, out)
    reports = {b.name: _load_report(out, b) for b in benchmarks}
    report = {
        "model": model_string(cfg),
        "out": str(out),
        "benchmarks": reports,
        "paper_table": paper_table(reports),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    title = f"Math benchmarks of `{report['model']}`"
    (out / "report.md").write_text(markdown(title, reports, report["paper_table"]), encoding="utf-8")
    if responder is None:  # a scripted responder has no model to describe
        from srl_agent.eval.manifest import manifest_entry, write_manifest

        entry = manifest_entry({b.name: settings(cfg, b) for b in benchmarks}, model_string(cfg))
        write_manifest(out, entry)
    return report


def run_benchmark(
    cfg: EvalConfig,
    bench: Benchmark,
    problems: list[dict[str, Any]],
    bad: list[dict[str, Any]],
    generate: Callable[..., tuple[list[list[str]], int]],
    checker: Checker,
    bar: Progress,
    out: Path,
) -> None:
    """Generate, grade and save one benchmark: `NAME.jsonl` (every response and verdict), then
    `NAME.report.json`, whose presence marks the benchmark finished."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)  # a benchmark samples the same whether it runs first or after a resume
    k = cfg.math.k
    bar.start(bench.name, len(problems) * (1 + k))
    greedy, cut_greedy = generate(problems, 1, bar, greedy=True)
    sampled, cut_sampled = generate(problems, k, bar) if k else ([[] for _ in problems], 0)
    rows = [{**p, "greedy": g[0], "responses": s} for p, g, s in zip(problems, greedy, sampled, strict=True)]
    graded = grade_rows(rows, checker)
    path = out / f"{bench.name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in graded), encoding="utf-8")
    report = {
        "benchmark": bench.name,
        "paper_name": bench.paper_name,
        **make_report(graded, bad, time.perf_counter() - started),
        "cut_at_max_new_tokens": {"greedy": cut_greedy, "sampled": cut_sampled},
        "samples": str(path),
        "settings": settings(cfg, bench),
    }
    (out / f"{bench.name}.report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    bar.done(bench.name, report)


class Responder:
    """The model's responses to problems, batched through the Generator seam, with the RLVR prompt."""

    def __init__(self, cfg: EvalConfig):
        from srl_agent.generation.loader import load_inference
        from srl_agent.tasks import task_spec

        stage = task_spec(cfg.task).stage("rlvr")  # the prompt a checkpoint was trained on answers with
        # Whole solutions end with the turn: none of the task's stop rules (math's end a single step).
        generation = cfg.generation.model_copy(update={"stop": [], "stop_at_step_end": False})
        inference = load_inference(model_string(cfg), cfg.model, stage, generation, cfg.prompt, cfg.seed)
        self.prompts, self.generator = inference.prompts, inference.generator
        self.prefill, self.batch_size = cfg.prompt.prefill, cfg.generation.batch_size
        self.max_new_tokens, self.temperature = cfg.math.max_new_tokens, cfg.math.temperature

    def __call__(
        self, problems: list[dict[str, Any]], n: int, bar: Progress, greedy: bool = False
    ) -> tuple[list[list[str]], int]:
        """n responses per problem (the prefill in front of each), and how many ran to the cap."""
        ids = [self.prompts.render(_example(p)) for p in problems]
        responses, cut = [], 0
        per_call = max(1, self.batch_size // n)
        for start in range(0, len(ids), per_call):
            batch = self.generator.generate(
                ids[start : start + per_call], n, self.max_new_tokens, self.temperature, greedy=greedy
            )
            for completions in batch:
                responses.append([self.prefill + c.text for c in completions])
                cut += sum(c.finish_reason == "length" for c in completions)
            bar.advance(len(batch) * n)
        return responses, cut


class RemoteMathResponder:
    """`Responder`'s calls answered by a model behind an OpenAI-compatible chat API (`openai:MODEL@URL`,
    `srl_agent.remote`): per problem one request, the RLVR prompt as messages with the prefill
    continued, no stop, at most `math.max_new_tokens`, the samples as its `n`; `api.concurrency`
    requests at once. A request without an answer after its retries (`ChatAPIError`) stops the run
    before the benchmark is saved, so the next run into the same folder does it again."""

    def __init__(self, cfg: EvalConfig):
        from srl_agent.remote import connect
        from srl_agent.tasks import task_spec

        stage = task_spec(cfg.task).stage("rlvr")  # the prompt a checkpoint was trained on answers with
        self.chat = connect(model_string(cfg), cfg.api, cfg.prompt, cfg.generation, cfg.math.temperature)
        self.system = (
            cfg.prompt.system_prompt if cfg.prompt.system_prompt is not None else stage.system_prompt
        )
        self.user_turn, self.note = stage.user_turn, cfg.prompt.omitted_steps_note
        self.max_new_tokens, self.concurrency = cfg.math.max_new_tokens, cfg.api.concurrency

    def __call__(
        self, problems: list[dict[str, Any]], n: int, bar: Progress, greedy: bool = False
    ) -> tuple[list[list[str]], int]:
        """n responses per problem (the prefill in front of each), and how many ran to the cap."""
        from concurrent.futures import ThreadPoolExecutor

        from srl_agent.prompts import messages

        def ask(problem: dict[str, Any]) -> list[tuple[str, bool]]:
            chat = messages(_example(problem), self.system, self.user_turn, self.note)
            reply = self.chat.ask(
                chat, max_tokens=self.max_new_tokens, n=n, greedy=greedy, what=str(problem["id"])
            )
            return [(c.text, c.finish_reason == "length") for c in reply.choices]

        responses, cut, unshown = [], 0, 0
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="math-request")
        try:
            for answers in pool.map(ask, problems):  # in the problems' order
                responses.append([text for text, _ in answers])
                cut, unshown = cut + sum(length for _, length in answers), unshown + len(answers)
                if unshown >= self.concurrency * n:  # a line per batch of requests, not per problem
                    bar.advance(unshown)
                    unshown = 0
        finally:  # a failed request stops the rest: none of them would be saved
            pool.shutdown(wait=True, cancel_futures=True)
        if unshown:
            bar.advance(unshown)
        return responses, cut


def _example(problem: dict[str, Any]) -> StepExample:
    """A problem as the RLVR stage's example: the whole problem, no steps, its gold answer."""
    return StepExample(
        "math", str(problem["id"]), 0, 1, problem["question"], [], "", answer=problem["answer"]
    )


def settings(cfg: EvalConfig, bench: Benchmark) -> dict[str, Any]:
    """What a benchmark's figures depend on: a finished benchmark is reused only when these match."""
    return {
        **asdict(bench),
        "model": model_string(cfg),
        "dtype": cfg.model.dtype,
        "seed": cfg.seed,
        "system_prompt": cfg.prompt.system_prompt,
        "prefill": cfg.prompt.prefill,
        "max_new_tokens": cfg.math.max_new_tokens,
        "lenient": cfg.math.lenient,
        "k": cfg.math.k,
        "temperature": cfg.math.temperature if cfg.math.k else None,
        "top_p": cfg.generation.top_p if cfg.math.k else None,
        "top_k": cfg.generation.top_k if cfg.math.k else None,
    }


def _finished(out: Path, bench: Benchmark, wanted: dict[str, Any], redo: bool) -> bool:
    """True when `out` holds this benchmark finished with the `wanted` settings; ConfigError when it
    holds it with others (naming them), unless `math.redo` (then False)."""
    path = out / f"{bench.name}.report.json"
    if not path.is_file():
        return False
    had = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    differ = sorted(key for key in wanted.keys() | had.keys() if had.get(key) != wanted.get(key))
    if not differ:
        return True
    if not redo:
        what = "; ".join(f"{key}: {had.get(key)!r} there, {wanted.get(key)!r} now" for key in differ)
        raise ConfigError(
            f"math: {out} holds {bench.name} run with other settings ({what}); "
            "use another --out, or math.redo=true to run it again"
        )
    return False


def _load_report(out: Path, bench: Benchmark) -> dict[str, Any]:
    return json.loads((out / f"{bench.name}.report.json").read_text(encoding="utf-8"))


def output_dir(cfg: EvalConfig) -> Path:
    out = model_folder(cfg.math.out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    return out


class Progress:
    """A progress bar over the responses of each benchmark (plain lines when disabled)."""

    def __init__(self, enabled: bool):
        self._bar = Bar(enabled, "[bold]{task.description}", "responses")
        self._task: Any = None
        self._name, self._done, self._total, self._started = "", 0, 0, 0.0

    def __enter__(self) -> Self:
        self._bar.__enter__()
        return self

    def start(self, name: str, total: int) -> None:
        self._task = self._bar.add(name, total)
        self._name, self._done, self._total, self._started = name, 0, total, time.perf_counter()

    def advance(self, n: int) -> None:
        if self._bar.enabled:
            self._bar.advance(self._task, n)
            return
        # a log line per generate call: a long CPU run shows it is moving
        self._done += n
        self._bar.print(f"{self._name}: {self._done}/{self._total} responses, "
                        f"{time.perf_counter() - self._started:.0f} s")  # fmt: skip

    def done(self, name: str, report: dict[str, Any]) -> None:
        figures = ", ".join(
            f"{key} {100 * report[key]:.1f}%"
            for key in ("greedy_accuracy", "avg@k", "pass@k")
            if report[key] is not None
        )
        self._bar.print(f"{name}: {report['problems']} problems, {figures}, {report['seconds']:.0f} s")

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)
