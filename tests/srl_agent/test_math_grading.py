"""Math answer grading: extraction from hand-written responses, math-verify checks in a worker that a
hanging check cannot stall, and pass@k / avg@k on hand-computed cases."""

from __future__ import annotations

import time

import pytest

from srl_agent.eval.math_grading import Checker, avg_at_k, extract_answer, pass_at_k


def slow_check(gold: str, answer: str) -> bool:
    """A check that hangs (stands in for a pathological expression); importable by the worker."""
    time.sleep(60)
    return True


def failing_check(gold: str, answer: str) -> bool:
    raise ValueError("cannot parse")


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("so x = \\boxed{5}.", "5"),
        ("first \\boxed{3}, then on reflection \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
        ("The total is 18 eggs.\n#### 18", "18"),
        ("He made $70,000.\n#### 70,000", "70000"),
        ("no final answer here", None),
        ("\\boxed{}", None),
    ],
)
def test_the_final_answer_is_the_last_boxed_or_the_gsm8k_line(response, answer):
    assert extract_answer(response) == answer


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("So the total number of bolts is 2 + 1 = 3 bolts.", "3"),  # the last number
        ("The answer is 220. Check: 60 * 3 = 180 and 4 * 10 = 40.", "220"),  # stated beats the last
        ("so the answer is $1,250.50 in all", "1250.50"),
        ("The answer is five, 5 eggs less than 12", "5"),
        ("half of it: 1/2", "1/2"),
        ("it ends at -3.", "-3"),
        ("the box wins: \\boxed{7}, not 8", "7"),
        ("no number at all", None),
    ],
)
def test_the_lenient_reading_takes_a_stated_or_last_number(response, answer):
    assert extract_answer(response, lenient=True) == answer
    if "boxed" not in response:
        assert extract_answer(response) is None  # the strict reading never guesses


def test_a_lenient_checker_grades_unboxed_answers():
    with Checker(timeout=30, lenient=True) as checker:
        assert checker.check("3", "the total is 2 + 1 = 3 bolts.").verdict == "correct"
        assert checker.check("18", "She makes 9 * 2 = $20 a day").verdict == "wrong"
        assert checker.check("18", "no number").verdict == "no_answer"


def test_checks_agree_with_math_verify_and_report_missing_answers():
    with Checker(timeout=30) as checker:
        assert checker.check("5", "x = \\boxed{5}").correct
        assert checker.check("0.5", "\\boxed{\\frac{1}{2}}").correct  # fractions vs decimals
        assert checker.check("\\frac{m}{n}", "\\boxed{\\frac{m}{n}}").correct
        assert checker.check("18", "#### 18").correct
        assert checker.check("5", "\\boxed{6}").verdict == "wrong"
        missing = checker.check("5", "I think it is five")
        assert missing.verdict == "no_answer" and missing.answer is None


def test_a_hanging_check_times_out_and_the_next_check_runs():
    with Checker(timeout=1.0, fn=slow_check) as checker:
        started = time.perf_counter()
        hung = checker.check("1", "\\boxed{1}")
        assert hung.verdict == "timeout" and time.perf_counter() - started < 30
    with Checker(timeout=30, fn=failing_check) as checker:
        broken = checker.check("1", "\\boxed{1}")
        assert broken.verdict == "error" and "cannot parse" in broken.detail
    with Checker(timeout=30) as checker:  # a fresh worker after a kill works as before
        assert checker.check("2", "\\boxed{2}").correct


def test_pass_at_k_and_avg_at_k_on_hand_computed_cases():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2)/C(4,2) = 3/6
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than k wrong samples: some pick is right
    assert pass_at_k(32, 8, 32) == 1.0
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)
    assert avg_at_k([[True, False, False, False], [True, True, True, True]]) == pytest.approx(0.625)
    assert avg_at_k([]) == 0.0


def test_samples_in_the_qwen_math_output_format_are_graded_with_every_row_accounted_for(tmp_path):
    """`evaluate --task math --samples FILE`: the toolkit's rows (`gt`, `code`), our own (`answer`,
    `responses`), a row without a gold answer, a line that is not JSON and one that is JSON but not an
    object: counted, never skipped."""
    import contextlib
    import io
    import json

    from srl_agent import evaluate

    rows = [
        {"idx": 0, "question": "1+1?", "gt": "2", "code": ["\\boxed{2}", "\\boxed{3}", "it is two"]},
        {
            "idx": 1,
            "question": "half?",
            "gt": "0.5",
            "code": ["\\boxed{\\frac12}", "\\boxed{1/2}", "\\boxed{2}"],
        },
        {"id": 2, "problem": "x?", "answer": 27.0, "responses": ["#### 27", "#### 26", "#### 25"]},
        {"idx": 3, "question": "no gold", "code": ["\\boxed{1}"]},
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n[1, 2]\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = evaluate.main(
            ["--task", "math", "--samples", str(path), "--json", f"eval.output={tmp_path / 'graded.jsonl'}"]
        )
    report = json.loads(out.getvalue())
    assert code == 0 and report["problems"] == 3 and report["samples_per_problem"] == [3]
    assert report["verdicts"] == {"greedy": {}, "sampled": {"correct": 4, "wrong": 4, "no_answer": 1}}
    assert report["greedy_accuracy"] is None and report["k"] == 3
    assert report["avg@k"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 3) / 3)
    assert report["pass@1"] == pytest.approx(report["avg@k"]) and report["pass@k"] == 1.0
    assert [b["row"] for b in report["rows_not_graded"]] == [4, 5, 6]
    assert report["rows_not_graded"][2]["reason"] == "not a JSON object"
    graded = [json.loads(line) for line in (tmp_path / "graded.jsonl").read_text().splitlines()]
    assert graded[0]["verdicts"] == ["correct", "wrong", "no_answer"]
