"""The bundled tasks' expert trajectories: the steps an expert takes, recorded into SWE-agent `.traj` files.

The steps (thought + one tool call each) are written here by hand: explore the repository (find, grep,
view), reproduce the issue with a script, fix it with `str_replace_editor`, rerun the script and the
tests, clean up and submit. `record(task)` executes them in a fresh container from the task's image
with the project's tools, so every observation in the `.traj` is what the environment really
answered, and writes the file in SWE-agent 1.x function-calling form (`environments.recorder`, which
the task factory's generated experts share).

Re-record after changing a task or the tools (needs Docker and the task images):

    python -m environments build && python -m environments.tasks.experts
"""

from __future__ import annotations

import json
import sys
from typing import Any

from environments.recorder import SUBMIT, Steps, bash, editor, record_steps
from environments.tasks.bundled import Task, load_tasks

FIND_SOURCES = "find /testbed -name '*.py' -not -path '*/.git/*' | sort"


def intervals_steps() -> Steps:
    core = "/testbed/intervals/core.py"
    return [
        ("Let me start by looking at how the repository is laid out.", bash(FIND_SOURCES)),
        ("The issue is about `merge`. Let me find where it is defined.",
         bash("grep -rn 'def merge' /testbed --include=*.py")),
        ("Let me read the module that defines it.", editor("view", core)),
        (("`merge` only joins an interval into the previous one when `current.start < merged[-1].end`, so two "
         "intervals that share an end point are kept apart, although `overlaps` (which uses `<=`) says they "
         "overlap. Let me reproduce the issue first."),
         editor("create", "/testbed/reproduce.py", file_text=(
             "from intervals import Interval, merge\n\n"
             "print(merge([Interval(1, 3), Interval(3, 5)]))\n"
             "print(merge([(0, 1), (1, 2), (2, 3)]))\n"))),
        ("Run the reproduction script.", bash("cd /testbed && python3 reproduce.py")),
        (("Both results confirm the issue. Closed intervals that touch share a point, so the comparison must "
         "include equality, as in `overlaps`."),
         editor("str_replace", core, old_str="        if merged and current.start < merged[-1].end:",
                new_str="        if merged and current.start <= merged[-1].end:")),
        ("Run the reproduction script again.", bash("cd /testbed && python3 reproduce.py")),
        ("Both now merge into one interval. Let me run the existing tests to check nothing else changed.",
         bash("cd /testbed && python3 -m pytest -q tests")),
        ("All tests pass. Remove the reproduction script before submitting.", bash("rm /testbed/reproduce.py")),
        ("The fix is complete.", SUBMIT),
    ]  # fmt: skip


def configlite_steps() -> Steps:
    parser = "/testbed/configlite/parser.py"
    tests = "/testbed/tests/test_parser.py"
    return [
        ("Let me look at the repository structure.", bash(FIND_SOURCES)),
        ("The error is an unpacking error, so some line is split on '='. Let me search for it.",
         bash("grep -rn 'split(' /testbed/configlite")),
        ("Let me view the parser around that line.", editor("view", parser, view_range=[40, 52])),
        (("`line.split(\"=\")` splits on every '=', so a value holding another '=' yields more than two parts. "
         "Let me reproduce it with the example from the issue."),
         editor("create", "/testbed/reproduce.py", file_text=(
             "import configlite\n\n"
             "print(configlite.parse(\"[db]\\nurl = postgres://db.example.org/app?sslmode=require\\n\"))\n"))),
        ("Run it.", bash("cd /testbed && python3 reproduce.py")),
        (("Reproduced: `ValueError: too many values to unpack`. Only the first '=' separates key and value, so "
         "split at most once."),
         editor("str_replace", parser, old_str='    key, value = line.split("=")',
                new_str='    key, value = line.split("=", 1)')),
        ("Run the reproduction again.", bash("cd /testbed && python3 reproduce.py")),
        ("The value is kept whole now. Let me add a regression test at the end of the parser tests.",
         editor("insert", tests, insert_line=41, new_str=(
             "\n\ndef test_value_with_equals_sign():\n"
             "    assert parse(\"[a]\\nurl = x?y=1&z=2\\n\")[\"a\"] == {\"url\": \"x?y=1&z=2\"}"))),
        ("Run the whole test suite.", bash("cd /testbed && python3 -m pytest -q tests")),
        ("Everything passes. Remove the reproduction script.", bash("rm /testbed/reproduce.py")),
        ("Submit the fix.", SUBMIT),
    ]  # fmt: skip


def paginate_steps() -> Steps:
    pages = "/testbed/paginate/pages.py"
    return [
        ("First, the layout of the repository.", bash(FIND_SOURCES)),
        ("The issue points at `num_pages`. Where is it computed and used?", bash("grep -rn 'num_pages' /testbed/paginate")),
        ("Let me read the paginator.", editor("view", pages)),
        (("`num_pages` uses floor division, which drops a last page that is only partly full. Let me reproduce "
         "the example from the issue."),
         editor("create", "/testbed/reproduce.py", file_text=(
             "from paginate import Paginator\n\n"
             "p = Paginator(list(range(10)), per_page=3)\n"
             "print(p.num_pages)\n"
             "print(p.page(4).items)\n"))),
        ("Run it.", bash("cd /testbed && python3 reproduce.py")),
        ("Reproduced: 3 pages and `PageError` for page 4. The page count has to round up.",
         editor("str_replace", pages, old_str="        return len(self.items) // self.per_page",
                new_str="        return (len(self.items) + self.per_page - 1) // self.per_page")),
        ("Check the reproduction again.", bash("cd /testbed && python3 reproduce.py")),
        (("4 pages and the last one holds item 9. An empty sequence still has 0 pages with this formula. Let me run "
         "the tests."), bash("cd /testbed && python3 -m pytest -q tests")),
        ("All green. Remove the script and look at the final diff.", bash("rm /testbed/reproduce.py && cd /testbed && git diff")),
        ("The change is minimal. Submit.", SUBMIT),
    ]  # fmt: skip


EXPERTS = {
    "srl-agent__intervals-1": intervals_steps,
    "srl-agent__configlite-1": configlite_steps,
    "srl-agent__paginate-1": paginate_steps,
}


def record(task: Task) -> dict[str, Any]:
    """Execute the task's expert steps in a fresh container and return the `.traj` document."""
    from environments.container import DockerEnvironment

    with DockerEnvironment(task.image) as env:
        return record_steps(
            env,
            EXPERTS[task.instance_id](),
            instance_id=task.instance_id,
            problem_statement=task.problem_statement,
            image=task.image,
            base_commit=task.base_commit,
            call_prefix=task.directory.name,
        )


def main(argv: list[str]) -> int:
    wanted = set(argv) or set(EXPERTS)
    for task in load_tasks():
        if task.instance_id in wanted:
            document = record(task)
            task.expert_trajectory.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            print(f"{task.expert_trajectory}: {len(document['trajectory'])} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
