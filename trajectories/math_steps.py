"""Math solutions cut into steps, and readers for s1K / s1K-1.1, GSM8K and MATH-like rows.

Step rules (pure functions, formats.md §9):
- Numbered (`split_numbered_steps`, s1K-1.1 `deepseek_attempt`): a step starts at a line
  `N. **Title** ...` where N continues the sequence 1, 2, 3, ...; a numbered bold line that breaks the
  sequence belongs to the current step. Text before step 1 is the preamble (kept as context, never a
  target); text after the last step header belongs to the last step.
- GSM8K (`split_gsm8k`): one step per non-empty line before `####`; calculator annotations `<<a*b=c>>`
  are removed; the text after `####` (commas dropped) is the final answer.
- Free-form fallback (`split_freeform`, MATH, AIME, Minerva, s1K rows without numbered steps):
  paragraphs separated by blank lines; a solution that is a single paragraph is split into lines;
  then a piece that ends with `:` or `,` (a sentence that continues), or is shorter than
  `MIN_PIECE_CHARS`, is joined to the next piece (the last piece joins the previous one).
- Several solutions in one text (AoPS-wiki AIME/AMC rows: each ends with an author signature line
  such as `~name` or `-name`): only the first is kept (`first_solution`), since steps from
  alternative solutions do not continue each other.
- The final answer of a free-form solution is the content of its last `\\boxed{...}` (or `\\fbox`),
  found with brace matching (`last_boxed`); a row's own `answer` field wins when it has one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trajectories.errors import BadRecord

MIN_PIECE_CHARS = 12
StepFormat = Literal["numbered", "gsm8k_lines", "freeform"]

_NUMBERED = re.compile(r"^[ \t]*(\d+)\.[ \t]+\*\*(.+?)\*\*", re.MULTILINE)
_ANNOTATION = re.compile(r"<<[^<>]*>>")
_SIGNATURE = re.compile(r"^[ \t]*[~-][ \t]?[A-Za-z][\w.]*[ \t]*$", re.MULTILINE)


@dataclass
class MathProblem:
    """A problem with its expert solution cut into steps; `steps[k]` is the target of example k.

    `titles[k]` is step k's bold title (numbered steps only), used by the optional next-title hint.
    `preamble` is solution text before step 1. `answer` is the final answer for outcome rewards.
    """

    problem: str
    steps: list[str]
    answer: str | None
    problem_id: str
    source_format: str
    step_format: StepFormat
    titles: list[str | None] = field(default_factory=list)
    preamble: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def bundled_math_path() -> Path:
    """The project's own math set (s1K-1.1 schema, numbered steps): the trainer's default data source."""
    return Path(__file__).parent / "data" / "math_steps.jsonl"


# ---------------------------------------------------------------------------------------------------
# step splitting (pure)


def split_numbered_steps(text: str) -> tuple[str | None, list[str], list[str]] | None:
    """(preamble, steps, titles) for a `1. **Title** ...` solution, or None when it has no step 1."""
    starts: list[tuple[int, str]] = []
    for m in _NUMBERED.finditer(text):
        if int(m.group(1)) == len(starts) + 1:
            starts.append((m.start(), m.group(2).strip().rstrip(":").strip()))
    if not starts:
        return None
    preamble = text[: starts[0][0]].strip() or None
    ends = [s for s, _ in starts[1:]] + [len(text)]
    steps = [text[s:e].strip() for (s, _), e in zip(starts, ends)]
    return preamble, steps, [t for _, t in starts]


_NEXT_NUMBERED_LINE = re.compile(r"\n[ \t]*\d+\.[ \t]+\*\*")


def step_end(action: str) -> tuple[int, int] | None:
    """Where the step that `action` writes ends, once the text shows that a next step has begun.

    Returns (end, seen): the step is `action[:end]`, and `action[:seen]` is the shortest prefix that
    shows it ended; None while no next step has begun. The rule follows the step formats above:
    - an action that opens with a numbered header (`3. **Title** ...`) ends where a later line opens
      with one (any number): the step may span lines and paragraphs, as s1K-1.1 steps do;
    - any other action (a GSM8K line, a free-form piece) ends at its first line break after some
      text. A free-form step that spans lines (display math) is cut at its first line break: the
      limit of judging from the text alone.
    Leading whitespace before the step's text never ends it.
    """
    body = len(action) - len(action.lstrip())
    if body == len(action):
        return None
    if _NUMBERED.match(action[body:]):
        m = _NEXT_NUMBERED_LINE.search(action, body)
        return (m.start(), m.end()) if m else None
    newline = action.find("\n", body)
    return (newline, newline + 1) if newline >= 0 else None


def split_gsm8k(answer: str) -> tuple[list[str], str]:
    """(steps, final answer) of a GSM8K answer; ValueError when there is no `####` line."""
    body, sep, final = answer.rpartition("####")
    if not sep:
        raise ValueError("no '#### <answer>' line")
    steps = [_ANNOTATION.sub("", line).strip() for line in body.split("\n")]
    return [s for s in steps if s], final.strip().replace(",", "")


def split_freeform(solution: str) -> list[str]:
    pieces = [p.strip() for p in re.split(r"\n[ \t]*\n", solution.strip()) if p.strip()]
    if len(pieces) == 1:
        pieces = [line.strip() for line in pieces[0].split("\n") if line.strip()]
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        text = f"{carry}\n{piece}" if carry else piece
        if text.rstrip().endswith((":", ",")) or len(text) < MIN_PIECE_CHARS:
            carry = text
        else:
            merged.append(text)
            carry = ""
    if carry:
        if merged:
            merged[-1] = f"{merged[-1]}\n{carry}"
        else:
            merged.append(carry)
    return merged


def first_solution(solution: str) -> tuple[str, bool]:
    """(text up to the first author-signature line, whether anything was cut)."""
    m = _SIGNATURE.search(solution)
    if m is None or not solution[: m.start()].strip():
        return solution, False
    return solution[: m.start()], True


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` in `text` (nested braces matched), else None."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            best = text[m.end() : i - 1].strip()
    return best


# ---------------------------------------------------------------------------------------------------
# readers: record (dict) -> MathProblem


def read_s1k(record: dict[str, Any], require_numbered: bool = False) -> MathProblem:
    """s1K-1.1 (`deepseek_attempt`) or s1K (`attempt`) rows; free-form fallback unless `require_numbered`."""
    problem = _str_field(record, "question")
    key = "deepseek_attempt" if record.get("deepseek_attempt") is not None else "attempt"
    attempt = _str_field(record, key)
    solution = record.get("solution") if isinstance(record.get("solution"), str) else ""
    answer = last_boxed(solution) or (solution.strip() if 0 < len(solution.strip()) <= 64 else None)
    answer = answer or last_boxed(attempt)
    numbered = split_numbered_steps(attempt)
    meta = {k: record[k] for k in ("cot_type", "source_type") if isinstance(record.get(k), str)}
    if numbered is not None:
        preamble, steps, titles = numbered
        return MathProblem(
            problem, steps, answer, _problem_id(record, problem), "s1k", "numbered", titles, preamble, meta
        )
    if require_numbered:
        raise BadRecord(f"{key} has no numbered '1. **Title**' steps (require_numbered_steps is on)")
    steps = split_freeform(attempt)
    if not steps:
        raise BadRecord(f"{key} is empty")
    return MathProblem(problem, steps, answer, _problem_id(record, problem), "s1k", "freeform", meta=meta)


def read_gsm8k(record: dict[str, Any]) -> MathProblem:
    problem = _str_field(record, "question")
    try:
        steps, final = split_gsm8k(_str_field(record, "answer"))
    except ValueError as e:
        raise BadRecord(f"answer: {e}") from None
    if not steps:
        raise BadRecord("answer: no solution lines before '####'")
    return MathProblem(problem, steps, final, _problem_id(record, problem), "gsm8k", "gsm8k_lines")


def read_math_row(record: dict[str, Any]) -> MathProblem:
    """MATH / MATH-500 / AIME / Minerva / Qwen-eval rows: `problem` (or `question`) + `solution`."""
    problem = _str_field(record, "problem" if "problem" in record else "question")
    if not isinstance(record.get("solution"), str) or not record["solution"].strip():
        raise BadRecord("no solution text to split into steps (an answer-only row cannot give SRL steps)")
    solution = record["solution"]
    answer = record.get("answer")
    if isinstance(answer, float) and answer.is_integer():
        answer = str(int(answer))
    answer = str(answer) if isinstance(answer, (str, int, float)) and not isinstance(answer, bool) else None
    meta = {
        k: record[k] for k in ("level", "type", "subject", "url") if isinstance(record.get(k), (str, int))
    }
    first, cut = first_solution(solution)
    if cut:
        meta["later_solutions_dropped"] = True
    return MathProblem(
        problem,
        split_freeform(first),
        answer or last_boxed(solution),
        _problem_id(record, problem),
        "math",
        "freeform",
        meta=meta,
    )


def _str_field(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        raise BadRecord(f"{key}: missing")
    if not isinstance(value, str):
        raise BadRecord(f"{key}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRecord(f"{key}: empty")
    return value


def _problem_id(record: dict[str, Any], problem: str) -> str:
    for key in ("unique_id", "id", "idx", "problem_id"):
        value = record.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return "sha1:" + hashlib.sha1(problem.encode("utf-8")).hexdigest()[:12]
