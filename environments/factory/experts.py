"""An expert trajectory for a generated task: undo the injected bug with the bundled experts' tools.

`expert_steps(bug, source, fail_to_pass)` is pure: from the bug (the entity's text before and after the
modification, where it starts in the file) and the file's text at the clean commit, it writes the
steps an expert takes, each a short thought and one tool call (`bash`, `str_replace_editor`,
`submit`):

1. locate: grep the repository for the entity's `def`/`class`;
2. read: grep the file it is in for that `def`/`class` with the `READ_LINES` lines from it on
   (`grep -A`, no line numbers, so an edit can copy the lines as they are), a command an agent can
   write from what it has seen: the path and the name, no line arithmetic, no end it cannot know.
   Where the fix lies further down, the next `READ_LINES` lines of the same grep follow
   (`| sed -n '51,100p'`), chunk after chunk, as a reader who has not found it yet reads on;
3. reproduce: run the failing tests (`cd /testbed && python -m pytest -q <up to 3 FAIL_TO_PASS ids>`,
   or the caller's command where those ids do not exist yet, e.g. tests a test patch adds at grading),
   last before the edit, so that with the paper's window of two steps the edit sees both the code and
   what the tests expect of it;
4. edit: `str_replace` of the buggy text by the original, the inverse of the injected bug
   (`inverse_edit`): the smallest span of lines that differs, widened by neighbouring lines until it
   occurs exactly once in the buggy file;
5. verify: rerun the failing tests, then the test file(s) they live in;
6. submit.

`environments.recorder.record_steps(env, steps, ...)` executes them in a container of the task's image,
started at the task's starting state (the bug present, `diff()` taken against that state), so every
observation is real and the `.traj` replays (`environments.replay`) to the submitted fix.

The bug's fields are those of `environments.factory.bugs.Candidate` (`InjectedBug` names the few read
here). `original` must be the exact lines of the file from `start_line` on; a bug whose text is not
there is an `ExpertError`, never a trajectory with an edit that fails.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from environments.recorder import SUBMIT, Steps, bash, editor

REPRODUCE_LIMIT = 3
"""Failing tests named in the reproduce command (the rest run with their test files at verify)."""
READ_LINES = 50
"""Lines each read step shows. On the benchmark's 194 generated tasks (5 local bug kinds, 4 packages)
82% of the fixes lie in the first 50 lines of their entity (40: 74%, 60: 87%), and 50 numbered lines
print about 1,900 characters (p90 2,200), under the prompt's 3,000."""
QUOTE_MAX = 100
"""Code quoted in a thought is cut to this many characters."""

# What each SWE-smith modifier breaks, in an expert's words (says what is wrong, never the fix).
DEFECTS = {
    "func_pm_op_change": "an operator is wrong",
    "func_pm_op_change_const": "a constant is off",
    "func_pm_op_swap": "the operands are in the wrong order",
    "func_pm_op_break_chains": "part of an expression is missing",
    "func_pm_flip_operators": "an operator is inverted",
    "func_pm_remove_assign": "an assignment is missing",
    "func_pm_remove_cond": "an `if` block is missing",
    "func_pm_remove_loop": "a loop is missing",
    "func_pm_remove_wrapper": "a `with`/`try` block is missing",
    "func_pm_ctrl_invert_if": "the `if` and `else` branches are swapped",
    "func_pm_ctrl_shuffle": "statements run in the wrong order",
    "func_pm_class_rm_base": "a base class is missing",
    "func_pm_class_rm_funcs": "methods are missing",
    "func_pm_class_shuffle_funcs": "the methods are out of order",
}


