"""Where evaluation tasks come from: every kind of source `load_task_source` reads (bundled tasks, task
folders, SWE-bench/SWE-smith instance files, a `datasets` dataset), per-instance errors that leave the
other instances alone, image names as swebench makes them, and on a real engine the image of each kind
of task: built or missing (never pullable here). SWE-smith rows: test_smith_rows.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from environments.protocol import TaskInstance
from environments.tasks.bundled import TASKS_DIR, Task, load_tasks
from environments.tasks.sources import (
    ImageMissing,
    SkippedInstance,
    TaskSourceError,
    load_task_source,
    prepare_image,
)
from environments.tasks.swebench_rows import GRADING_FIELDS, MissingGradingFields, SWEBenchTask, task_from_row

REPO = Path(__file__).resolve().parents[2]
CLASSIC_FIELDS = {
    "repo", "instance_id", "base_commit", "patch", "test_patch", "problem_statement", "hints_text",
    "created_at", "version", "FAIL_TO_PASS", "PASS_TO_PASS", "environment_setup_commit",
}  # fmt: skip
ABSENT_IMAGE = "swebench/sweb.eval.x86_64.srl-agent_1776_certainly-absent-1:latest"


def lite_sample(shared_data: Path) -> Path:
    return shared_data / "swebench" / "swe-bench-lite-test.5instances.json"


def hf_style(row: dict) -> dict:
    """A row as the HF datasets store it: the test lists as JSON strings."""
    return {
        **row,
        "FAIL_TO_PASS": json.dumps(row["FAIL_TO_PASS"]),
        "PASS_TO_PASS": json.dumps(row["PASS_TO_PASS"]),
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- the Protocol --------------------------------------------------------------------------------------


def test_bundled_tasks_and_rows_are_task_instances(shared_data: Path):
    members = {"instance_id", "problem_statement", "image", "base_commit", "instance"}
    members |= {"fast_gradable", "gold_patch", "repo_dir"}  # what graders and the oracle ask of a task
    assert {m for m in dir(TaskInstance) if not m.startswith("_")} == members
    row_task = load_task_source(lite_sample(shared_data), require_grading=False).tasks[0]
    bundled = load_tasks()[0]
    for task in (bundled, row_task):
        assert isinstance(task, TaskInstance)
        assert task.instance_id and task.problem_statement.strip() and task.image
        assert task.gold_patch and task.gold_patch.startswith("diff --git")
    # the fast runner needs the bundled layout's test files; a SWE-bench row goes to the harness
    assert (bundled.fast_gradable, row_task.fast_gradable) == (True, False)
    assert bundled.repo_dir is not None and bundled.repo_dir.is_dir() and row_task.repo_dir is None


# -- each kind of source -------------------------------------------------------------------------------


def test_no_source_is_the_bundled_tasks():
    tasks, skipped = load_task_source(None)
    assert skipped == []
    assert tasks == load_tasks()  # the same Task records, in the same order
    assert all(isinstance(t, Task) for t in tasks)


def test_one_task_folder_or_its_task_json():
    (task,) = load_task_source(TASKS_DIR / "paginate").tasks
    assert task.instance_id == "srl-agent__paginate-1" and task.directory == TASKS_DIR / "paginate"
    assert load_task_source(TASKS_DIR / "paginate" / "task.json").tasks == [task]


def test_a_folder_of_task_folders_skips_a_broken_one(tmp_path: Path):
    for name in ("paginate", "intervals"):
        shutil.copytree(TASKS_DIR / name, tmp_path / name)
    (tmp_path / "broken" / "repo").mkdir(parents=True)
    (tmp_path / "broken" / "task.json").write_text('{"instance_id": "x__broken-1"}')
    tasks, skipped = load_task_source(tmp_path)
    assert [t.instance_id for t in tasks] == ["srl-agent__intervals-1", "srl-agent__paginate-1"]
    ((where, reason),) = skipped
    assert where == str(tmp_path / "broken") and "'repo' must be a non-empty string" in reason


def test_classic_swebench_rows_are_skipped_for_grading_by_name(shared_data: Path):
    """The 12-field rows lack the eval script, log parser and eval type that swebench 5.0.2 reads (it
    has no per-repo specs to derive them from): each is skipped with its id and those fields."""
    rows = json.loads(lite_sample(shared_data).read_text())
    assert {frozenset(r) for r in rows} == {frozenset(CLASSIC_FIELDS)}
    tasks, skipped = load_task_source(lite_sample(shared_data))
    assert tasks == []
    assert sorted(s.instance_id for s in skipped) == sorted(r["instance_id"] for r in rows)
    for entry in skipped:
        assert entry.reason.startswith("lacks eval_script, log_parser, eval_type"), entry
        assert "SWE-bench/SWE-bench_Lite" in entry.reason and "require_grading=False" in entry.reason


def test_classic_rows_load_for_episodes_and_fail_when_graded(shared_data: Path):
    tasks, skipped = load_task_source(lite_sample(shared_data), require_grading=False)
    assert skipped == [] and len(tasks) == 5
    task = next(t for t in tasks if t.instance_id == "django__django-16255")
    assert isinstance(task, SWEBenchTask)
    assert task.image == "swebench/sweb.eval.x86_64.django_1776_django-16255:latest"
    assert task.base_commit == "444b6da7cc229a58a2c476a52e45233001dc7073"
    assert task.fail_to_pass == (
        "test_callable_sitemod_no_items (sitemaps_tests.test_http.HTTPSitemapTests)",
    )
    with pytest.raises(
        MissingGradingFields, match=r"^django__django-16255: lacks eval_script, log_parser, eval_type"
    ):
        task.instance()


def test_swebench_5x_rows_from_jsonl_are_what_the_harness_reads(tmp_path: Path):
    """Rows carrying the 5.x fields (here the bundled tasks' own instances, as the HF datasets store
    them) load as tasks whose `instance()` swebench's make_test_spec takes, with the row's image."""
    from swebench.harness.utils import make_test_spec

    bundled_tasks = load_tasks()
    path = write_jsonl(tmp_path / "instances.jsonl", [hf_style(t.instance()) for t in bundled_tasks])
    tasks, skipped = load_task_source(path)
    assert skipped == [] and [t.instance_id for t in tasks] == [t.instance_id for t in bundled_tasks]
    for task, original in zip(tasks, bundled_tasks, strict=True):
        assert isinstance(task, SWEBenchTask) and task.gradable
        assert (task.image, task.base_commit) == (original.image, original.base_commit)
        assert task.fail_to_pass == original.fail_to_pass
        spec = make_test_spec(task.instance())
        assert spec.image == original.image and spec.FAIL_TO_PASS == list(original.fail_to_pass)
        assert spec.eval_script.startswith("#!/bin/bash\nset -uxo pipefail\n")


def test_bad_rows_are_skipped_and_the_others_load(tmp_path: Path):
    good = hf_style(load_tasks()[0].instance())
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps(good) + "\n"
        + "{not json\n"
        + json.dumps({**good, "instance_id": "a__b-2", "problem_statement": ""}) + "\n"
        + json.dumps({**good, "instance_id": "a__b-3", "FAIL_TO_PASS": "[1, 2]"}) + "\n"
        + json.dumps({"problem_statement": "no id"}) + "\n"
        + "[1]\n"
    )  # fmt: skip
    tasks, skipped = load_task_source(path)
    assert [t.instance_id for t in tasks] == [good["instance_id"]]
    reasons = dict(skipped)
    assert reasons.keys() == {"mixed.jsonl:2", "a__b-2", "a__b-3", "mixed.jsonl:5", "mixed.jsonl:6"}
    assert reasons["mixed.jsonl:2"].startswith("not valid JSON")
    assert "'problem_statement' must be a non-empty string" in reasons["a__b-2"]
    assert "'FAIL_TO_PASS' must be a list of test names" in reasons["a__b-3"]
    assert "'instance_id' must be a non-empty string" in reasons["mixed.jsonl:5"]
    assert "expected an object" in reasons["mixed.jsonl:6"]


def test_a_local_datasets_folder_through_the_hf_path_with_split_and_ids(tmp_path: Path):
    """A folder of data files named by split is what `datasets.load_dataset(path, split=...)` reads, as
    it reads a hub id; the id filter picks among the split's rows."""
    rows = [hf_style(t.instance()) for t in load_tasks()]
    write_jsonl(tmp_path / "ds" / "test.jsonl", rows[:2])
    write_jsonl(tmp_path / "ds" / "train.jsonl", rows[2:])
    wanted = rows[1]["instance_id"]
    tasks, skipped = load_task_source(tmp_path / "ds", split="test", instance_ids=[wanted])
    assert [t.instance_id for t in tasks] == [wanted] and skipped == []
    assert [t.instance_id for t in load_task_source(tmp_path / "ds", split="train").tasks] == [
        rows[2]["instance_id"]
    ]
    with pytest.raises(TaskSourceError, match="split 'dev'"):
        load_task_source(tmp_path / "ds", split="dev")


