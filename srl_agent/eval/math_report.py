"""Grading math responses and the one report shape of the math benchmarks.

Two ways in, one report:
- `python -m srl_agent.evaluate --task math --samples FILE`: responses generated elsewhere. FILE is
  JSONL in the Qwen2.5-Math evaluation toolkit's output format (per problem: the question, the gold
  answer in `gt` (or `answer`), and the list of responses in `code`), or the samples that
  `--benchmark` saves (`answer`, `greedy`, `responses`), which grade again to the same figures.
- `--benchmark` (`srl_agent.eval.math_bench`) generates the responses and reports through `make_report`.

Each response's final answer is checked against the gold with `srl_agent.eval.math_grading.Checker`
(math-verify, gold first, each check under a timeout in a worker). The report: problems, greedy
accuracy (when there are greedy responses), `avg@k` (mean accuracy over the sampled responses),
`pass@1`, `pass@k` (unbiased estimator at k = the samples per problem), the verdict counts
(`correct`, `wrong`, `no_answer`, `timeout`, `error`) for greedy and sampled responses, and the rows
that could not be graded with their reasons (no gold answer, no responses, not JSON). Nothing is
skipped silently.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from srl_agent.eval.math_grading import Checker, avg_at_k, pass_at_k
from trajectories.config import ConfigError

# The paper's math table (Qwen2.5-Math protocol): (benchmark, metric) per column, in its order.
PAPER_COLUMNS = [
    ("amc23", "avg"),
    ("amc23", "greedy"),
    ("aime24", "avg"),
    ("aime24", "greedy"),
    ("aime25", "avg"),
    ("aime25", "greedy"),
    ("minerva", "greedy"),
]
_LABELS = {"amc23": "AMC23", "aime24": "AIME24", "aime25": "AIME25", "minerva": "Minerva"}


def grade_samples(path: str | Path, timeout: float = 5.0, lenient: bool = False) -> dict[str, Any]:
    """The report for the responses in `path` (see the module docstring), with the graded `rows`;
    `lenient`: answers found as `math_grading.extract_answer(lenient=True)` finds them."""
    started = time.perf_counter()
    rows, bad = _read_rows(Path(path))
    with Checker(timeout, lenient=lenient) as checker:
        graded = grade_rows(rows, checker)
    report = make_report(graded, bad, time.perf_counter() - started)
    return {"samples_file": str(path), **report, "rows": graded}


def grade_rows(rows: list[dict[str, Any]], checker: Checker) -> list[dict[str, Any]]:
    """Each row ({answer: gold, greedy: str | None, responses: [str]}) with the verdict and the
    extracted answer of its greedy response and of each sampled response."""
    graded = []
    for row in rows:
        out = dict(row)
        if row.get("greedy") is not None:
            check = checker.check(row["answer"], row["greedy"])
            out.update(greedy_verdict=check.verdict, greedy_answer=check.answer)
        checks = [checker.check(row["answer"], response) for response in row["responses"]]
        out.update(verdicts=[c.verdict for c in checks], answers=[c.answer for c in checks])
        graded.append(out)
    return graded


def make_report(graded: list[dict[str, Any]], bad: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The figures of one benchmark or samples file: accuracy over the graded problems, every row
    that could not be graded listed with its reason in `rows_not_graded`."""
    greedy = [r["greedy_verdict"] for r in graded if "greedy_verdict" in r]
    sampled = [r["verdicts"] for r in graded if r["verdicts"]]
    ks = sorted({len(v) for v in sampled})
    k = ks[0] if ks else 0
    correct = [[v == "correct" for v in verdicts] for verdicts in sampled]
    return {
        "problems": len(graded),
        "greedy_accuracy": _mean(v == "correct" for v in greedy) if greedy else None,
        "k": k,
        "samples_per_problem": ks,
        "avg@k": avg_at_k(correct) if sampled else None,
        "pass@1": _mean(pass_at_k(len(c), sum(c), 1) for c in correct) if sampled else None,
        "pass@k": _mean(pass_at_k(len(c), sum(c), k) for c in correct) if sampled else None,
        "verdicts": {
            "greedy": dict(Counter(greedy)),
            "sampled": dict(Counter(v for verdicts in sampled for v in verdicts)),
        },
        "rows_not_graded": bad,
        "seconds": round(seconds, 2),
    }


