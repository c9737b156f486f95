"""The task factory end to end on a small fixture package (`fixtures/factory_repo`), in real containers.

One run of `make_tasks` (module fixture) is checked from every side: its tasks' FAIL_TO_PASS tests fail
at the bug and pass after the gold fix, its flaky test is left out, every expert replays to resolved
through check-experts, evaluation reads the folder, and a rerun redoes nothing. A candidate that breaks
test collection is dropped with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from envtest_support import factory_repo_writing_a_version_file

from environments.config import EnvConfig, GradingConfig
from environments.container import DockerEnvironment
from environments.factory import validate
from environments.factory.make_tasks import MakeTasksConfig, make_tasks
from environments.factory.profile import RepoProfile
from environments.factory.tasks import load_folder, task_image
from environments.grader import grade
from environments.tasks.sources import TaskSourceError, load_task_source

pytestmark = pytest.mark.docker

FIXTURE = Path(__file__).parent / "fixtures" / "factory_repo"
FLAKY = "tests/test_flaky.py::test_flips_between_runs"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("factory") / "tasks"
    cfg = MakeTasksConfig(source=str(FIXTURE), out=str(out), max_tasks=4)
    return out, make_tasks(cfg, EnvConfig(pool_size=1), progress=False)


def test_the_tasks_fail_at_the_bug_and_pass_after_the_gold_fix(made):
    out, report = made
    assert report["failure"] is None and report["tasks"] == 4 == len(load_folder(out))
    assert report["kept"] + sum(report["dropped"].values()) == report["candidates"]
    fast = GradingConfig(grader="fast")
    for task in load_folder(out):
        assert (
            task.FAIL_TO_PASS
            and task.PASS_TO_PASS
            and task.base_commit != json.loads((out / "profile.json").read_text())["commit"]
        )
        assert grade(task, task.gold_patch, fast).resolved, task.instance_id
        untouched = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n"
        readme = (out / "repo" / "README.md").read_text().splitlines()[0]
        result = grade(task, f"{untouched} {readme}\n+more\n", fast)
        assert result.status == "unresolved" and set(result.fail_to_pass.failure) == set(task.FAIL_TO_PASS)


def test_the_agent_cannot_read_the_fix_in_git_history(made):
    """The task's environment holds the bug commit and nothing else: no parent to diff against, no
    branch or object of the clean commit."""
    out, _ = made
    clean = json.loads((out / "profile.json").read_text())["commit"]
    task = load_folder(out)[0]
    cfg = EnvConfig()
    with DockerEnvironment(task_image(task, cfg), cfg) as env:
        assert env.exec("cd /testbed && git rev-list --all")[1].split() == [task.base_commit]
        assert env.exec(f"cd /testbed && git cat-file -t {clean}")[0] != 0


def test_the_flaky_test_is_left_out(made):
    out, _ = made
    assert json.loads((out / "reference.json").read_text())["flaky"] == [FLAKY]
    for task in load_folder(out):
        assert FLAKY not in task.FAIL_TO_PASS + task.PASS_TO_PASS


def test_every_expert_replays_to_resolved_and_evaluation_reads_the_folder(made, tmp_path):
    from environments.expert_check import ExpertCheckConfig, check_experts

    out, report = made
    check = check_experts(
        out / "trajectories",
        ExpertCheckConfig(tasks=str(out), out=str(tmp_path / "check")),
        grading=GradingConfig(grader="fast"),
    )
    assert check["kept"] == report["tasks"] == check["total"], check["dropped"]
    loaded = load_task_source(out)
    assert sorted(t.instance_id for t in loaded.tasks) == sorted(t.instance_id for t in load_folder(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["split"]["train"] + manifest["split"]["held_out"]) == sorted(
        t.instance_id for t in loaded.tasks
    )
    for part in ("train", "held_out"):  # the manifest's split is what a consumer asking for it gets
        chosen = load_task_source(out, split=part).tasks
        assert [t.instance_id for t in chosen] == sorted(manifest["split"][part]) and chosen, part
    with pytest.raises(TaskSourceError, match="splits train, held_out .* not 'validation'"):
        load_task_source(out, split="validation")


def test_a_folder_of_factory_folders_reads_each_split_alike(made, tmp_path):
    """Several repositories' tasks as one source (the learning benchmark's training and held-out sets):
    each folder's split, and a task two folders both hold is an error, not a silent pick."""
    out, _ = made
    several = tmp_path / "repos"
    several.mkdir()
    (several / "calc").symlink_to(out.resolve())
    (several / "notes").mkdir()  # not a factory folder: ignored
    for part in ("train", "held_out", "all"):
        ids = [t.instance_id for t in load_task_source(several, split=part).tasks]
        assert ids == [t.instance_id for t in load_task_source(out, split=part).tasks] and ids, part
    (several / "again").symlink_to(out.resolve())
    with pytest.raises(TaskSourceError, match="different entries for"):
        load_task_source(several)


def test_what_the_install_writes_stays_out_of_every_patch(tmp_path):
    """A package whose install writes a file into its checkout (setuptools-scm's version file, as
    tabulate's does): that file is not the agent's change, so a task's environment starts with an
    empty diff, while a file the agent creates is still in its patch."""
    repo = factory_repo_writing_a_version_file(tmp_path / "repo")
    out = tmp_path / "out"
    report = make_tasks(
        MakeTasksConfig(source=str(repo), out=str(out), max_tasks=1), EnvConfig(pool_size=1), progress=False
    )
    assert report["failure"] is None and report["tasks"] == 1
    cfg = EnvConfig()
    with DockerEnvironment(task_image(load_folder(out)[0], cfg), cfg) as env:
        assert env.exec("test -f /testbed/calc/version.py")[0] == 0  # the install did write it
        assert env.diff() == ""
        env.exec("printf 'x = 1\\n' > /testbed/calc/extra.py")
        assert "b/calc/extra.py" in env.diff() and "version.py" not in env.diff()


