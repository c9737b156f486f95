"""`evaluate --task math --benchmark`: benchmark rows and their gold answers, name resolution, the run
with its saved samples, resuming, `--samples` on what it saved, and the paper's table."""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from srl_agent import evaluate
from srl_agent.config import EvalConfig
from srl_agent.eval.math_bench import (
    SHORT_NAMES,
    Benchmark,
    evaluate_benchmarks,
    read_benchmark,
    resolve_benchmarks,
)
from srl_agent.eval.math_grading import Checker
from srl_agent.eval.math_report import PAPER_COLUMNS, grade_rows, make_report, paper_table
from trajectories.config import ConfigError


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


ROWS = [
    {"id": "a", "problem": "1+1?", "answer": "2"},
    {"question": "Miles?", "answer": 27.0},  # AMC23's golds are floats
    {"problem": "Minerva-style", "solution": "so $x=\\boxed{1}$ and then \\boxed{\\frac{1}{\\sqrt{2}}}."},
    {"question": "Ducks?", "answer": "She sells 16 - 3 = <<16-3=13>>13 eggs.\n#### 1,300"},  # GSM8K
    {"problem": "no gold here", "solution": "no boxed answer"},
    {"answer": "5"},
    "{not json",
    "[1, 2]",
]


def test_benchmark_rows_give_the_problem_and_its_gold_answer_or_a_reason(tmp_path):
    problems, bad = read_benchmark(Benchmark("b", str(write_jsonl(tmp_path / "b.jsonl", ROWS))))
    assert [(p["row"], p["question"], p["answer"]) for p in problems] == [
        (1, "1+1?", "2"),
        (2, "Miles?", "27"),
        (3, "Minerva-style", "\\frac{1}{\\sqrt{2}}"),
        (4, "Ducks?", "1300"),
    ]
    assert problems[0]["id"] == "a" and problems[1]["id"] == 2  # no id: the row number
    assert [(b["row"], b["reason"].split(" (")[0]) for b in bad] == [
        (5, "no gold answer"),
        (6, "no problem"),
        (7, "not valid JSON"),
        (8, "not a JSON object"),
    ]


def test_a_local_dataset_folder_is_read_through_datasets(tmp_path):
    """The HF path (`datasets.load_dataset`) on a folder holding a test split."""
    folder = tmp_path / "my_set"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", ROWS[:4])
    [bench] = resolve_benchmarks([str(folder)], "test")
    assert (bench.name, bench.split, bench.paper_name) == ("my_set", "test", None)
    problems, bad = read_benchmark(bench)
    assert [p["answer"] for p in problems] == ["2", "27", "\\frac{1}{\\sqrt{2}}", "1300"] and bad == []


def test_short_names_files_and_ids_resolve_and_unknown_names_are_errors(tmp_path):
    file = write_jsonl(tmp_path / "aime24_test.jsonl", ROWS[:1])
    gsm, aime_file, other, aime_id = resolve_benchmarks(
        ["gsm8k", str(file), "someone/some_set", "math-ai/aime25"], "test"
    )
    assert (gsm.source, gsm.config, gsm.split, gsm.paper_name) == ("openai/gsm8k", "main", "test", "gsm8k")
    assert (aime_file.name, aime_file.paper_name) == ("aime24_test", "aime24")  # named after aime24
    assert (other.name, other.source, other.split, other.paper_name) == (
        "someone_some_set",
        "someone/some_set",
        "test",
        None,
    )
    assert aime_id.paper_name == "aime25" and set(SHORT_NAMES) >= {"aime24", "aime25", "amc23", "minerva"}
    with pytest.raises(ConfigError, match="unknown benchmark 'aime2024'"):
        resolve_benchmarks(["aime2024"], "test")
    with pytest.raises(ConfigError, match="no such file or folder: missing.jsonl"):
        resolve_benchmarks(["missing.jsonl"], "test")
    with pytest.raises(ConfigError, match="two benchmarks named aime24_test"):
        resolve_benchmarks([str(file), str(file)], "test")


def test_an_unknown_benchmark_stops_the_command_before_any_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="unknown benchmark 'nosuch'"):
        evaluate.main(["--task", "math", "--benchmark", "amc23,nosuch", "--model", "no-such-model",
                       "--out", str(tmp_path)])  # fmt: skip


