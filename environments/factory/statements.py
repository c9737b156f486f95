"""Problem statements for generated tasks without a model, deterministic by seed.

Two kinds, as SWE-smith makes them without a model:

- From a failing test (SWE-smith's test-based variant): the source of one FAIL_TO_PASS test and its
  output on the buggy code. `order_of_tests(fail_to_pass, seed, key)` is the seeded order to try tests in;
  `source_of_test(text, test_id)` cuts one test out of its file by pytest node id (functions, methods of
  test classes at any depth, parametrized ids); the caller runs `output_command(test_id)` in the
  task's container at its starting state (the bug present) and hands the output to
  `from_test(test_id, source, output)`. `pick_test` does the choosing and cutting for a reader of test
  files. The output is what the agent would see itself, so nothing the tests do not show is told.
- From templates: `from_template(file, entity, fail_to_pass, seed, key)` fills one of a few fixed
  texts with the changed file, the function or class and the failing tests. It never names the kind
  of modification, so it never gives the fix away. With `line` (`first_changed_line(patch)`, the
  first line the bug wrote) it also quotes where the failures begin, as a user who bisected the
  failure to a change might: the place, not what the line should read.

Long parts are trimmed with a marker that says how much was cut (`trim`): a test's source keeps its
beginning, a test's output keeps more of its end (the assertion and the summary are there). Pytest's
printed durations are dropped so that the same run gives the same text. `key` (the instance id, say)
makes the seeded choices differ between tasks of one seed.
"""

from __future__ import annotations

import ast
import random
import re
import shlex
from collections.abc import Callable, Sequence

TEST_OUTPUT_FLAGS = "-v --showlocals --tb=long"
"""SWE-smith's flags for the failing test's output."""
SOURCE_MAX = 3000
"""Characters of a test's source kept in a statement."""
OUTPUT_MAX = 5000
"""Characters of a test's output kept in a statement."""
TESTS_LISTED = 5
"""Failing tests a template lists by id (the rest are counted)."""

TEMPLATES = (
    (
        "Unexpected behavior in `{entity}`\n\n"
        "`{entity}` in `{file}` no longer does what the test suite expects. These tests fail:\n\n{tests}\n"
    ),
    (
        "Something is broken in {file}\n\n"
        "After the latest changes, part of `{file}` misbehaves, apparently around `{name}`. "
        "Running the tests I get failures in:\n\n{tests}\n\nThey passed before and should pass again.\n"
    ),
    (
        "Problem with `{name}`\n\n"
        "I think `{entity}` is not working correctly. {count} failing:\n\n{tests}\n\n"
        "The code is in `{file}`.\n"
    ),
    (
        "Failing tests around {entity}\n\n"
        "{count} failing on the current code:\n\n{tests}\n\n"
        "They exercise `{entity}`, defined in `{file}`. The tests are right; the code needs fixing.\n"
    ),
)
"""Fixed issue texts; `{name}` is the entity's last component, `{count}` reads "2 tests are"."""

_PARAMETERS = re.compile(r"\[.*\]$", re.DOTALL)
_DURATION = re.compile(r" in \d+(?:\.\d+)?s(?: \(\d+:\d\d:\d\d\))?")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class MissingTestSource(LookupError):
    """The test's source is not in the file: the message names the node id and what is missing."""


def output_command(test_id: str) -> str:
    """The command whose output `from_test` quotes: SWE-smith's verbose run of one test, in /testbed."""
    return f"cd /testbed && python -m pytest {TEST_OUTPUT_FLAGS} --color=no {shlex.quote(test_id)}"


def order_of_tests(fail_to_pass: Sequence[str], seed: int, key: str = "") -> list[str]:
    """The failing tests in the seeded order to try them in (the same for the same seed, key and set of
    tests, whatever order they come in)."""
    order = sorted(set(fail_to_pass))
    random.Random(f"{seed}/{key}").shuffle(order)
    return order


