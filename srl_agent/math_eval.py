"""Grading math responses generated elsewhere: `python -m srl_agent.evaluate --task math --samples FILE`.

FILE is JSONL in the Qwen2.5-Math evaluation toolkit's output format (per problem: the question,
the gold answer in `gt` (or `answer`), and the list of responses in `code`), or our own saved
samples (`responses` instead of `code`). Each response's final answer is checked against the gold
with `srl_agent.math_grading.Checker` (math-verify, each check under a timeout in a worker).

The report: problems, samples per problem, `avg@k` (mean accuracy over all samples), `pass@1`,
`pass@k` (unbiased estimator at k = the samples per problem), and the counts and reasons of what
could not be graded: rows without a gold answer or without responses (listed by row), responses
without an extractable answer, checks that timed out or errored. Nothing is skipped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from srl_agent.math_grading import Checker, avg_at_k, pass_at_k
from trajectories.config import ConfigError


def grade_samples(path: str | Path, timeout: float = 5.0) -> dict[str, Any]:
    """The report for the responses in `path` (see the module docstring)."""
    rows, bad = _read_rows(Path(path))
    verdicts: Counter[str] = Counter()
    graded: list[dict[str, Any]] = []
    with Checker(timeout) as checker:
        for row in rows:
            checks = [checker.check(row["gold"], response) for response in row["responses"]]
            verdicts.update(c.verdict for c in checks)
            graded.append(
                {**row, "verdicts": [c.verdict for c in checks], "answers": [c.answer for c in checks]}
            )
    ks = {len(r["responses"]) for r in graded}
    k = min(ks) if ks else 0
    correct = [[v == "correct" for v in r["verdicts"]] for r in graded]
    return {
        "samples_file": str(path),
        "problems": len(graded),
        "samples_per_problem": sorted(ks),
        "avg@k": avg_at_k(correct),
        "pass@1": _mean(pass_at_k(len(c), sum(c), 1) for c in correct),
        f"pass@{k}": _mean(pass_at_k(len(c), sum(c), k) for c in correct) if k else 0.0,
        "verdicts": dict(verdicts),
        "rows_not_graded": bad,
        "rows": graded,
    }


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows with a gold answer and responses, and the others as {line, reason}."""
    if not path.is_file():
        raise ConfigError(f"--samples: no such file: {path}")
    rows, bad = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append({"line": lineno, "reason": f"not valid JSON ({e.msg})"})
            continue
        gold = next((data[k] for k in ("gt", "answer", "gold") if data.get(k) not in (None, "")), None)
        responses = next((data[k] for k in ("code", "responses") if isinstance(data.get(k), list)), None)
        if gold is None:
            bad.append({"line": lineno, "reason": "no gold answer (`gt` or `answer`)"})
        elif not responses or not all(isinstance(r, str) for r in responses):
            bad.append({"line": lineno, "reason": "no list of response strings (`code` or `responses`)"})
        else:
            question = data.get("question") or data.get("problem") or ""
            rows.append({"line": lineno, "id": data.get("idx", data.get("id")), "question": question,
                         "gold": str(gold), "responses": responses})  # fmt: skip
    return rows, bad


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