class InjectedBug(Protocol):
    """The fields of a bug candidate (`environments.factory.bugs.Candidate`) an expert is made from."""

    @property
    def file(self) -> str:
        """Repo-relative POSIX path of the modified file."""
        ...

    @property
    def entity(self) -> str:
        """Qualified name of the modified function or class (`Paginator.page`)."""
        ...

    @property
    def original(self) -> str:
        """The entity's text before the modification: exact lines of the file from `start_line`."""
        ...

    @property
    def modified(self) -> str:
        """The entity's text with the bug."""
        ...

    @property
    def start_line(self) -> int:
        """1-based first line of the entity in the file."""
        ...

    @property
    def modifier(self) -> str:
        """SWE-smith's name of the modification (`func_pm_op_change`)."""
        ...


class ExpertError(ValueError):
    """No expert can be written for this bug; the message names the file and what does not match."""


@dataclass(frozen=True)
class InverseEdit:
    """The `str_replace` that undoes a bug: `old_str` occurs exactly once in the buggy file, at lines
    `first_line`..`last_line` (1-based); `buggy` and `fixed` are the lines that differ (without the
    context that made `old_str` unique), the buggy ones from line `changed_line` on."""

    old_str: str
    new_str: str
    first_line: int
    last_line: int
    changed_line: int
    buggy: tuple[str, ...]
    fixed: tuple[str, ...]


def lines_of(text: str) -> list[str]:
    """`text` split after every "\\n" only (what the editor counts as lines; str.splitlines also breaks
    at form feeds and other separators that can sit inside Python source)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def entity_texts(bug: InjectedBug, source: str) -> tuple[list[str], list[str]]:
    """The entity's original and modified lines, checked against `source` (the clean file) at
    `bug.start_line`; a final newline missing from the bug's texts is taken from the file."""
    file_lines = lines_of(source)
    original, modified = bug.original, bug.modified
    first = bug.start_line - 1
    stretch = "".join(file_lines[first : first + len(lines_of(original))]) if first >= 0 else None
    if stretch and stretch.endswith("\n") and not original.endswith("\n"):
        original += "\n"
        modified += "\n" if modified and not modified.endswith("\n") else ""
    if stretch != original:
        raise ExpertError(
            f"{bug.file}: the original text of {bug.entity} is not at line {bug.start_line} of the clean file"
        )
    return lines_of(original), lines_of(modified)


def buggy_source(bug: InjectedBug, source: str) -> str:
    """The file's text with the bug: `source` with the entity's lines replaced by `bug.modified`."""
    original, modified = entity_texts(bug, source)
    file_lines = lines_of(source)
    first = bug.start_line - 1
    return "".join(file_lines[:first] + modified + file_lines[first + len(original) :])


def inverse_edit(bug: InjectedBug, source: str) -> InverseEdit:
    """The smallest `str_replace` (whole lines) that turns the buggy file back into `source`.

    Starts from the lines that differ between the entity's two texts and adds one line of context on
    each side in turn (before first) until `old_str` is non-empty and occurs once in the buggy file,
    overlapping occurrences included, so the editor replaces exactly this place.
    """
    original, modified = entity_texts(bug, source)
    if original == modified:
        raise ExpertError(f"{bug.file}: the modification of {bug.entity} changes nothing")
    same_head = 0
    while same_head < min(len(original), len(modified)) and original[same_head] == modified[same_head]:
        same_head += 1
    same_tail = 0
    while (
        same_tail < min(len(original), len(modified)) - same_head
        and original[-1 - same_tail] == modified[-1 - same_tail]
    ):
        same_tail += 1
    fixed = original[same_head : len(original) - same_tail]
    buggy_lines = lines_of(buggy_source(bug, source))
    lo = bug.start_line - 1 + same_head
    hi = bug.start_line - 1 + len(modified) - same_tail  # exclusive: buggy_lines[lo:hi] is the bug
    buggy_text = "".join(buggy_lines)
    before, after, grow_before = 0, 0, True
    while True:
        head, tail = buggy_lines[lo - before : lo], buggy_lines[hi : hi + after]
        old, new = "".join(head + buggy_lines[lo:hi] + tail), "".join(head + fixed + tail)
        if old.endswith("\n") and new.endswith("\n"):
            old, new = old[:-1], new[:-1]
        at = len("".join(buggy_lines[: lo - before]))
        if old.strip() and buggy_text.find(old) == at and buggy_text.find(old, at + 1) == -1:
            return InverseEdit(
                old, new, lo - before + 1, hi + after, lo + 1, tuple(buggy_lines[lo:hi]), tuple(fixed)
            )
        can_before, can_after = lo - before > 0, hi + after < len(buggy_lines)
        if not (can_before or can_after):
            raise ExpertError(f"{bug.file}: no unique text around the change to {bug.entity}")
        if (grow_before and can_before) or not can_after:
            before += 1
        else:
            after += 1
        grow_before = not grow_before