def source_of_test(text: str, test_id: str) -> str:
    """The source of the test `test_id` (`path::[Class::...]name[params]`) in the file `text`.

    A function with its decorators; a method under the `class` line of each enclosing class, with the
    file's indentation. The last definition of a name wins, as in Python. Raises `MissingTestSource`
    when a name on the way is not defined at its level (a test inherited from another file, one made by
    assignment) or the file does not parse.
    """
    path, *names = test_id.split("::")
    if not names:
        raise MissingTestSource(f"{test_id}: not a test node id (path::name)")
    names[-1] = _PARAMETERS.sub("", names[-1])
    try:
        body = ast.parse(text).body
    except SyntaxError as e:
        raise MissingTestSource(f"{test_id}: {path} does not parse ({e.msg}, line {e.lineno})") from None
    lines, headers = text.split("\n"), []
    for depth, name in enumerate(names):
        found = [node for node in body if isinstance(node, _DEFINITIONS) and node.name == name]
        if not found:
            raise MissingTestSource(f"{test_id}: {path} defines no `{name}` where the node id puts it")
        node = found[-1]
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        if depth == len(names) - 1:
            return "\n".join(headers + lines[start - 1 : node.end_lineno])
        if not isinstance(node, ast.ClassDef):
            raise MissingTestSource(f"{test_id}: `{name}` in {path} is not a class")
        headers.append(lines[node.lineno - 1])
        body = node.body
    raise AssertionError("unreachable: the loop returns at the last name")


def pick_test(
    fail_to_pass: Sequence[str], read_test_file: Callable[[str], str], seed: int, key: str = ""
) -> tuple[str, str] | None:
    """The first test in `order_of_tests` whose source can be cut out of its file, with that source;
    None when none can. `read_test_file` gets the repo-relative path of a node id's file."""
    for test_id in order_of_tests(fail_to_pass, seed, key):
        try:
            return test_id, source_of_test(read_test_file(test_id.split("::")[0]), test_id)
        except (MissingTestSource, FileNotFoundError, UnicodeDecodeError):
            continue
    return None


def from_test(test_id: str, source: str, output: str) -> str:
    """The test-based statement: the failing test's source and its output on the buggy code (the
    output of `output_command(test_id)`; durations dropped, both parts trimmed)."""
    shown = trim(source.strip("\n"), SOURCE_MAX, head_share=0.75)
    quiet = "\n".join(
        _DURATION.sub("", line) if line.startswith("=") else line for line in output.splitlines()
    )
    text = trim(quiet.strip("\n"), OUTPUT_MAX, head_share=0.3)
    return (
        f"The test `{test_id}` fails.\n\n```python\n{shown}\n```\n\n"
        f"`pytest {TEST_OUTPUT_FLAGS} {test_id}` gives:\n\n```\n{text}\n```\n"
    )


def from_template(
    file: str, entity: str, fail_to_pass: Sequence[str], seed: int, key: str = "", line: str | None = None
) -> str:
    """A templated statement naming the changed `file`, the `entity` (`Class.method`) and the failing
    tests, the template chosen by `seed` and `key`; with `line`, it also quotes that line as the one
    the failures began with."""
    if not fail_to_pass:
        raise ValueError(f"{file}: a statement needs at least one failing test")
    tests = sorted(set(fail_to_pass))
    listed = [f"- `{test_id}`" for test_id in tests[:TESTS_LISTED]]
    if len(tests) > TESTS_LISTED:
        listed.append(f"- and {len(tests) - TESTS_LISTED} more")
    count = f"{len(tests)} test{'s are' if len(tests) > 1 else ' is'}"
    template = random.Random(f"{seed}/{key}/template").choice(TEMPLATES)
    text = template.format(
        entity=entity, name=entity.rsplit(".", 1)[-1], file=file, tests="\n".join(listed), count=count
    )
    if line is None:
        return text
    return f"{text}\nThe failures began with a change to this line of `{file}`:\n\n```python\n{line}\n```\n"


def first_changed_line(patch: str) -> str | None:
    """The first non-blank line a unified diff adds (the bug's first written line) as the file has it,
    indentation included, so that a `str_replace` can copy it verbatim; None when the diff only
    removes lines."""
    for row in patch.splitlines():
        if row.startswith("+") and not row.startswith("+++") and row[1:].strip():
            return row[1:].rstrip()
    return None


def trim(text: str, limit: int, head_share: float = 0.5) -> str:
    """`text` cut to about `limit` characters at line ends: its beginning (`head_share` of the limit)
    and its end, joined by a line that says how many characters were left out."""
    if len(text) <= limit:
        return text
    head = text[: int(limit * head_share)]
    head = head[: head.rfind("\n") + 1] if "\n" in head else head
    tail = text[len(text) - (limit - len(head)) :]
    tail = tail[tail.find("\n") + 1 :] if "\n" in tail else tail
    left_out = len(text) - len(head) - len(tail)
    return f"{head}[... {left_out} characters left out ...]\n{tail}"
