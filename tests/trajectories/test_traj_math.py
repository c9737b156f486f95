"""Math step splitting (pure functions) and the bundled math set."""

from __future__ import annotations

import json

import pytest

from trajectories.errors import BadRecord
from trajectories.math_steps import (
    bundled_math_path,
    first_solution,
    last_boxed,
    read_math_row,
    read_s1k,
    split_freeform,
    split_gsm8k,
    split_numbered_steps,
)
from trajectories.sources import read_source


def test_numbered_steps_keep_preamble_and_ignore_out_of_sequence_numbers():
    text = (
        "We use the formula for the sum.\n\n"
        "1. **Set up** Let S = 1 + 2.\n"
        "   3. **Aside** a nested remark that is not step 2\n"
        "2. **Compute:** S = 3.\n"
        "Therefore \\boxed{3}."
    )
    preamble, steps, titles = split_numbered_steps(text)
    assert preamble == "We use the formula for the sum."
    assert titles == ["Set up", "Compute"]
    assert steps == [
        "1. **Set up** Let S = 1 + 2.\n   3. **Aside** a nested remark that is not step 2",
        "2. **Compute:** S = 3.\nTherefore \\boxed{3}.",
    ]
    assert split_numbered_steps("No numbered steps, just prose.") is None
    assert split_numbered_steps("2. **Starts at two** x") is None


def test_gsm8k_lines_drop_annotations_and_keep_the_answer():
    steps, answer = split_gsm8k(
        "He has 3*4=<<3*4=12>>12 eggs.\n\nThen 1,200 + 12 = <<1200+12=1212>>1,212.\n#### 1,212"
    )
    assert steps == ["He has 3*4=12 eggs.", "Then 1,200 + 12 = 1,212."]
    assert answer == "1212"
    with pytest.raises(ValueError, match="####"):
        split_gsm8k("no final line")


def test_freeform_fallback_paragraphs_lines_and_merging():
    assert split_freeform("First we note x = 2.\n\nThen y = 3 by (1).\n\nSo $\\boxed{5}$.") == [
        "First we note x = 2.",
        "Then y = 3 by (1).",
        "So $\\boxed{5}$.",
    ]
    # One paragraph: split into lines; a line ending in ':' or ',' continues into the next one,
    # and a piece shorter than MIN_PIECE_CHARS joins its neighbour.
    assert split_freeform("Subtracting, we get,\n$a - b = 1$\nso\n$a = 1 + b$ holds here.\n-ok") == [
        "Subtracting, we get,\n$a - b = 1$",
        "so\n$a = 1 + b$ holds here.\n-ok",
    ]


def test_step_end_after_numbered_lines_and_free_text():
    from trajectories.math_steps import step_end

    numbered = "3. **Add** 12 + 7 = 19.\nstill step 3\n\n4. **Give** more"
    assert step_end(numbered) == (numbered.index("\n\n4.") + 1, numbered.index("Give"))
    assert step_end("3. **Add** 12\n4.") is None  # a next header not yet complete
    assert step_end("\n  She has 9 eggs.\nShe sells") == (18, 19)  # leading whitespace is not the end
    assert step_end("She has 9 eggs.") is None and step_end(" \n ") is None


def test_first_solution_stops_at_an_author_signature():
    text = "Solve: x = 2.\nSo $\\boxed{2}$.\n~alice\nAnother way: 1 + 1 = 2.\n-bob_2"
    assert first_solution(text) == ("Solve: x = 2.\nSo $\\boxed{2}$.\n", True)
    assert first_solution("- 3x = 6 is a step, not a signature\nso x = -2") == (
        "- 3x = 6 is a step, not a signature\nso x = -2",
        False,
    )


def test_last_boxed_matches_nested_braces():
    assert last_boxed("first \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("no box") is None


def test_s1k_rows_numbered_fallback_and_required():
    row = {
        "question": "What is 2+3?",
        "solution": "5",
        "cot_type": "math",
        "source_type": "x",
        "deepseek_attempt": "Add them.\n1. **Add** 2 + 3 = 5.\n2. **Answer** \\boxed{5}",
    }
    p = read_s1k(row)
    assert (p.step_format, p.preamble, p.titles, p.answer) == (
        "numbered",
        "Add them.",
        ["Add", "Answer"],
        "5",
    )
    prose = dict(
        row, deepseek_attempt="Adding gives 5.\n\nThe answer is \\boxed{5}.", solution="long reference " * 10
    )
    p = read_s1k(prose)
    assert (
        p.step_format == "freeform"
        and p.steps == ["Adding gives 5.", "The answer is \\boxed{5}."]
        and p.answer == "5"
    )
    with pytest.raises(BadRecord, match="no numbered"):
        read_s1k(prose, require_numbered=True)
    v1 = {
        "question": "q?",
        "attempt": "1. **Only** \\boxed{1}",
        "thinking_trajectories": ["..."],
        "solution": "1",
    }
    assert read_s1k(v1).steps == ["1. **Only** \\boxed{1}"]


def test_math_rows_prefer_the_answer_field():
    p = read_math_row({"problem": "p", "solution": "a\n\nb \\boxed{3}", "answer": 3.0, "level": "Level 2"})
    assert p.answer == "3" and p.steps == ["a\nb \\boxed{3}"]  # "a" is too short to stand alone
    p = read_math_row({"problem": "p", "solution": "We get $x = 4$.\n\nSo \\boxed{4}."})
    assert p.answer == "4" and p.steps == ["We get $x = 4$.", "So \\boxed{4}."]
    with pytest.raises(BadRecord, match="no solution"):
        read_math_row({"problem": "p", "answer": 27.0})


def test_bundled_math_set():
    path = bundled_math_path()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 30
    keys = {
        "question",
        "solution",
        "cot_type",
        "source_type",
        "metadata",
        "deepseek_thinking_trajectory",
        "deepseek_attempt",
    }
    assert all(keys <= set(r) for r in rows)
    result = read_source(path, require_numbered_steps=True)
    assert result.skipped == [] and len(result.items) == len(rows)
    assert len({p.problem_id for p in result.items}) == len(rows)
    for p in result.items:
        assert 2 <= len(p.steps) <= 5 and p.step_format == "numbered"
        assert all(len(s) < 160 for s in p.steps)  # short enough for a 135M model on a CPU
        assert last_boxed(p.steps[-1]) == p.answer  # the last step states the reference answer
    assert sum(p.preamble is not None for p in result.items) >= 3