def paper_table(reports: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The paper's seven columns (in %) and their mean, from reports that carry `paper_name` (the
    short name of the benchmark they ran); None unless every column is present. An avg column takes
    avg@k at whatever k was run (the paper: 32), named in its label."""
    by_name = {r.get("paper_name"): r for r in reports.values() if r.get("paper_name")}
    columns, values = [], []
    for name, metric in PAPER_COLUMNS:
        report = by_name.get(name)
        value = None if report is None else report["avg@k" if metric == "avg" else "greedy_accuracy"]
        if value is None:
            return None
        label = f"{_LABELS[name]} avg@{report['k']}" if metric == "avg" else f"{_LABELS[name]} greedy"
        columns.append({"column": label, "benchmark": name, "value": round(100 * value, 1)})
        values.append(100 * value)
    return {"columns": columns, "average": round(sum(values) / len(values), 1)}


def markdown(title: str, reports: dict[str, dict[str, Any]], table: dict[str, Any] | None) -> str:
    """The report as markdown: one line per benchmark, the paper's table when complete, and every row
    not graded with its reason."""
    lines = [
        f"# {title}",
        "",
        "| benchmark | problems | greedy | avg@k | pass@k | greedy verdicts | sampled verdicts | not graded | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        k = f" (k={r['k']})" if r["k"] else ""
        lines.append(
            f"| {name} | {r['problems']} | {_pct(r['greedy_accuracy'])} | {_pct(r['avg@k'])}{k} "
            f"| {_pct(r['pass@k'])} | {_counts(r['verdicts']['greedy'])} | {_counts(r['verdicts']['sampled'])} "
            f"| {len(r['rows_not_graded'])} | {r['seconds']:.0f} |"
        )
    if table is not None:
        lines += ["", "The paper's table (%):", ""]
        lines.append("| " + " | ".join(c["column"] for c in table["columns"]) + " | Avg |")
        lines.append("|" + "---|" * (len(table["columns"]) + 1))
        lines.append(
            "| " + " | ".join(f"{c['value']:.1f}" for c in table["columns"]) + f" | {table['average']:.1f} |"
        )
    for name, r in reports.items():
        for bad in r["rows_not_graded"]:
            lines.append(f"- {name} row {bad['row']}: not graded, {bad['reason']}")
    return "\n".join(lines) + "\n"


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows with a gold answer and responses, and the others as {row (line number), reason}."""
    if not path.is_file():
        raise ConfigError(f"--samples: no such file: {path}")
    rows, bad = [], []
    for lineno, data in read_json_rows(path, "--samples"):
        if isinstance(data, str):  # not a JSON object: the reason
            bad.append({"row": lineno, "reason": data})
            continue
        gold = next((data[k] for k in ("gt", "answer", "gold") if data.get(k) not in (None, "")), None)
        responses = next((data[k] for k in ("code", "responses") if isinstance(data.get(k), list)), [])
        greedy = data.get("greedy")
        if gold is None:
            bad.append({"row": lineno, "reason": "no gold answer (`gt` or `answer`)"})
        elif not all(isinstance(r, str) for r in responses) or not isinstance(greedy, str | None):
            bad.append({"row": lineno, "reason": "responses that are not strings"})
        elif not responses and greedy is None:
            bad.append({"row": lineno, "reason": "no responses (`code`, `responses` or `greedy`)"})
        else:
            question = data.get("question") or data.get("problem") or ""
            rows.append({"row": lineno, "id": data.get("idx", data.get("id")), "question": question,
                         "answer": str(gold), "greedy": greedy, "responses": responses})  # fmt: skip
    return rows, bad


def read_json_rows(path: Path, what: str) -> list[tuple[int, dict[str, Any] | str]]:
    """(line number, the row or why it is not one) per non-blank line of a JSONL file, or per element
    (numbered from 1) of a `.json` array; ConfigError, naming `what` and the file, when a `.json`
    array cannot be read at all."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{what}: {path} is not valid JSON ({e})") from None
        return [(i, r if isinstance(r, dict) else "not a JSON object") for i, r in enumerate(items, 1)]
    rows: list[tuple[int, dict[str, Any] | str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append((lineno, f"not valid JSON ({e.msg})"))
            continue
        rows.append((lineno, data if isinstance(data, dict) else "not a JSON object"))
    return rows


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"
