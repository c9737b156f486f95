"""The SWE agentless scaffold: the repository tree its localization shows (Python files, tests left
out), the paths read back from an answer (exact files only, the monologue dropped, at most 5), the
file lists cycled over repairs, the patch normalization and majority vote, the localization scores,
the replay format; on the bundled tasks, recorded answers (the gold files, then the gold patch as
SEARCH/REPLACE edits) localize and repair without a container, and `evaluate --task swe --scaffold
agentless` resolves them end to end in real containers; the tiny random model gets a report of 0
resolved with its statuses and recall."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from environments.tasks.bundled import get_task, load_tasks
from srl_agent import evaluate
from srl_agent.eval.agentless import (
    ReplayAsker,
    attempt,
    fit_files,
    gold_files,
    localizable,
    localization_prompt,
    localization_prompts,
    localization_scores,
    localization_summary,
    majority_vote,
    make_asker,
    normalize_code,
    normalize_patch,
    parse_paths,
    render_tree,
    repair_lists,
)
from srl_agent.eval.oracle import BaseFiles, make_patch, oracle_paths
from srl_agent.eval.search_replace import edits_from_patch
from trajectories.config import ConfigError

REPO = Path(__file__).resolve().parents[2]

PATHS = [
    "README.md",
    "docs/conf.py",
    "pkg/__init__.py",
    "pkg/core.py",
    "pkg/sub/deep.py",
    "pkg/testing.py",
    "pkg/tests/helpers.py",
    "pkg/util.pyx",
    "setup.py",
    "test_top.py",
    "tests/test_core.py",
]


def test_the_tree_holds_the_python_files_without_any_test_named_file_or_folder():
    shown = localizable(PATHS)
    assert shown == ["docs/conf.py", "pkg/__init__.py", "pkg/core.py", "pkg/sub/deep.py", "setup.py"]
    assert render_tree(shown) == (
        "docs/\n    conf.py\npkg/\n    __init__.py\n    core.py\n    sub/\n        deep.py\nsetup.py"
    )
    assert render_tree(["b/x.py", "a.py"], indent=2) == "a.py\nb/\n  x.py"
    assert localizable(PATHS, keep_tests=True) == [p for p in PATHS if p.endswith(".py")]


def test_the_localization_prompt_of_a_bundled_task_shows_its_issue_and_its_source_files():
    task = get_task("srl-agent__configlite-1")
    paths = BaseFiles(folder=task.repo_dir).paths()
    assert "tests/test_parser.py" in paths and "README.md" in paths
    prompt = localization_prompt(task.problem_statement, localizable(paths))
    assert task.problem_statement.strip() in prompt
    assert "configlite/\n    __init__.py\n    errors.py\n    parser.py\n" in prompt
    assert "test_parser" not in prompt and "README" not in prompt and "at most 5 files" in prompt


def test_only_lines_that_are_exactly_a_file_of_the_tree_are_kept_in_order_at_most_five():
    files = ["a.py", "b/c.py", "d.py", "e.py", "f.py", "g.py", "h.py"]
    answer = (
        "<think>\nMaybe a.py?\na.py\n</think>\nThe files:\n```\n  b/c.py  \nnope.py\nb/c.py\n"
        "`d.py`\n./e.py\nthe file f.py\ntests/test_x.py\n```\ng.py\nh.py\na.py\nf.py\n"
    )
    # a.py counts where the answer names it, not in the monologue; f.py would be a sixth
    assert parse_paths(answer, files) == ["b/c.py", "d.py", "g.py", "h.py", "a.py"]
    assert parse_paths("```\nb/c.py\nd.py\n```", files, limit=1) == ["b/c.py"]
    assert parse_paths("<think>\na.py\nb/c.py\n", files) == []  # a monologue never closed
    assert parse_paths("a.py\n\n", files) == ["a.py"]  # no monologue: the whole answer


def test_a_localization_naming_a_file_that_does_not_exist_keeps_only_the_real_ones():
    task = get_task("srl-agent__paginate-1")
    tree = localizable(BaseFiles(folder=task.repo_dir).paths())
    answer = "```\npaginate/missing.py\npaginate/pages.py\npaginate/Pages.py\ntests/test_pages.py\n```"
    assert parse_paths(answer, tree) == ["paginate/pages.py"]


def test_distinct_file_lists_are_cycled_over_the_repairs():
    found = [["a.py"], [], ["a.py"], ["b.py", "a.py"]]
    assert repair_lists(found, 4) == [["a.py"], ["b.py", "a.py"], ["a.py"], ["b.py", "a.py"]]
    assert repair_lists(found[:1], 1) == [["a.py"]]
    assert repair_lists([[], []], 2) == []


def test_files_that_do_not_fit_the_repair_prompt_are_skipped_and_the_first_kept_when_none_fits():
    size = {"a.py": 50, "b.py": 80, "c.py": 30}

    def fits(paths: list[str]) -> bool:
        return sum(size[p] for p in paths) <= 100

    assert fit_files(["a.py", "b.py", "c.py"], fits) == ["a.py", "c.py"]
    assert fit_files(["b.py", "a.py"], lambda paths: False) == ["b.py"]


ORIGINAL = '''"""The module."""

def area(w, h):
    """The area."""
    # width times height
    return w * h
'''


def test_normalized_code_drops_comments_docstrings_and_layout_and_keeps_meaning():
    restyled = "def area(w,h):\n    '''Other words.'''\n    return (w*h)  # same\n"
    assert normalize_code(restyled) == normalize_code(ORIGINAL) == "def area(w, h):\n    return w * h"
    assert normalize_code("class A:\n    '''Only a docstring.'''\n") == "class A:\n    pass"
    assert normalize_code("def f(:\n") == "def f(:\n"  # not Python: compared as written
    assert normalize_code(ORIGINAL.replace("w * h", "w + h")) != normalize_code(ORIGINAL)


def test_a_patch_normalizes_to_its_files_meaning_and_a_comment_only_patch_to_nothing():
    originals = {"m.py": ORIGINAL, "n.py": "X = 1\n"}
    fixed = {"m.py": ORIGINAL.replace("return w * h", "return abs(w * h)")}
    restyled = {"m.py": ORIGINAL.replace("return w * h", "return abs(w*h)  # never negative")}
    key = normalize_patch(originals, fixed)
    assert key == "### m.py\ndef area(w, h):\n    return abs(w * h)\n"
    assert normalize_patch(originals, restyled) == key
    assert normalize_patch(originals, {"m.py": ORIGINAL.replace("# width", "# the width")}) == ""
    both = normalize_patch(originals, {**fixed, "n.py": "X = 2\n"})
    assert both == key + "### n.py\nX = 2\n"


def test_the_vote_picks_the_most_shared_patch_ties_go_first_and_empty_patches_do_not_vote():
    assert majority_vote(["a", "b", "b", "a", "b"]) == 1
    assert majority_vote(["a", "b", "b", "a"]) == 0  # a tie: the patch seen first
    assert majority_vote(["", "", "c", "d", "d"]) == 3
    assert majority_vote(["", "", "c"]) == 2  # one non-empty patch beats many empty ones
    assert majority_vote(["", "", ""]) == 0
    assert majority_vote(["x"]) == 0


def test_localization_scores_per_instance_and_their_summary():
    gold = ["a.py", "b.py"]
    one = localization_scores([["b.py", "c.py"]], gold)
    assert one == {
        "localization_recall": 0.5,
        "localization_top1": 1.0,
        "localization_any": 1.0,
        "localization_all": 0.0,
    }
    many = localization_scores([["c.py", "a.py", "b.py"], [], ["a.py"]], gold)
    assert many["localization_recall"] == pytest.approx(0.5) and many["localization_top1"] == pytest.approx(
        1 / 3
    )
    assert many["localization_all"] == 1.0
    summary = localization_summary({"i-1": one, "i-2": localization_scores([[]], gold), "i-3": {"files": 0}})
    assert summary == {
        "instances": 2,
        "recall_mean": 0.25,
        "top1_hits": 1,
        "any_hits": 1,
        "all_hits": 0,
        "recall": {"i-1": 0.5, "i-2": 0.0},
    }
    assert gold_files(get_task("srl-agent__intervals-1")) == ["intervals/core.py"]


# ---------------------------------------------------------------------------------------------------
# Recorded answers on the bundled tasks: their files are read from `repo/`, no container needed.


def gold_rows(tasks=None, localization=None) -> list[dict]:
    """Per task a replay row: a localization naming its gold files, the gold patch as edits."""
    rows = []
    for task in tasks or load_tasks():
        paths = oracle_paths(task.patch)
        files = {p: (task.repo_dir / p).read_text() for p in paths}
        answer = localization or "<think>\nThe bug is there.\n</think>\n```\n" + "\n".join(paths) + "\n```"
        response = f"<think>\nThe gold fix.\n</think>\n{edits_from_patch(task.patch, files)}"
        rows.append({"instance_id": task.instance_id, "localization": answer, "response": response})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(*overrides: str):
    args = ["--task", "swe", "--instances", "--scaffold", "agentless", "--model", "replay:unused"]
    return evaluate.parse_args([*args, *overrides])[1]


@pytest.mark.parametrize("task", load_tasks(), ids=lambda t: t.instance_id)
def test_recorded_gold_answers_localize_the_gold_files_and_give_the_gold_patch(task, tmp_path):
    asker = ReplayAsker.from_path(str(write_rows(tmp_path / "r.jsonl", gold_rows([task]))))
    done = attempt(config(), task, asker)
    assert done.error is None
    record, stats = done.record, done.stats
    gold = oracle_paths(task.patch)
    assert record["localizations"][0]["files"] == gold == record["files"] == record["gold_files"]
    assert record["localization_prompt"].startswith("Read the issue below")
    files = {p: (task.repo_dir / p).read_text() for p in gold}
    expected = make_patch(record["repairs"][0]["response"], files)["patch"]
    assert done.patch == record["patch"] == expected and expected.startswith("diff --git")
    assert record["exit_status"] == stats["exit_status"] == "edited" and record["chosen"] == 0
    assert stats["localization_recall"] == stats["localization_top1"] == stats["localization_all"] == 1.0
    assert stats["samples"] == 1 and stats["files"] == len(gold) and stats["edits"] >= 1


def test_a_localization_naming_no_file_ends_the_instance_with_an_empty_patch(tmp_path):
    task = get_task("srl-agent__configlite-1")
    rows = gold_rows([task], localization="```\nconfiglite/parse.py\nparser.py\n```")
    rows[0]["response"] = []
    done = attempt(config(), task, ReplayAsker.from_path(str(write_rows(tmp_path / "r.jsonl", rows))))
    assert done.record["exit_status"] == "no_files_localized" and done.patch == ""
    assert done.record["repairs"] == [] and done.record["chosen"] is None
    assert done.record["localizations"][0]["files"] == []
    assert done.stats["localization_recall"] == 0.0 and done.stats["localization_any"] == 0.0


def test_a_localized_file_past_the_models_context_is_left_out_of_the_repair(tmp_path):
    task = get_task("srl-agent__configlite-1")
    rows = gold_rows([task], localization="```\nconfiglite/errors.py\nconfiglite/parser.py\n```")
    asker = ReplayAsker.from_path(str(write_rows(tmp_path / "r.jsonl", rows)))
    asker.fits = lambda chat: chat[-1]["content"].count("\n### ") <= 1  # a context of one file
    done = attempt(config(), task, asker)
    [repair] = done.record["repairs"]
    assert repair["files"] == ["configlite/errors.py"] and repair["left_out"] == ["configlite/parser.py"]
    assert repair["exit_status"] == "edits_failed" and "not a file of the prompt" in repair["detail"]
    assert done.stats["localization_recall"] == 1.0 and done.stats["localization_top1"] == 0.0


def test_several_samples_cycle_the_file_lists_and_vote_for_the_most_shared_patch(tmp_path):
    task = get_task("srl-agent__configlite-1")
    [row] = gold_rows([task])
    fix = row["response"]
    restyled = fix.replace('line.split("=", 1)', 'line.split( "=", 1 )  # the first = only')
    wrong = fix.replace('line.split("=", 1)', 'line.split("=", 2)')
    row["localization"] = [
        "```\nnothing.py\n```",
        "```\nconfiglite/parser.py\nconfiglite/errors.py\n```",
        row["localization"],
        "```\nconfiglite/parser.py\n```",
    ]
    row["response"] = [wrong, restyled, fix, "<think>\n</think>\nNo edits.", "unused"]
    asker = ReplayAsker.from_path(str(write_rows(tmp_path / "r.jsonl", [row])))
    done = attempt(config("--samples", "4"), task, asker)
    record = done.record
    assert [loc["files"] for loc in record["localizations"]] == [
        [],
        ["configlite/parser.py", "configlite/errors.py"],
        ["configlite/parser.py"],
        ["configlite/parser.py"],
    ]
    # the two distinct lists, cycled over the four repairs (each repair's files in an order of its own)
    assert [r["left_out"] for r in record["repairs"]] == [[]] * 4
    assert [sorted(r["files"]) for r in record["repairs"]] == [
        ["configlite/errors.py", "configlite/parser.py"],
        ["configlite/parser.py"],
    ] * 2
    assert all(2 <= loc["n"] <= 5 and loc["indent"] in (2, 4) for loc in record["localizations"])
    assert [r["exit_status"] for r in record["repairs"]] == ["edited", "edited", "edited", "no_edits"]
    votes = [r["vote"] for r in record["repairs"]]
    assert votes[1] == votes[2] != votes[0] and votes[3] == ""
    assert record["chosen"] == 1 and record["votes"] == 2 and done.patch == record["repairs"][1]["patch"]
    assert done.stats["localization_recall"] == 0.75 and done.stats["localization_top1"] == 0.75
    too_few = attempt(config("--samples", "6"), task, asker)
    assert too_few.error is not None and too_few.error[0] == "infrastructure_error"
    assert "has 4 `localization` answers" in too_few.error[1]


def test_replay_rows_take_strings_lists_or_an_earlier_runs_records_and_skip_the_rest(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    rows = ['{"instance_id": "a-1", "localization": "x.py", "response": "fix"}',
            '{"instance_id": "b-1", "localization": ["x.py", "y.py"], "response": []}',
            '{"instance_id": "c-1", "response": "fix"}', '{"instance_id": "d-1", "localization": [1], "response": ""}',
            '{"instance_id": "e-1", "localization": [], "response": "fix"}']  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    asker = ReplayAsker.from_path(str(path))
    assert asker.rows == {"a-1": (["x.py"], ["fix"]), "b-1": (["x.py", "y.py"], [])}
    assert [line.split(": it needs")[0] for line in capsys.readouterr().err.splitlines()] == [
        f"agentless: skipped {path}:{n}" for n in (3, 4, 5)
    ]
    task = get_task("srl-agent__configlite-1")
    done = attempt(
        config(), task, ReplayAsker.from_path(str(write_rows(tmp_path / "r.jsonl", gold_rows([task]))))
    )
    folder = tmp_path / "agentless"
    folder.mkdir()
    (folder / f"{task.instance_id}.json").write_text(json.dumps(done.record))
    again = attempt(config(), task, make_asker(config(), f"replay:{folder}"))
    assert again.record == done.record
    with pytest.raises(ConfigError, match=r"^model.name \(--model\): replay:.*no row with `instance_id` and"):
        ReplayAsker.from_path(str(write_rows(tmp_path / "none.jsonl", [{"instance_id": "x"}])))


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("replay:/missing.jsonl", "replay:/missing.jsonl: no such file or folder"),
        ("replay:", "'replay:' names no path: replay:PATH, a recorded file or folder"),
    ],
)
def test_a_bad_replay_model_is_a_message_naming_the_flag_and_the_path(model, says, tmp_path, capsys):
    from trajectories.config import run_cli

    argv = [
        "--task",
        "swe",
        "--instances",
        "--scaffold",
        "agentless",
        "--model",
        model,
        "--out",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: evaluate.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == f"error: model.name (--model): {says}"


def test_samples_are_a_setting_of_the_agentless_scaffold_only():
    assert config("--samples", "3").swe.samples == 3 and config().swe.samples == 1
    with pytest.raises(ConfigError, match="swe.samples: only the agentless scaffold"):
        evaluate.parse_args(["--task", "swe", "--instances", "--scaffold", "oracle", "--samples", "2"])
    with pytest.raises(ConfigError, match="swe.samples"):
        config("--samples", "answers.jsonl")
    args, cfg = evaluate.parse_args(["--task", "math", "--samples", "graded.jsonl"])
    assert args.samples == "graded.jsonl" and cfg.swe.samples == 1  # math: a file of responses


@pytest.mark.slow
def test_the_tiny_model_localizes_and_samples_through_the_model_asker():
    """No container: the bundled task's files are read from `repo/`; two samples of each step."""
    task = get_task("srl-agent__intervals-1")
    cfg = config("swe.oracle_max_new_tokens=8", "--samples", "2")
    done = attempt(cfg, task, make_asker(cfg, "tiny-random"))
    assert done.error is None and len(done.record["localizations"]) == 2
    assert done.stats["samples"] == 2 and done.stats["completion_tokens"] >= 2
    assert (
        "intervals/\n" in done.record["localization_prompt"]
        and "core.py" in done.record["localization_prompt"]
    )