def failing_tests_command(fail_to_pass: Sequence[str], limit: int = REPRODUCE_LIMIT) -> str:
    """Run the first `limit` failing tests by node id in /testbed."""
    return pytest_command(list(fail_to_pass)[:limit])


def pytest_command(targets: Sequence[str]) -> str:
    """Run pytest quietly on `targets` (node ids or files) in /testbed."""
    return "cd /testbed && python -m pytest -q " + " ".join(shlex.quote(t) for t in targets)


def files_of_tests(fail_to_pass: Sequence[str]) -> list[str]:
    """The files the node ids live in, in first-seen order."""
    return list(dict.fromkeys(test_id.split("::")[0] for test_id in fail_to_pass))


def expert_steps(
    bug: InjectedBug,
    source: str,
    fail_to_pass: Sequence[str],
    test_files: Sequence[str] | None = None,
    *,
    reproduce: str | None = None,
) -> Steps:
    """The expert's steps for `bug` (see the module docstring); `source` is `bug.file` at the clean
    commit. `test_files` (default: those of `fail_to_pass`) run at verify; `reproduce` replaces the
    command that runs the failing tests by id (use it when the ids only exist once a test patch is
    applied, as in the bundled tasks). Raises `ExpertError` when the bug does not match `source`."""
    if not fail_to_pass:
        raise ExpertError(f"{bug.file}: no failing tests to reproduce the bug in {bug.entity} with")
    fix = inverse_edit(bug, source)
    path = f"/testbed/{bug.file}"
    leaf = bug.entity.rsplit(".", 1)[-1]
    files = list(test_files) if test_files else files_of_tests(fail_to_pass)
    many = len(fail_to_pass) > 1
    fail, them = ("fail", "them") if many else ("fails", "it")
    if reproduce:
        them = "the tests" if many else "the test"
    reproduce = reproduce or failing_tests_command(fail_to_pass)
    check_files = pytest_command(files)
    named = _names(fail_to_pass)
    locate = f"grep -rn --include='*.py' -E {definition_pattern(leaf)} /testbed | head -n 20"
    # the first line the fix changes (for a pure insertion, the line after which it goes back in)
    changed = fix.changed_line - 1 if fix.buggy else max(fix.changed_line - 2, 0)
    reads = read_commands(lines_of(buggy_source(bug, source)), leaf, path, changed)
    steps: Steps = [
        (f"{named} {fail}. The failures come from `{bug.entity}`. Let me find where `{leaf}` is defined.",
         bash(locate)),
        (f"`{leaf}` is in `{bug.file}`, line {bug.start_line}. Let me read it.", bash(reads[0])),
    ]  # fmt: skip
    further = f"I have not found the bug in these lines. Let me read the next {READ_LINES}."
    steps += [(further, bash(command)) for command in reads[1:]]
    steps.append(
        (f"Now let me run {them} to see what {'they expect' if many else 'it expects'}.", bash(reproduce))
    )
    steps += [
        (_edit_thought(bug, fix), editor("str_replace", path, old_str=fix.old_str, new_str=fix.new_str)),
        (f"Rerun {named} with the fix to `{bug.entity}`.", bash(reproduce)),
    ]  # fmt: skip
    if check_files != reproduce:
        listed = ", ".join(f"`{f}`" for f in files)
        steps.append(
            (f"They pass. Now the whole of {listed}, to check nothing else broke.", bash(check_files))
        )
    steps.append((f"The tests pass with `{bug.entity}` fixed. Submit.", SUBMIT))
    return steps