def test_a_parquet_file_of_rows(tmp_path: Path):
    import datasets

    rows = [hf_style(t.instance()) for t in load_tasks()]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "rows.parquet"))
    tasks, skipped = load_task_source(tmp_path / "rows.parquet", instance_ids=[rows[0]["instance_id"]])
    assert [t.instance_id for t in tasks] == [rows[0]["instance_id"]] and skipped == []
    assert tasks[0].instance()["eval_script"] == rows[0]["eval_script"]


def test_a_hub_id_goes_to_the_hub_and_an_unreachable_hub_is_a_source_error():
    # In a fresh process, so that offline mode (read when `datasets` is imported) fails fast here.
    code = (
        "from environments.tasks.sources import load_task_source, TaskSourceError\n"
        "try:\n    load_task_source('SWE-bench/SWE-bench_Lite', split='test')\n"
        "except TaskSourceError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert out.stdout.startswith("cannot read dataset SWE-bench/SWE-bench_Lite split 'test'"), out


# -- filters and whole-source errors --------------------------------------------------------------------


def test_an_unknown_instance_id_is_an_error_naming_it():
    with pytest.raises(
        TaskSourceError, match=r"the bundled tasks holds no instance nobody__here-1 \(3 known\)"
    ):
        load_task_source(None, instance_ids=["srl-agent__paginate-1", "nobody__here-1"])


def test_ids_pattern_and_limit_select_tasks_and_skips(shared_data: Path):
    assert [t.instance_id for t in load_task_source(None, pattern="interval|paginate").tasks] == [
        "srl-agent__intervals-1",
        "srl-agent__paginate-1",
    ]
    assert [t.instance_id for t in load_task_source(None, limit=1).tasks] == ["srl-agent__configlite-1"]
    skipped = load_task_source(lite_sample(shared_data), instance_ids=["sympy__sympy-13031"]).skipped
    assert [s.instance_id for s in skipped] == ["sympy__sympy-13031"]
    assert [s.instance_id for s in load_task_source(lite_sample(shared_data), pattern="^django").skipped] == [
        "django__django-16255",
        "django__django-15781",
    ]
    with pytest.raises(TaskSourceError, match="not a regular expression"):
        load_task_source(None, pattern="(")


def test_identical_rows_are_read_once_and_different_ones_of_one_id_refused_when_selected(tmp_path, caplog):
    row, other = (hf_style(task.instance()) for task in load_tasks()[:2])
    path = write_jsonl(tmp_path / "dup.jsonl", [row, other, row])
    assert [t.instance_id for t in load_task_source(path).tasks] == sorted(
        [row["instance_id"], other["instance_id"]]
    )
    assert f"dup.jsonl:3 repeats dup.jsonl:1's row for {row['instance_id']}; read once" in caplog.text
    assert [t.instance_id for t in load_task_source(path, instance_ids=[other["instance_id"]]).tasks] == [
        other["instance_id"]
    ]
    path = write_jsonl(tmp_path / "two.jsonl", [row, other, {**row, "problem_statement": "another issue"}])
    with pytest.raises(TaskSourceError, match=f"different entries for {row['instance_id']}$"):
        load_task_source(path)
    # which one would be graded matters only when the id is selected
    assert [t.instance_id for t in load_task_source(path, instance_ids=[other["instance_id"]]).tasks] == [
        other["instance_id"]
    ]


def test_the_princeton_nlp_ids_read_the_renamed_swe_bench_datasets():
    # offline, so the read fails at once and its message names the dataset the loader asked for
    code = (
        "from environments.tasks.sources import load_task_source as l; l('princeton-nlp/SWE-bench_Verified')"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "TaskSourceError: cannot read dataset SWE-bench/SWE-bench_Verified split 'test'" in done.stderr


def test_missing_paths_and_unreadable_files_are_errors(tmp_path: Path):
    for missing in (tmp_path / "absent.jsonl", "runs/absent.json", "no-such-thing"):
        with pytest.raises(TaskSourceError, match="no such file or folder"):
            load_task_source(missing)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TaskSourceError, match="bad.json: not valid JSON"):
        load_task_source(tmp_path / "bad.json")


# -- image names ----------------------------------------------------------------------------------------


def test_official_image_names_are_swebenchs(shared_data: Path):
    from swebench.image_builder.image_spec import ImageSpec
    from swebench.task.checks import expected_image

    recorded = json.loads(
        (shared_data / "sweagent" / "fc_replace__marshmallow-code__marshmallow-1867.traj").read_text()
    )
    config = recorded["replay_config"]
    config = json.loads(config) if isinstance(config, str) else config
    ids = [r["instance_id"] for r in json.loads(lite_sample(shared_data).read_text())]
    for iid in [*ids, "marshmallow-code__marshmallow-1867", "Owner__Repo-7"]:
        task = task_from_row({"instance_id": iid, "problem_statement": "x"})
        spec = ImageSpec(instance_id=iid, dockerfile="FROM x", namespace="swebench")
        assert task.image == expected_image(iid) == spec.name, iid
    marshmallow = task_from_row(
        {"instance_id": "marshmallow-code__marshmallow-1867", "problem_statement": "x"}
    )
    assert marshmallow.image == config["env"]["deployment"]["image"]  # the name SWE-agent ran it under
    named = task_from_row({"instance_id": "a__b-1", "problem_statement": "x", "image": "my/own:v1"})
    assert named.image == "my/own:v1"


def test_grading_fields_are_what_make_test_spec_reads():
    from swebench.harness.utils import make_test_spec

    instance = load_tasks()[0].instance()
    for key in GRADING_FIELDS:
        with pytest.raises(KeyError):
            make_test_spec({k: v for k, v in instance.items() if k != key})


# -- images on a real engine ------------------------------------------------------------------------------


@pytest.mark.docker
def test_a_missing_image_is_imagemissing_naming_it_and_the_instance():
    task = task_from_row({"instance_id": "srl-agent__certainly-absent-1", "problem_statement": "x"})
    assert task.image == ABSENT_IMAGE
    started = time.monotonic()
    with pytest.raises(ImageMissing) as caught:
        prepare_image(task)  # no registry here: the pull fails at once
    assert time.monotonic() - started < 30
    assert (caught.value.instance_id, caught.value.image) == (task.instance_id, ABSENT_IMAGE)
    assert str(caught.value).startswith(f"srl-agent__certainly-absent-1: image {ABSENT_IMAGE} is not on this")
    assert "pulling it failed" in str(caught.value) and f"docker pull {ABSENT_IMAGE}" in str(caught.value)
    with pytest.raises(ImageMissing, match="pulling is off"):
        prepare_image(task, pull=False)


@pytest.mark.docker
def test_one_missing_image_leaves_the_others_preparable(tmp_path: Path):
    bundled = load_tasks()[0]
    prepare_image(bundled)  # built here, so the test does not lean on an earlier one having built it
    present = bundled.instance()
    absent = {**present, "instance_id": "srl-agent__certainly-absent-1", "image": ABSENT_IMAGE}
    path = write_jsonl(tmp_path / "two.jsonl", [present, absent])
    outcomes = {}
    for task in load_task_source(path).tasks:
        try:
            outcomes[task.instance_id] = prepare_image(task, pull=False)
        except ImageMissing as e:
            outcomes[task.instance_id] = type(e).__name__
    assert outcomes == {
        present["instance_id"]: present["image"],
        "srl-agent__certainly-absent-1": "ImageMissing",
    }


@pytest.mark.docker
def test_a_bundled_task_is_prepared_and_started_through_the_protocol():
    from environments.container import DockerEnvironment

    (task,) = load_task_source(None, instance_ids=["srl-agent__paginate-1"]).tasks
    image = prepare_image(task)  # built by the project's image code; cached, so quick here
    assert image == task.image
    with DockerEnvironment(image) as env:
        assert env.base_commit == task.base_commit
        assert env.run("git rev-parse HEAD && git status --porcelain").output == f"{task.base_commit}\n"
        assert env.diff() == ""


def test_skipped_entries_unpack_as_id_and_reason():
    entry = SkippedInstance("a__b-1", "why")
    iid, reason = entry
    assert (iid, reason) == ("a__b-1", "why")