def test_sampled_localizations_each_get_a_prompt_varied_as_agentless_mini_varies_them():
    files = localizable(PATHS)
    (greedy,) = localization_prompts("Fix it.", files, 1, "0/x-1")
    assert (greedy.n, greedy.indent) == (5, 4) and greedy.prompt == localization_prompt("Fix it.", files)
    asks = localization_prompts("Fix it.", files, 40, "0/x-1")
    assert {a.n for a in asks} == {2, 3, 4, 5} and {a.indent for a in asks} == {2, 4}
    assert all(f"at most {a.n} files" in a.prompt for a in asks)
    trees = [a.prompt.split("<structure>")[1].split("</structure>")[0] for a in asks]
    orders = {tuple(line.strip() for line in tree.splitlines() if line.strip()) for tree in trees}
    assert len(orders) > 1  # the directories' entries shuffled
    assert all(sorted(o) == sorted(next(iter(orders))) for o in orders)  # the same files every time
    assert localization_prompts("Fix it.", files, 40, "0/x-1") == asks  # the same seed asks the same
    assert localization_prompts("Fix it.", files, 40, "1/x-1") != asks


# ---------------------------------------------------------------------------------------------------
# End to end through `python -m srl_agent.evaluate --task swe --scaffold agentless`, in containers.