def test_the_shared_benchmark_files_read_whole(shared_data):
    math = shared_data / "math"
    counts = {}
    for name in ("aime24_test", "amc23_test", "gsm8k_test.first300"):
        [bench] = resolve_benchmarks([str(math / f"{name}.jsonl")], "test")
        problems, bad = read_benchmark(bench)
        counts[name] = (len(problems), len(bad), problems[0]["answer"], bench.paper_name)
    assert counts == {
        "aime24_test": (30, 0, "204", "aime24"),
        "amc23_test": (40, 0, "27", "amc23"),
        "gsm8k_test.first300": (300, 0, "18", "gsm8k"),
    }


def hangs_on_hang(gold: str, answer: str) -> bool:
    if answer == "hang":
        time.sleep(60)
    return gold == answer


def test_a_hung_check_and_a_response_without_answer_are_counted_in_the_report():
    rows = [
        {"answer": "2", "greedy": "\\boxed{2}", "responses": ["\\boxed{hang}", "no answer", "\\boxed{2}"]}
    ]
    with Checker(0.5, hangs_on_hang) as checker:
        report = make_report(grade_rows(rows, checker), [], 1.0)
    assert report["greedy_accuracy"] == 1.0 and report["avg@k"] == pytest.approx(1 / 3)
    assert report["verdicts"]["sampled"] == {"timeout": 1, "no_answer": 1, "correct": 1}