def definition_pattern(leaf: str) -> str:
    """The shell-quoted `grep -E` pattern of the line that defines `leaf` (a function or a class)."""
    return f"'(def|class) {leaf}\\b'"


def read_commands(lines: Sequence[str], leaf: str, path: str, changed: int, most: int = 8) -> list[str]:
    """The read steps in a file of `lines` (the buggy file), until the last one shows line `changed`
    (0-based; the first the fix changes): `grep -A 49` from the `def`/`class` of `leaf`, then the next
    chunk of the same grep (`grep -A 99 ... | sed -n '51,100p'`) and so on, at most `most` reads."""
    pattern, regex = definition_pattern(leaf), rf"(def|class) {re.escape(leaf)}\b"
    commands = []
    for chunk in range(most):
        first, last = chunk * READ_LINES + 1, (chunk + 1) * READ_LINES
        grep = f"grep -A {last - 1} -E {pattern} {shlex.quote(path)}"
        commands.append(f"{grep} | sed -n '{first},{last}p'" if chunk else grep)
        shown = grep_output(lines, regex, last - 1)
        if changed in (shown[first - 1 : last] if chunk else shown):
            break
    return commands


def grep_output(lines: Sequence[str], pattern: str, after: int) -> list[int | None]:
    """The lines `grep -A after -E pattern` prints of a file of `lines`, as 0-based line indices, None
    for the `--` that grep prints between groups that do not touch (the reads' arithmetic)."""
    matcher, shown, until = re.compile(pattern), [], -1
    for i, line in enumerate(lines):
        if matcher.search(line):
            if shown and i > until + 1:
                shown.append(None)
            shown.extend(range(max(i, until + 1), i + after + 1 if i + after < len(lines) else len(lines)))
            until = max(until, min(i + after, len(lines) - 1))
    return shown


def _names(fail_to_pass: Sequence[str], limit: int = REPRODUCE_LIMIT) -> str:
    shown = [f"`{test_id}`" for test_id in list(fail_to_pass)[:limit]]
    more = len(fail_to_pass) - len(shown)
    if more:
        return ", ".join(shown) + f" and {more} more test{'s' if more > 1 else ''}"
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _edit_thought(bug: InjectedBug, fix: InverseEdit) -> str:
    """What is wrong and what the edit changes, in words: quotes the line for a one-line change."""
    defect = DEFECTS.get(bug.modifier, "the code does not do what the tests expect")
    where = f"In `{bug.entity}` {defect}"
    buggy, fixed = len(fix.buggy), len(fix.fixed)
    if buggy == 1 and fixed == 1:
        return f"{where}: `{_quote(fix.buggy)}` should read `{_quote(fix.fixed)}`."
    if not buggy:
        return f"{where}: {_count(fixed)} starting `{_quote(fix.fixed)}` must go back in."
    if not fixed:
        return f"{where}: the {_count(buggy)} starting `{_quote(fix.buggy)}` must go."
    return f"{where}: the {_count(buggy)} starting `{_quote(fix.buggy)}` must become {_count(fixed)} starting `{_quote(fix.fixed)}`."


def _count(n: int) -> str:
    return f"{n} line{'s' if n != 1 else ''}"


def _quote(lines: Sequence[str]) -> str:
    """The first non-blank of `lines`, stripped and cut to `QUOTE_MAX` characters."""
    text = next((line.strip() for line in lines if line.strip()), "")
    return text if len(text) <= QUOTE_MAX else text[: QUOTE_MAX - 3] + "..."