def run_eval(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main(["--task", "swe", "--scaffold", "agentless", "--json", *args]) == 0
    return json.loads(out.getvalue())


@pytest.mark.docker
def test_the_image_lists_and_reads_the_files_its_task_folder_holds():
    """The reading of rows without a `repo/` folder: `/testbed` in the image, through the seam."""
    from environments.config import EnvConfig
    from environments.container import DockerEnvironment
    from environments.tasks.sources import prepare_image

    task, env_cfg = get_task("srl-agent__paginate-1"), EnvConfig()
    folder = BaseFiles(folder=task.repo_dir)
    with DockerEnvironment(prepare_image(task, env_cfg), env_cfg) as env:
        image = BaseFiles(env=env)
        paths = image.paths()
        assert (
            localizable(paths) == localizable(folder.paths()) == ["paginate/__init__.py", "paginate/pages.py"]
        )
        assert image.read(["paginate/pages.py"]) == folder.read(["paginate/pages.py"])


@pytest.mark.docker
def test_recorded_gold_answers_resolve_every_bundled_task_with_full_recall(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    rows = gold_rows()
    rows[0]["localization"] = rows[0]["localization"].replace("```\n", "```\nno/such/file.py\n", 1)
    replay = write_rows(tmp_path / "gold.jsonl", rows)
    out = tmp_path / "eval"
    report = run_eval("--instances", "--model", f"replay:{replay}", "--grader", "fast", "--out", str(out))
    assert report["scaffold"] == "agentless" and report["total"] == 3 and report["resolved"] == 3
    assert report["exit_statuses"] == {"edited": 3}
    assert report["localization"] == {
        "instances": 3,
        "recall_mean": 1.0,
        "top1_hits": 3,
        "any_hits": 3,
        "all_hits": 3,
        "recall": dict.fromkeys(report["instances"], 1.0),
    }
    records = {p.stem: json.loads(p.read_text()) for p in (out / "agentless").glob("*.json")}
    assert set(records) == set(report["instances"])
    first = records[rows[0]["instance_id"]]
    assert "no/such/file.py" in first["localizations"][0]["response"]
    assert first["localizations"][0]["files"] == first["gold_files"]  # the missing path dropped
    assert "localization recall" in (out / "report.md").read_text()
    assert json.loads((out / "run.json").read_text())["samples"] == 1


@pytest.mark.docker
@pytest.mark.slow
def test_the_tiny_model_gets_a_report_of_zero_resolved_with_statuses_and_recall(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    report = run_eval(
        "--instances", "--model", "tiny-random", "--grader", "fast", "--out", str(tmp_path / "eval"),
        "swe.oracle_max_new_tokens=16",
    )  # fmt: skip
    assert report["total"] == 3 and report["resolved"] == 0 and report["infrastructure_error"] == 0
    assert sum(report["exit_statuses"].values()) == 3
    assert set(report["exit_statuses"]) <= {"no_files_localized", "format_error", "no_edits", "context_limit"}
    assert report["localization"]["instances"] == 3 and set(report["localization"]["recall"]) == set(
        report["instances"]
    )
    records = [json.loads(p.read_text()) for p in (tmp_path / "eval" / "agentless").glob("*.json")]
    assert len(records) == 3 and all(r["patch"] == "" and r["localization_prompt"] for r in records)