def test_a_rerun_redoes_nothing(made):
    out, report = made
    ledger = (out / "results.jsonl").read_text()
    instances = (out / "instances.jsonl").read_text()
    recorded = {p.name: p.stat().st_mtime_ns for p in (out / "trajectories").iterdir()}
    again = make_tasks(MakeTasksConfig(source=str(FIXTURE), out=str(out), max_tasks=4), EnvConfig(pool_size=1),
                       progress=False)  # fmt: skip
    assert (out / "results.jsonl").read_text() == ledger  # no candidate checked again
    assert (out / "instances.jsonl").read_text() == instances
    assert {p.name: p.stat().st_mtime_ns for p in (out / "trajectories").iterdir()} == recorded  # not redone
    assert again["tasks"] == report["tasks"] and again["seconds"]["reference"] == 0.0


def test_a_rerun_with_other_settings_is_refused_naming_them(made):
    """Another seed or timeout would mix its verdicts and tasks with the folder's: refused before
    anything runs, each differing setting named with both values; the folder is left as it was."""
    from trajectories.config import ConfigError

    out, _ = made
    ledger = (out / "results.jsonl").read_text()
    other = MakeTasksConfig(source=str(FIXTURE), out=str(out), max_tasks=4, seed=7, timeout=30)
    with pytest.raises(
        ConfigError, match=r"--out: .* other settings \(seed: 24 there, 7 now; timeout: 90 there, 30 now\)"
    ):
        make_tasks(other, EnvConfig(pool_size=1), progress=False)
    assert (out / "results.jsonl").read_text() == ledger


def test_a_candidate_that_breaks_collection_is_dropped_with_its_reason(made):
    out, _ = made
    profile = RepoProfile.read(out / "profile.json")
    ref = validate.Reference(set(json.loads((out / "reference.json").read_text())["passed"]), set(), 0, 0.0)
    broken = (
        "diff --git a/calc/core.py b/calc/core.py\n--- a/calc/core.py\n+++ b/calc/core.py\n"
        "@@ -1,2 +1,2 @@\n-def mean(values):\n+def mean(values:\n"
        '     """The arithmetic mean of a non-empty list."""\n'
    )
    with DockerEnvironment(profile.image, EnvConfig()) as env:
        verdict = validate.check(env, profile, ref, broken)
        assert verdict.status == "broke_collection" and "test_core.py" in verdict.detail
        assert env.exec("cd /testbed && git status --porcelain")[1].strip() == ""  # clean again
        # `python3` is the virtual environment's, where the package is installed (a src layout needs it)
        assert env.exec("cd / && python3 -c 'import calc; print(calc.__file__)'") == (
            0,
            "/testbed/calc/__init__.py\n",
        )


def test_a_candidate_that_hangs_is_dropped_as_timeout_and_the_environment_goes_on(made):
    out, _ = made
    profile = RepoProfile.read(out / "profile.json")
    profile.timeout = 5
    ref = validate.Reference(set(json.loads((out / "reference.json").read_text())["passed"]), set(), 0, 0.0)
    hangs = (
        "diff --git a/calc/core.py b/calc/core.py\n--- a/calc/core.py\n+++ b/calc/core.py\n"
        "@@ -1,3 +1,4 @@\n def mean(values):\n"
        '     """The arithmetic mean of a non-empty list."""\n'
        "+    while True: pass\n"
        "     if not values:\n"
    )
    with DockerEnvironment(profile.image, EnvConfig()) as env:
        verdict = validate.check(env, profile, ref, hangs)
        assert verdict.status == "timeout" and "5 s" in verdict.detail and verdict.seconds < 30
        assert env.exec("cd /testbed && git status --porcelain")[1].strip() == ""  # clean again
        _, _, statuses = validate.run_suite(env, profile, 60)  # the killed run left nothing behind
        assert all(statuses.get(test) == "PASSED" for test in ref.passed), statuses


def test_the_official_harness_and_the_fast_runner_agree(made, tmp_path):
    """The swebench harness grades a generated task through its swebench 5.x instance (the task's image,
    an eval script, `parse_log_pytest`), as the fast runner does: the gold fix resolves, the bug stays."""
    from environments.factory.tasks import task_image
    from environments.grader import grade_all

    out, _ = made
    tasks = load_folder(out)[:2]
    for task in tasks:
        task_image(task, EnvConfig())
    readme = (out / "repo" / "README.md").read_text().splitlines()[0]
    unrelated = f"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n {readme}\n+more\n"
    patches = [(t, t.gold_patch) for t in tasks] + [(tasks[1], unrelated)]  # the bug stays
    verdicts = {}
    for grader in ("fast", "harness"):
        for i, (task, patch) in enumerate(patches):  # one instance at a time: the harness keys by id
            result = grade_all([(task, patch)], GradingConfig(grader=grader), work_dir=tmp_path / grader,
                               run_prefix=f"agree{i}")[task.instance_id]  # fmt: skip
            verdicts[grader, i] = result.status
    assert [verdicts["fast", i] for i in range(3)] == ["resolved", "resolved", "unresolved"]
    assert [verdicts["harness", i] for i in range(3)] == [verdicts["fast", i] for i in range(3)]
