"""The task factory's experts and problem statements: the inverse edit of an injected bug, the steps,
statements from tests and templates (pure, no Docker), and one expert built from a bundled task's gold
patch, recorded in its container and replayed to resolved (docker tier)."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from environments.factory.experts import (
    ExpertError,
    buggy_source,
    expert_steps,
    failing_tests_command,
    grep_output,
    inverse_edit,
    lines_of,
    pytest_command,
)
from environments.factory.statements import (
    MissingTestSource,
    first_changed_line,
    from_template,
    from_test,
    order_of_tests,
    output_command,
    pick_test,
    source_of_test,
    trim,
)


@dataclass(frozen=True)
class Bug:
    """The fields of a bug candidate the expert reads (`InjectedBug`)."""

    file: str
    entity: str
    original: str
    modified: str
    start_line: int
    modifier: str = "func_pm_op_change"


SOURCE = '''"""Shapes."""


def area(w, h):
    if w < 0:
        raise ValueError(w)
    return w * h


def perimeter(w, h):
    if w < 0:
        raise ValueError(w)
    total = 2 * w
    total += 2 * h
    return total
'''
F2P = ["tests/test_shapes.py::test_area", "tests/test_shapes.py::TestPerimeter::test_square[2]"]


def entity_bug(
    name: str, old: str, new: str, modifier: str = "func_pm_op_change", source: str = SOURCE
) -> Bug:
    """A bug in function `name` of `source`: its text with `old` replaced by `new` (once)."""
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
    original = "".join(lines_of(source)[node.lineno - 1 : node.end_lineno])
    assert original.count(old) == 1
    return Bug("shapes.py", name, original, original.replace(old, new), node.lineno, modifier)


def test_a_one_line_bug_is_undone_by_replacing_that_line_alone():
    bug = entity_bug("area", "w * h", "w + h")
    fix = inverse_edit(bug, SOURCE)
    assert (fix.old_str, fix.new_str) == ("    return w + h", "    return w * h")
    assert fix.first_line == fix.last_line == fix.changed_line == 7
    assert buggy_source(bug, SOURCE).replace(fix.old_str, fix.new_str) == SOURCE


def test_a_line_that_occurs_twice_is_widened_until_unique():
    bug = entity_bug("perimeter", "    if w < 0:", "    if w <= 0:")  # `raise ValueError(w)` follows in both
    fix = inverse_edit(bug, SOURCE)
    assert fix.old_str == "    if w <= 0:"  # the changed line is already unique: no context added
    guard = "if w < 0:\n        raise ValueError(w)\n    total = 2 * w"
    bug = entity_bug("perimeter", guard, "total = 2 * w", "func_pm_remove_cond")
    fix = inverse_edit(bug, SOURCE)
    buggy = buggy_source(bug, SOURCE)
    assert buggy.count(fix.old_str) == 1 and buggy.replace(fix.old_str, fix.new_str) == SOURCE
    assert (
        fix.old_str == "def perimeter(w, h):"
    )  # two lines gone: the unique line before them anchors the edit

    twice = (
        SOURCE
        + "\n\ndef volume(w, h, d):\n    if w < 0:\n        raise ValueError(w)\n    return w * h * d\n"
    )
    bug = entity_bug(
        "volume", "    if w < 0:\n        raise ValueError(w)\n", "", "func_pm_remove_cond", twice
    )
    fix = inverse_edit(bug, twice)
    buggy = buggy_source(bug, twice)
    # the line before the gap (`def volume...`) is unique, so one line of context is enough
    assert fix.old_str == "def volume(w, h, d):" and fix.new_str.startswith(
        "def volume(w, h, d):\n    if w < 0:"
    )
    assert buggy.replace(fix.old_str, fix.new_str) == twice


def test_an_ambiguous_change_takes_context_from_both_sides():
    source = (
        "def f(x):\n    y = x\n    y = x\n    return y\n\n\ndef g(x):\n    y = x\n    y = x\n    return y\n"
    )
    node = ast.parse(source).body[1]
    original = "".join(lines_of(source)[node.lineno - 1 : node.end_lineno])
    bug = Bug("m.py", "g", original, original.replace("    y = x\n    y = x\n", "    y = x\n    y = -x\n"),
              node.lineno, "func_pm_op_change")  # fmt: skip
    fix = inverse_edit(bug, source)
    buggy = buggy_source(bug, source)
    assert fix.old_str == "    y = -x"  # unique as it is
    bug = replace(bug, modified=original.replace("    y = x\n    y = x\n", "    y = x\n"))  # one line removed
    fix = inverse_edit(bug, source)
    buggy = buggy_source(bug, source)
    assert buggy.count(fix.old_str) == 1 and buggy.replace(fix.old_str, fix.new_str) == source
    assert fix.old_str == "def g(x):\n    y = x\n    return y"  # `y = x` and `y = x\n    return y` recur in f
    # the same bug in f: the first occurrence of `y = x` is the anchor's own place, but it recurs after it
    node = ast.parse(source).body[0]
    original = "".join(lines_of(source)[node.lineno - 1 : node.end_lineno])
    bug = Bug("m.py", "f", original, original.replace("    y = x\n    y = x\n", "    y = x\n"), 1, "x")
    fix = inverse_edit(bug, source)
    assert fix.old_str == "def f(x):\n    y = x\n    return y"
    assert buggy_source(bug, source).replace(fix.old_str, fix.new_str, 1) == source


def test_a_bug_that_does_not_match_the_file_is_refused():
    bug = entity_bug("area", "w * h", "w + h")
    with pytest.raises(ExpertError, match="shapes.py: the original text of area is not at line 5"):
        inverse_edit(replace(bug, start_line=5), SOURCE)
    with pytest.raises(ExpertError, match="changes nothing"):
        inverse_edit(replace(bug, modified=bug.original), SOURCE)
    with pytest.raises(ExpertError, match="no failing tests"):
        expert_steps(bug, SOURCE, [])
    # a bug whose texts lack the final newline the file has is read as the same lines
    trimmed = replace(bug, original=bug.original.rstrip("\n"), modified=bug.modified.rstrip("\n"))
    assert buggy_source(trimmed, SOURCE) == buggy_source(bug, SOURCE)


def test_lines_break_at_newlines_only():
    assert lines_of("a\x0cb\nc") == ["a\x0cb\n", "c"]
    assert lines_of("a\n") == ["a\n"] and lines_of("") == []


def test_expert_steps_locate_read_reproduce_edit_verify_submit():
    bug = entity_bug("area", "w * h", "w + h")
    f2p = [*F2P, "tests/test_other.py::test_x", "tests/test_other.py::test_y"]
    steps = expert_steps(bug, SOURCE, f2p)
    assert [call.name for _, call in steps] == ["bash", "bash", "bash", "str_replace_editor",
                                                "bash", "bash", "submit"]  # fmt: skip
    assert "(def|class) area\\b" in steps[0][1].arguments["command"]
    # the read step: the entity from its def on, written from the path and the name, and printed
    # without line numbers, so the edit can copy its lines as they are
    assert steps[1][1].arguments["command"] == "grep -A 49 -E '(def|class) area\\b' /testbed/shapes.py"
    # the tests run last before the edit: with a window of two steps the edit sees the code and them
    reproduce = steps[2][1].arguments["command"]
    assert (
        reproduce
        == failing_tests_command(f2p)
        == (
            "cd /testbed && python -m pytest -q tests/test_shapes.py::test_area "
            "'tests/test_shapes.py::TestPerimeter::test_square[2]' tests/test_other.py::test_x"
        )
    )
    edit = steps[3][1].arguments
    assert (edit["command"], edit["old_str"], edit["new_str"]) == (
        "str_replace",
        "    return w + h",
        "    return w * h",
    )
    assert steps[4][1].arguments["command"] == reproduce
    assert steps[5][1].arguments["command"] == pytest_command(["tests/test_shapes.py", "tests/test_other.py"])
    thoughts = [thought for thought, _ in steps]
    assert "`tests/test_shapes.py::test_area`" in thoughts[0] and "and 1 more test fail" in thoughts[0]
    assert "`area`" in thoughts[0] and "`shapes.py`, line 4" in thoughts[1]
    # the thought quotes what the read shows (no line number the read does not print)
    assert thoughts[3] == "In `area` an operator is wrong: `return w + h` should read `return w * h`."
    assert all(thoughts) and len(set(thoughts)) == len(thoughts)


def test_the_callers_test_command_replaces_the_failing_ids():
    bug = entity_bug("area", "w * h", "w + h", "func_pm_something_new")
    run_file = pytest_command(["tests/test_shapes.py"])
    steps = expert_steps(bug, SOURCE, F2P, ["tests/test_shapes.py"], reproduce=run_file)
    commands = [call.arguments.get("command") for _, call in steps]
    assert (
        commands.count(run_file) == 2 and len(steps) == 6
    )  # the file runs at reproduce and verify, once each
    assert "does not do what the tests expect" in steps[3][0]  # an unknown modifier still gets a thought


def test_a_fix_past_the_read_lines_is_read_on_chunk_by_chunk():
    body = "".join(f"    x{i} = {i}\n" for i in range(200))
    source = f"def big():\n{body}    return x150\n"
    late = Bug(
        "big.py", "big", source, source.replace("x150 = 150", "x150 = 151"), 1, "func_pm_op_change_const"
    )
    commands = [call.arguments.get("command") for _, call in expert_steps(late, source, ["t.py::test_big"])]
    grep = "grep -A {} -E '(def|class) big\\b' /testbed/big.py"
    # line 152 of the file is the 152nd the grep prints: the fourth chunk of 50
    assert commands[1:5] == [
        grep.format(49),
        grep.format(99) + " | sed -n '51,100p'",
        grep.format(149) + " | sed -n '101,150p'",
        grep.format(199) + " | sed -n '151,200p'",
    ]
    assert commands[5].startswith("cd /testbed && python -m pytest") and commands[6] == "str_replace"
    # line 50 is the last the first read shows: a fix there needs no second read; line 51 does
    for line, reads in [(50, 1), (51, 2)]:
        at = f"x{line - 2} = {line - 2}"
        bug = replace(late, modified=source.replace(at, at + "0"))
        commands = [
            call.arguments.get("command") for _, call in expert_steps(bug, source, ["t.py::test_big"])
        ]
        assert sum("grep -A" in (c or "") for c in commands) == reads, line
    # a bug at two places (an edit of 21 lines): the read that shows its first changed line is enough
    two = replace(late, modified=source.replace("x38 = 38", "x38 = 0").replace("x58 = 58", "x58 = 0"))
    commands = [call.arguments.get("command") for _, call in expert_steps(two, source, ["t.py::test_big"])]
    assert sum("grep -A" in (c or "") for c in commands) == 1


def test_the_reads_count_grep_s_lines_when_the_name_is_defined_twice():
    lines = lines_of("def f():\n    a = 1\n    b = 2\n\n\nclass C:\n    def f(self):\n        return 3\n")
    # two groups that do not touch are printed with `--` between them, as grep does
    assert grep_output(lines, r"(def|class) f\b", 1) == [0, 1, None, 6, 7]
    assert grep_output(lines, r"(def|class) f\b", 5) == [0, 1, 2, 3, 4, 5, 6, 7]


# -- problem statements --------------------------------------------------------------------------------

TESTS = """import pytest