class Scripted:
    """Answers problem i: greedy right when i is even; of n samples, the first i % (n + 1) right."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, problems, n, bar, greedy=False):
        self.calls += 1
        out = []
        for i, p in enumerate(problems):
            right = [i % 2 == 0] if greedy else [j < i % (n + 1) for j in range(n)]
            out.append([f"so \\boxed{{{p['answer'] if ok else 'wrong'}}}" for ok in right])
        return out, 0


def cfg_for(tmp_path: Path, benchmarks: list[str], k: int) -> EvalConfig:
    return EvalConfig(
        model={"name": "scripted"}, math={"benchmarks": benchmarks, "k": k, "out": str(tmp_path / "out")}
    )


def test_a_run_saves_every_response_resumes_and_its_samples_grade_again_to_the_same_figures(tmp_path):
    bench = write_jsonl(tmp_path / "amc23_test.jsonl", ROWS[:5])  # 4 problems and a row without gold
    responder = Scripted()
    report = evaluate_benchmarks(cfg_for(tmp_path, [str(bench)], 2), False, responder)
    r = report["benchmarks"]["amc23_test"]
    assert (r["problems"], r["k"], r["paper_name"]) == (4, 2, "amc23")
    assert r["greedy_accuracy"] == 0.5 and r["verdicts"]["greedy"] == {"correct": 2, "wrong": 2}
    # samples right per problem: 0, 1, 2, 0 of 2
    assert r["avg@k"] == pytest.approx(3 / 8) and r["pass@k"] == pytest.approx(2 / 4)
    assert r["pass@1"] == pytest.approx(3 / 8) and r["verdicts"]["sampled"] == {"correct": 3, "wrong": 5}
    assert [b["row"] for b in r["rows_not_graded"]] == [5] and report["paper_table"] is None
    saved = [json.loads(line) for line in Path(r["samples"]).read_text().splitlines()]
    assert [s["greedy_verdict"] for s in saved] == ["correct", "wrong", "correct", "wrong"]
    assert [len(s["responses"]) for s in saved] == [2, 2, 2, 2] and saved[1]["verdicts"] == [
        "correct",
        "wrong",
    ]
    out = Path(report["out"])
    assert {p.name for p in out.iterdir()} == {"amc23_test.jsonl", "amc23_test.report.json", "report.json",
                                               "report.md"}  # fmt: skip
    assert "| amc23_test | 4 | 50.0 | 37.5 (k=2) | 50.0 |" in (out / "report.md").read_text()

    # --samples on the saved responses gives the same figures, in the same report shape
    out_json = io.StringIO()
    with contextlib.redirect_stdout(out_json):
        assert evaluate.main(["--task", "math", "--samples", r["samples"], "--json"]) == 0
    regraded = json.loads(out_json.getvalue())
    keys = ("problems", "greedy_accuracy", "k", "avg@k", "pass@1", "pass@k", "verdicts")
    assert {key: regraded[key] for key in keys} == {key: r[key] for key in keys}
    assert set(regraded) - {"samples_file"} == set(r) - {"benchmark", "paper_name", "cut_at_max_new_tokens",
                                                         "samples", "settings"}  # fmt: skip
    assert regraded["rows_not_graded"] == []  # the row without gold was never saved: it is in r's

    # the same command again: nothing is generated, the same report comes back
    again = evaluate_benchmarks(cfg_for(tmp_path, [str(bench)], 2), False, responder)
    assert responder.calls == 2 and again["benchmarks"] == report["benchmarks"]
    # other settings: refused, naming them; math.redo runs it again
    with pytest.raises(ConfigError, match="k: 2 there, 3 now"):
        evaluate_benchmarks(cfg_for(tmp_path, [str(bench)], 3), False, responder)
    redo = cfg_for(tmp_path, [str(bench)], 3)
    redo.math.redo = True
    assert evaluate_benchmarks(redo, False, responder)["benchmarks"]["amc23_test"]["k"] == 3


def report_for(name: str | None, greedy: float | None, avg: float | None, k: int = 32) -> dict[str, Any]:
    return {"paper_name": name, "greedy_accuracy": greedy, "avg@k": avg, "k": k if avg is not None else 0}


def test_the_papers_table_needs_all_seven_columns_and_averages_them():
    # the paper's base model row: 49.3 50.0 10.5 13.3 7.5 6.7 34.9, average 24.6
    reports = {
        "amc23": report_for("amc23", 0.500, 0.493),
        "aime24_test": report_for("aime24", 0.133, 0.105),
        "aime25": report_for("aime25", 0.067, 0.075),
        "minerva": report_for("minerva", 0.349, None),
        "gsm8k": report_for("gsm8k", 0.9, None),
    }
    table = paper_table(reports)
    assert [c["column"] for c in table["columns"]] == [
        "AMC23 avg@32", "AMC23 greedy", "AIME24 avg@32", "AIME24 greedy", "AIME25 avg@32", "AIME25 greedy",
        "Minerva greedy",
    ]  # fmt: skip
    assert [c["value"] for c in table["columns"]] == [49.3, 50.0, 10.5, 13.3, 7.5, 6.7, 34.9]
    assert table["average"] == 24.6 and len(PAPER_COLUMNS) == 7
    assert paper_table({**reports, "aime25": report_for("aime25", 0.067, None)}) is None  # greedy only
    assert paper_table({n: r for n, r in reports.items() if n != "minerva"}) is None


@pytest.mark.slow
def test_the_tiny_model_runs_a_benchmark_greedy_and_sampled_end_to_end(tmp_path):
    """The real path: model, RLVR prompt with the prefill, generation, grading, saved samples; a rerun
    with another model is refused before that model loads (it does not exist)."""
    bench = write_jsonl(tmp_path / "mini.jsonl", ROWS[:3])
    args = ["--task", "math", "--benchmark", str(bench), "--out", str(tmp_path / "out"), "--k", "2", "--json",
            "math.max_new_tokens=8", "prompt.system_prompt=Answer.", "prompt.prefill=<think>"]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert evaluate.main([*args, "--model", "tiny-random"]) == 0
    r = json.loads(stdout.getvalue())["benchmarks"]["mini"]
    assert r["problems"] == 3 and r["k"] == 2 and r["samples_per_problem"] == [2]
    assert sum(r["verdicts"]["greedy"].values()) == 3 and sum(r["verdicts"]["sampled"].values()) == 6
    assert r["settings"]["max_new_tokens"] == 8 and r["settings"]["prefill"] == "<think>"
    saved = [json.loads(line) for line in Path(r["samples"]).read_text().splitlines()]
    assert all(s["greedy"].startswith("<think>") and len(s["responses"]) == 2 for s in saved)
    assert r["cut_at_max_new_tokens"]["greedy"] <= 3
    with pytest.raises(ConfigError, match="model: 'tiny-random' there, 'no-such-model' now"):
        evaluate.main([*args, "--model", "no-such-model", "--out", str(tmp_path / "out")])
