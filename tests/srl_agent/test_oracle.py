"""The SWE oracle-file scaffold: SEARCH/REPLACE blocks read from hand-written responses (several
files, several blocks, fences, malformed ones), edits that do not match or match twice reported as
such, the patch applying with `git apply`, and `evaluate --task swe --scaffold oracle` end to end in
real containers: the gold patches written as SEARCH/REPLACE edits resolve every bundled task (fast
grader) and one through the official harness; the tiny random model gets a report of 0 resolved."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import pytest

from environments.tasks.bundled import get_task, load_tasks
from srl_agent import evaluate
from srl_agent.eval.oracle import ORACLE_SYSTEM, ReplayResponder, make_patch, oracle_paths, user_turn
from srl_agent.eval.search_replace import apply_edits, edits_from_patch, parse_edits, unified_diff
from trajectories.config import ConfigError

REPO = Path(__file__).resolve().parents[2]

APP = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
UTIL = "import os\n\nNAME = 'x'\n"

TWO_FILES = """\
I will fix both.

```python
### src/app.py
<<<<<<< SEARCH
def add(a, b):
    return a - b
=======
def add(a, b):
    return a + b
>>>>>>> REPLACE
```

```python
### src/util.py
<<<<<<< SEARCH
NAME = 'x'
=======
NAME = 'y'
>>>>>>> REPLACE
<<<<<<< SEARCH
import os
=======
import os
import sys
>>>>>>> REPLACE
```
"""


def test_blocks_for_several_files_and_several_blocks_per_file_are_read_in_order():
    edits, problems = parse_edits(TWO_FILES)
    assert problems == []
    assert [(e.path, e.block) for e in edits] == [("src/app.py", 1), ("src/util.py", 2), ("src/util.py", 3)]
    assert edits[0].search == "def add(a, b):\n    return a - b\n"
    assert edits[0].replace == "def add(a, b):\n    return a + b\n"
    assert edits[2].search == "import os\n" and edits[2].replace == "import os\nimport sys\n"
    assert edits[0].line == 5


def test_fences_are_optional_and_a_fence_inside_a_block_is_content():
    text = (
        "### /testbed/doc.py\n<<<<<<< SEARCH\n'''Example:\n```python\nf()\n```\n'''\n=======\n'''Use f().'''\n"
        ">>>>>>> REPLACE\n"
    )
    [edit], problems = parse_edits(text)
    assert problems == [] and edit.path == "doc.py"  # the container's /testbed/ prefix is dropped
    assert edit.search == "'''Example:\n```python\nf()\n```\n'''\n"


def test_malformed_blocks_are_reported_and_the_good_ones_kept():
    text = (
        "<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n"  # no path yet
        "### x.py\n<<<<<<< SEARCH\nonly search, no divider\n>>>>>>> REPLACE\n"
        "### y.py\n<<<<<<< SEARCH\nc\n=======\nd\n"  # never closed: the next block opens
        "<<<<<<< SEARCH\ne\n=======\nf\n>>>>>>> REPLACE\n"
        "### z.py\n<<<<<<< SEARCH\ng\n=======\nh\n"  # never closed at all
    )
    edits, problems = parse_edits(text)
    assert [(e.path, e.block, e.search, e.replace) for e in edits] == [("y.py", 4, "e\n", "f\n")]
    assert [(p.block, p.path) for p in problems] == [(1, None), (2, "x.py"), (3, "y.py"), (5, "z.py")]
    assert "no `### path`" in problems[0].reason
    assert "no =======" in problems[1].reason
    assert "no >>>>>>> REPLACE" in problems[2].reason and "no >>>>>>> REPLACE" in problems[3].reason


def test_edits_apply_in_order_and_make_a_patch_that_git_applies(tmp_path):
    files = {"src/app.py": APP, "src/util.py": UTIL}
    edited, problems = apply_edits(files, parse_edits(TWO_FILES)[0])
    assert problems == []
    assert edited == {
        "src/app.py": APP.replace("return a - b", "return a + b", 1),
        "src/util.py": "import os\nimport sys\n\nNAME = 'y'\n",
    }
    patch = unified_diff(files, edited)
    assert patch.startswith("diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/app.py\n@@")
    assert _git_applied(tmp_path, files, patch) == edited


def test_a_file_without_a_final_newline_keeps_it_so_and_the_patch_says_so(tmp_path):
    files = {"m.py": "x = 1\ny = 2"}
    edited, problems = apply_edits(
        files, parse_edits("### m.py\n<<<<<<< SEARCH\ny = 2\n=======\ny = 3\n>>>>>>> REPLACE")[0]
    )
    assert problems == [] and edited == {"m.py": "x = 1\ny = 3"}
    patch = unified_diff(files, edited)
    assert "\\ No newline at end of file" in patch
    assert _git_applied(tmp_path, files, patch) == edited


def test_an_edit_that_does_not_match_or_matches_twice_is_reported_and_not_applied():
    files = {"src/app.py": APP}
    text = (
        "### src/app.py\n"
        "<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"  # twice in the file
        "<<<<<<< SEARCH\n  return a * b\n=======\n  return 0\n>>>>>>> REPLACE\n"  # nowhere
        "<<<<<<< SEARCH\ndef sub(a, b):\n    return a - b\n=======\ndef sub(a, b):\n    return b - a\n>>>>>>> REPLACE\n"
        "### src/other.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n"  # not a file of the prompt
    )
    edited, problems = apply_edits(files, parse_edits(text)[0])
    assert [(p.block, p.path) for p in problems] == [
        (1, "src/app.py"),
        (2, "src/app.py"),
        (4, "src/other.py"),
    ]
    assert "occurs 2 times" in problems[0].reason and "does not occur" in problems[1].reason
    assert "not a file of the prompt" in problems[2].reason
    # the one edit that matched exactly once is applied; nothing is guessed for the others
    assert edited == {
        "src/app.py": APP.replace("def sub(a, b):\n    return a - b", "def sub(a, b):\n    return b - a")
    }


def test_a_search_matches_whole_lines_only():
    files = {"a.py": "value = compute(x)\nx = 1\n"}
    edited, problems = apply_edits(
        files, parse_edits("### a.py\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n")[0]
    )
    assert problems == [] and edited == {"a.py": "value = compute(x)\nx = 2\n"}
    _, problems = apply_edits(
        files, parse_edits("### a.py\n<<<<<<< SEARCH\ncompute(x)\n=======\nf(x)\n>>>>>>> REPLACE\n")[0]
    )
    assert "does not occur" in problems[0].reason


def test_make_patch_reads_edits_only_after_the_monologue_and_names_each_outcome():
    files = {"src/app.py": APP, "src/util.py": UTIL}
    draft = "### src/util.py\n<<<<<<< SEARCH\nimport os\n=======\nimport re\n>>>>>>> REPLACE\n"
    made = make_patch(f"<think>\nA draft:\n{draft}</think>\n{TWO_FILES}", files)
    assert made["exit_status"] == "edited" and len(made["edits"]) == 3 and "import re" not in made["patch"]
    assert make_patch("no think tags " + TWO_FILES, files)["exit_status"] == "format_error"
    assert make_patch("<think>x</think>\nThe bug is in add.", files)["exit_status"] == "no_edits"
    broken = TWO_FILES.replace("NAME = 'x'\n=", "NAME = 'q'\n=")
    partly = make_patch(f"<think>x</think>\n{broken}", files)
    assert partly["exit_status"] == "partly_edited" and "NAME = 'y'" not in partly["patch"]
    assert partly["problems"] == [
        {"block": 2, "path": "src/util.py", "reason": partly["problems"][0]["reason"]}
    ]
    assert "import sys" in partly["patch"] and "block 2 (src/util.py)" in partly["detail"]
    failed = make_patch(
        "<think>x</think>\n### src/app.py\n<<<<<<< SEARCH\nnope\n=======\nyes\n>>>>>>> REPLACE\n", files
    )
    assert failed["exit_status"] == "edits_failed" and failed["patch"] == ""


def test_the_prompt_holds_the_issue_and_each_oracle_file_in_full():
    task = get_task("srl-agent__configlite-1")
    paths = oracle_paths(task.patch)
    assert paths == ["configlite/parser.py"]
    content = (task.repo_dir / paths[0]).read_text()
    turn = user_turn(task.problem_statement, {paths[0]: content})
    assert (
        task.problem_statement.strip() in turn
        and content.rstrip() in turn
        and "### configlite/parser.py" in turn
    )
    assert "<think>" in ORACLE_SYSTEM and "<<<<<<< SEARCH" in ORACLE_SYSTEM
    assert (
        oracle_paths("diff --git a/new.py b/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/new.py\n")
        == []
    )


@pytest.mark.parametrize("task", load_tasks(), ids=lambda t: t.instance_id)
def test_the_gold_patch_written_as_edits_gives_back_a_patch_that_applies_like_it(task, tmp_path):
    files = {p: (task.repo_dir / p).read_text() for p in oracle_paths(task.patch)}
    made = make_patch(f"<think>\n</think>\n{edits_from_patch(task.patch, files)}", files)
    assert made["exit_status"] == "edited" and made["problems"] == []
    gold = _git_applied(tmp_path / "gold", files, task.patch)
    assert _git_applied(tmp_path / "ours", files, made["patch"]) == gold


def test_a_malformed_replay_line_is_skipped_with_its_file_and_line_and_the_others_kept(tmp_path, capsys):
    path = tmp_path / "responses.jsonl"
    rows = ['{"instance_id": "a__b-1", "response": "one"}', '{"instance_id": "c__d-1", "resp', "",
            '{"instance_id": "e__f-1"}', '{"instance_id": "g__h-1", "response": "four"}']  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    responder = ReplayResponder.from_path(path)
    assert responder.responses == {"a__b-1": "one", "g__h-1": "four"}
    assert responder("g__h-1", []).text == "four"
    with pytest.raises(LookupError, match="has no response for c__d-1"):
        responder("c__d-1", [])
    assert capsys.readouterr().err.splitlines() == [
        f"oracle: skipped {path}:2: not valid JSON (Unterminated string starting at)",
        f"oracle: skipped {path}:4: it needs `instance_id` and a `response` string",
    ]
    path.write_text(rows[1] + "\n")
    with pytest.raises(ConfigError, match=r"^model.name \(--model\): replay:.*no row with .*\(1 skipped\)$"):
        ReplayResponder.from_path(path)


def test_the_oracle_scaffold_without_instances_is_an_error_that_names_the_key():
    from trajectories.config import ConfigError

    with pytest.raises(ConfigError, match="swe.scaffold.*--instances"):
        evaluate.parse_args(["--task", "swe", "--scaffold", "oracle", "--model", "tiny-random"])


# ---------------------------------------------------------------------------------------------------
# End to end through `python -m srl_agent.evaluate --task swe --scaffold oracle`, in containers.


def run_eval(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main(["--task", "swe", "--scaffold", "oracle", "--json", *args]) == 0
    return json.loads(out.getvalue())


def gold_responses(path: Path, tasks=None) -> Path:
    """The gold patches as SEARCH/REPLACE answers, one `{"instance_id", "response"}` row each."""
    rows = []
    for task in tasks or load_tasks():
        files = {p: (task.repo_dir / p).read_text() for p in oracle_paths(task.patch)}
        response = f"<think>\nThe gold fix.\n</think>\n{edits_from_patch(task.patch, files)}"
        rows.append({"instance_id": task.instance_id, "response": response})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.docker
def test_gold_edits_resolve_every_bundled_task_and_a_rerun_redoes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    args = ["--instances", "--model", f"replay:{gold_responses(tmp_path / 'gold.jsonl')}", "--grader", "fast"]
    report = run_eval(*args, "--out", str(out))
    assert report["scaffold"] == "oracle" and report["total"] == 3 and report["resolved"] == 3
    assert report["exit_statuses"] == {"edited": 3}
    records = {p.stem: json.loads(p.read_text()) for p in (out / "oracle").glob("*.json")}
    assert set(records) == set(report["instances"])
    record = records["srl-agent__configlite-1"]
    assert record["files"] == ["configlite/parser.py"] and record["response"].startswith("<think>")
    assert len(record["edits"]) == 1 and record["problems"] == [] and record["patch"].startswith("diff --git")
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["instance_id"]: p["model_patch"] for p in predictions} == {
        k: r["patch"] for k, r in records.items()
    }
    before = (out / "results.jsonl").read_text()
    assert run_eval(*args, "--out", str(out))["resolved"] == 3
    assert (out / "results.jsonl").read_text() == before


@pytest.mark.docker
def test_the_harness_resolves_gold_edits_on_instance_rows_whose_files_are_read_in_the_image(
    tmp_path, monkeypatch
):
    """SWE-bench rows (no `repo/` folder: the files come from /testbed in the image): the gold edits
    resolve through the official harness, an edit that does not match leaves an empty patch, and a row
    without a gold patch is not evaluable."""
    monkeypatch.chdir(REPO)
    from environments.tasks.bundled import build_images

    good, bad = get_task("srl-agent__configlite-1"), get_task("srl-agent__paginate-1")
    build_images([good, bad])  # their images, under the names their rows give
    no_gold = {**good.instance(), "instance_id": "nogold__row-1", "patch": ""}
    rows = tmp_path / "instances.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in (good.instance(), bad.instance(), no_gold)))
    responses = gold_responses(tmp_path / "gold.jsonl", [good, bad])
    answers = [json.loads(line) for line in responses.read_text().splitlines()]
    answers[1]["response"] = answers[1]["response"].replace(
        "return len(self.items)", "return len(self.things)"
    )
    responses.write_text("".join(json.dumps(r) + "\n" for r in answers))
    report = run_eval(
        "--instances", str(rows), "--model", f"replay:{responses}", "--out", str(tmp_path / "eval")
    )
    assert report["grader"] == "auto"  # the harness, for rows without the bundled layout
    assert report["instances"] == {
        good.instance_id: "resolved",
        bad.instance_id: "empty_patch",
        "nogold__row-1": "not_evaluable",
    }
    assert report["exit_statuses"] == {"edited": 1, "edits_failed": 1}
    assert "no gold patch" in report["instance_details"]["nogold__row-1"]["detail"]
    record = json.loads((tmp_path / "eval" / "oracle" / f"{bad.instance_id}.json").read_text())
    assert record["files"] == ["paginate/pages.py"] and record["patch"] == ""
    assert "does not occur" in record["problems"][0]["reason"]


@pytest.mark.docker
@pytest.mark.slow
def test_the_tiny_model_gets_a_report_of_zero_resolved_with_its_statuses(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    report = run_eval(
        "--instances", "--model", "tiny-random", "--grader", "fast", "--out", str(tmp_path / "eval"),
        "swe.oracle_max_new_tokens=16",
    )  # fmt: skip
    assert report["total"] == 3 and report["resolved"] == 0 and report["infrastructure_error"] == 0
    assert sum(report["exit_statuses"].values()) == 3
    assert set(report["exit_statuses"]) <= {"format_error", "no_edits", "context_limit"}
    assert report["empty_patch"] == 3
    records = [json.loads(p.read_text()) for p in (tmp_path / "eval" / "oracle").glob("*.json")]
    assert all(r["files"] and r["patch"] == "" for r in records)


def _git_applied(work: Path, files: dict[str, str], patch: str) -> dict[str, str]:
    """The files after `git apply` of `patch` in a fresh repository holding `files`."""
    work.mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    (work / "fix.diff").write_text(patch)
    subprocess.run(["git", "apply", "fix.diff"], cwd=work, check=True, capture_output=True)
    return {path: (work / path).read_text() for path in files}