def helper():
    return 1


@pytest.mark.parametrize("n", [1, 2])
def test_area(n):
    assert area(n, 1) == n


class TestPerimeter:
    def test_square(self):
        assert perimeter(1, 1) == 4

    class TestNested:
        def test_deep(self):
            assert True


def test_area(n):
    assert "redefined"
"""


def test_source_of_a_function_a_method_and_a_nested_method():
    assert source_of_test(TESTS, "tests/t.py::test_area[2]") == 'def test_area(n):\n    assert "redefined"'
    assert source_of_test(TESTS, "tests/t.py::TestPerimeter::test_square") == (
        "class TestPerimeter:\n    def test_square(self):\n        assert perimeter(1, 1) == 4"
    )
    assert source_of_test(TESTS, "tests/t.py::TestPerimeter::TestNested::test_deep") == (
        "class TestPerimeter:\n    class TestNested:\n        def test_deep(self):\n            assert True"
    )
    decorated = TESTS.replace('\n\ndef test_area(n):\n    assert "redefined"\n', "")
    assert source_of_test(decorated, "tests/t.py::test_area[1]").startswith("@pytest.mark.parametrize")


def test_a_test_that_is_not_in_its_file_is_a_clear_error():
    with pytest.raises(MissingTestSource, match="tests/t.py::test_gone: tests/t.py defines no `test_gone`"):
        source_of_test(TESTS, "tests/t.py::test_gone")
    with pytest.raises(MissingTestSource, match="`helper` in tests/t.py is not a class"):
        source_of_test(TESTS, "tests/t.py::helper::test_x")
    with pytest.raises(MissingTestSource, match="does not parse"):
        source_of_test("def (:\n", "tests/t.py::test_x")
    with pytest.raises(MissingTestSource, match="not a test node id"):
        source_of_test(TESTS, "tests/t.py")


def test_the_chosen_test_is_deterministic_by_seed_and_key(tmp_path: Path):
    tests = [f"tests/t.py::test_{i}" for i in range(8)]
    assert order_of_tests(tests, 3, "a") == order_of_tests(list(reversed(tests)), 3, "a")
    assert sorted(order_of_tests(tests, 3, "a")) == tests
    orders = {tuple(order_of_tests(tests, seed, "a")) for seed in range(10)}
    assert len(orders) > 1 and {tuple(order_of_tests(tests, 3, key)) for key in "abcdef"} != {orders.pop()}
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/t.py").write_text(TESTS)

    def read(path: str) -> str:
        return (tmp_path / path).read_text()

    picked = pick_test(["tests/t.py::test_gone", "tests/t.py::TestPerimeter::test_square"], read, 0)
    assert picked == ("tests/t.py::TestPerimeter::test_square", source_of_test(TESTS, picked[0]))
    assert pick_test(["tests/t.py::test_gone", "missing.py::test_x"], read, 0) is None


def test_a_statement_from_a_test_quotes_its_source_and_output_without_durations():
    output = (
        "============================= test session starts ==============================\n"
        "tests/t.py::test_area[2] FAILED                                          [100%]\n"
        "E       assert 3 == 2\n"
        "============================== 1 failed in 0.05s ===============================\n"
    )
    assert output_command("tests/t.py::test_area[2]") == (
        "cd /testbed && python -m pytest -v --showlocals --tb=long --color=no 'tests/t.py::test_area[2]'"
    )
    text = from_test("tests/t.py::test_area[2]", source_of_test(TESTS, "tests/t.py::test_area[2]"), output)
    assert 'def test_area(n):\n    assert "redefined"' in text and "E       assert 3 == 2" in text
    assert "1 failed ===" in text and "0.05s" not in text
    assert text.startswith("The test `tests/t.py::test_area[2]` fails.")

    long_output = "".join(f"line {i}\n" for i in range(5000)) + "E   AssertionError: the end\n"
    long = from_test("tests/t.py::test_area", "def test_area():\n" + "    x = 1\n" * 2000, long_output)
    assert len(long) < 9000 and long.count("characters left out ...]") == 2
    assert "line 0\n" in long and "E   AssertionError: the end" in long


def test_trim_keeps_whole_lines_from_both_ends():
    text = "".join(f"{i:04d}\n" for i in range(1000))
    assert trim(text, len(text)) == text
    cut = trim(text, 100, head_share=0.3)
    head, marker, tail = re.split(r"(\[\.\.\. \d+ characters left out \.\.\.\]\n)", cut)
    assert text.startswith(head) and text.endswith(tail) and head.endswith("\n")
    assert len(head) + len(tail) <= 100 and int(marker.split()[1]) == len(text) - len(head) - len(tail)


def test_template_statements_name_file_entity_and_tests_and_nothing_of_the_fix():
    many = [f"tests/t.py::test_{i}" for i in range(7)]
    texts = {from_template("pkg/shapes.py", "Shape.area", many, seed, "k") for seed in range(40)}
    assert len(texts) > 1  # the seed chooses among the templates
    for text in texts:
        assert "pkg/shapes.py" in text and ("Shape.area" in text or "`area`" in text)
        assert "`tests/t.py::test_0`" in text and "and 2 more" in text and "test_6" not in text
        assert "{" not in text  # every field filled
    assert from_template("a.py", "f", ["t.py::test_x"], 5, "k") == from_template(
        "a.py", "f", ["t.py::test_x"], 5, "k"
    )
    with pytest.raises(ValueError, match="a.py: a statement needs at least one failing test"):
        from_template("a.py", "f", [], 0)


def test_a_template_line_statement_quotes_where_the_bug_begins_not_the_fix():
    bug = (
        "--- a/pkg/shapes.py\n+++ b/pkg/shapes.py\n@@ -3,4 +3,4 @@ class Shape:\n"
        "     def area(self):\n-        return self.w * self.h\n+        return self.w + self.h\n"
        "+\n+        # spare\n"
    )
    assert first_changed_line(bug) == "        return self.w + self.h"  # as the file has it
    assert first_changed_line("--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,1 @@\n-gone = 1\n kept = 2\n") is None
    plain = from_template("pkg/shapes.py", "Shape.area", ["t.py::test_x"], 3, "k")
    quoted = from_template("pkg/shapes.py", "Shape.area", ["t.py::test_x"], 3, "k", first_changed_line(bug))
    assert quoted.startswith(plain) and quoted.endswith("```python\n        return self.w + self.h\n```\n")
    assert "self.w * self.h" not in quoted  # the line as the bug wrote it, never what it should read
    # make-tasks --statements template-line: the quoting template; a bug that only removes lines
    # gets the plain one, and each says which wrote it (no environment is touched for either)
    from environments.factory.make_tasks import CandidateEntry, problem_statement

    entry = CandidateEntry(
        "k", "kept", file="pkg/shapes.py", entity="Shape.area", fail_to_pass=["t.py::test_x"]
    )
    assert problem_statement(None, None, replace(entry, patch=bug), 3, "template-line") == (
        quoted,
        "template-line",
    )
    removal = "--- a/pkg/shapes.py\n+++ b/pkg/shapes.py\n@@ -4,2 +4,1 @@\n-        x = 1\n         y = 2\n"
    assert problem_statement(None, None, replace(entry, patch=removal), 3, "template-line") == (
        plain,
        "template",
    )


# -- real containers ----------------------------------------------------------------------------------


def bug_from_gold_patch(task) -> tuple[Bug, str]:
    """The bug a bundled task's image holds, as a factory candidate would describe it: the file at the
    fixed state (original) and the entity around the change; (bug, fixed file text)."""
    (file,) = re.findall(r"^\+\+\+ b/(.+)$", task.patch, re.MULTILINE)
    hunk = task.patch.split("@@")[2].split("\n", 1)[1]
    removed = "".join(line[1:] + "\n" for line in hunk.splitlines() if line.startswith(("-", " ")))
    added = "".join(line[1:] + "\n" for line in hunk.splitlines() if line.startswith(("+", " ")))
    buggy = (task.repo_dir / file).read_text()
    assert buggy.count(removed) == 1
    fixed = buggy.replace(removed, added)
    changed = next(i for i, (x, y) in enumerate(zip(lines_of(buggy), lines_of(fixed)), 1) if x != y)
    texts = {}
    for name, text in (("fixed", fixed), ("buggy", buggy)):
        tree = ast.parse(text)
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        node = min(
            (n for n in nodes if n.lineno <= changed <= n.end_lineno), key=lambda n: n.end_lineno - n.lineno
        )
        owner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and node in ast.walk(n))
        texts[name] = (owner, node, "".join(lines_of(text)[node.lineno - 1 : node.end_lineno]))
    owner, node, original = texts["fixed"]
    return Bug(file, f"{owner.name}.{node.name}", original, texts["buggy"][2], node.lineno), fixed


@pytest.mark.docker
def test_an_expert_built_from_a_bug_replays_to_resolved(tmp_path: Path):
    from environments.config import GradingConfig
    from environments.container import DockerEnvironment
    from environments.recorder import record_steps
    from environments.replay import ReplayConfig, load_trajectory, replay
    from environments.tasks.bundled import build_images, get_task

    task = get_task("srl-agent__paginate-1")
    build_images([task])
    bug, fixed = bug_from_gold_patch(task)
    assert bug.entity == "Paginator.num_pages"
    # the failing ids come with the test patch at grading: reproduce and verify run the test file as it is
    run_file = pytest_command(task.test_files)
    steps = expert_steps(bug, fixed, task.fail_to_pass, task.test_files, reproduce=run_file)
    with DockerEnvironment(task.image) as env:
        document = record_steps(
            env,
            steps,
            instance_id=task.instance_id,
            problem_statement=task.problem_statement,
            image=task.image,
            base_commit=task.base_commit,
        )
    assert (
        document["info"]["submission"] == task.patch
    )  # the inverse of the bug is the gold fix, byte for byte
    observations = [step["observation"] for step in document["trajectory"]]
    assert "FAILED" not in observations[-2] and "passed" in observations[-2]  # verify ran after the fix
    assert "paginate/pages.py:30:    def num_pages" in observations[0]  # locate found the entity
    assert "    def num_pages(self)" in observations[1] and "30:" not in observations[1]  # read, unnumbered
    path = tmp_path / "expert.traj"
    path.write_text(json.dumps(document, indent=2) + "\n")

    result = replay(load_trajectory(path), task, ReplayConfig(work_dir=str(tmp_path)),
                    grading=GradingConfig(grader="fast"))  # fmt: skip
    assert result.submitted and not result.tool_errors
    assert result.resolved and result.grade.grader == "fast"
    assert result.patch == task.patch
