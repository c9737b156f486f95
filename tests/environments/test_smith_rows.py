"""SWE-smith's published instances graded: rows in SWE-smith's own format load as tasks graded with their
repository's SWE-smith profile (its test command, its default log parser), through the one grading path.

- The pandas row of ../shared/data/swesmith: its profile is SWE-smith's (read from the installed
  package's python.py), and the parser agrees with SWE-smith's own `PythonProfile.log_parser` run on
  the same log; its image is not here, which is reported as such.
- Rows whose repository has no profile, or whose profile overrides the parser, are reported with why.
- The gold fix is the row's patch reversed (checked with git on every kind of file change).
- On a real engine: a row whose repository image is built here from `fixtures/factory_repo` under a
  SWE-smith image name, with a hand-written bug patch and a profile given for the test: the gold patch
  resolves it, an empty patch and a patch that misses the bug do not.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from envtest_support import factory_repo_writing_a_version_file

from environments.tasks.patches import reverse_patch
from environments.tasks.smith_profiles import SmithProfile, installed_profiles, package_file
from environments.tasks.smith_rows import SmithTask, repository_images
from environments.tasks.sources import load_task_source
from environments.tasks.swebench_rows import MissingGradingFields

FIXTURE = Path(__file__).parent / "fixtures" / "factory_repo"
PANDAS = "instance__pandas-dev__pandas.95280573.pr_53652.json"
PANDAS_KEY = "pandas-dev__pandas.95280573"
# PythonProfile.test_cmd in swesmith 0.0.9's profiles/python.py (with swesmith.constants.ENV_NAME).
SWESMITH_TEST_CMD = (
    "source /opt/miniconda3/bin/activate; conda activate testbed; "
    "pytest --disable-warnings --color=no --tb=no --verbose"
)
VERBOSE_LOG = """\
============================= test session starts ==============================
pandas/tests/indexing/test_datetime.py::TestDatetimeIndex::test_indexing_fast_xs PASSED [ 10%]
pandas/tests/indexing/test_datetime.py::TestDatetimeIndex::test_getitem_pyarrow_index[Series] FAILED [ 20%]
pandas/tests/indexing/test_datetime.py::test_x[a b] SKIPPED (no pyarrow) [ 30%]
pandas/tests/x.py::test_y XFAIL (known)                                  [ 40%]
pandas/tests/x.py::test_z ERROR                                          [ 50%]
FAILED pandas/tests/indexing/test_datetime.py::TestDatetimeIndex::test_getitem_pyarrow_index[Series]
=========================== short test summary info ============================
"""
# A bug written by hand in the fixture package: running_total forgets the earlier values.
BUG_PATCH = """\
diff --git a/calc/core.py b/calc/core.py
--- a/calc/core.py
+++ b/calc/core.py
@@ -25,7 +25,7 @@ def running_total(values):
     sums = []
     total = 0
     for value in values:
-        total += value
+        total = value
         sums.append(total)
     return sums
 
"""
F2P = ["tests/test_core.py::test_running_total"]
P2P = [
    "tests/test_core.py::test_mean",
    "tests/test_core.py::test_clamp_inside",
    "tests/test_shapes.py::test_describe",
]
# A patch that applies but leaves the bug.
MISSED_PATCH = """\
diff --git a/calc/core.py b/calc/core.py
--- a/calc/core.py
+++ b/calc/core.py
@@ -1,2 +1,2 @@
 def mean(values):
-    \"\"\"The arithmetic mean of a non-empty list.\"\"\"
+    \"\"\"The arithmetic mean of a list that is not empty.\"\"\"
"""


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def smith_row(key: str, **changes: object) -> dict:
    row = {
        "instance_id": f"{key}.func_pm_hand__0001",
        "repo": f"swesmith/{key}",
        "patch": BUG_PATCH,
        "FAIL_TO_PASS": F2P,
        "PASS_TO_PASS": P2P,
        "image_name": f"swesmith.x86_64.{key}",
        "problem_statement": "running_total returns the values, not their partial sums.",
    }
    return {**row, **changes}


# ---------------------------------------------------------------------------------------------------
# SWE-smith's own registry


def swesmith_log_parser():
    """`PythonProfile.log_parser` as SWE-smith wrote it: its source from the installed python.py, run
    with swebench's TestStatus (SWE-smith's package itself cannot be imported here)."""
    from swebench.harness.constants import TestStatus

    path = package_file("profiles/python.py")
    assert path is not None, "swesmith is installed in the project's environment"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    (base,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PythonProfile"]
    (method,) = [n for n in base.body if isinstance(n, ast.FunctionDef) and n.name == "log_parser"]
    namespace = {"re": re, "TestStatus": TestStatus}
    code = compile(ast.Module(body=[method], type_ignores=[]), str(path), "exec")
    exec(code, namespace)  # noqa: S102 - SWE-smith's own parser, from the installed package
    return lambda log: namespace["log_parser"](None, log)


def pandas_profile_source() -> str:
    path = package_file("profiles/python.py")
    assert path is not None
    text = path.read_text(encoding="utf-8")
    start = text.index('    repo: str = "pandas"')
    return text[text.rindex("@dataclass", 0, start) : text.index("@dataclass", start)]


def test_the_pandas_row_is_graded_with_swesmiths_test_command_and_parser(shared_data: Path):
    (task,) = load_task_source(shared_data / "swesmith" / PANDAS).tasks
    assert isinstance(task, SmithTask) and task.gradable and task.fast_gradable
    assert task.repo_key == PANDAS_KEY and task.profile is not None
    assert task.profile.class_name == "Pandas95280573"
    # its profile class sets neither: the command is PythonProfile's and the parser its default one
    source = pandas_profile_source()
    assert "class Pandas95280573(PythonProfile)" in source
    assert "test_cmd" not in source and "def log_parser" not in source
    assert task.test_command == SWESMITH_TEST_CMD == installed_profiles()[PANDAS_KEY].test_cmd
    assert task.parse_log(VERBOSE_LOG) == swesmith_log_parser()(VERBOSE_LOG)
    in_class = "pandas/tests/indexing/test_datetime.py::TestDatetimeIndex"
    assert task.parse_log(VERBOSE_LOG) == {
        f"{in_class}::test_indexing_fast_xs": "PASSED",
        f"{in_class}::test_getitem_pyarrow_index[Series]": "FAILED",
        "pandas/tests/x.py::test_y": "XFAIL",
        "pandas/tests/x.py::test_z": "ERROR",
    }  # not `test_x[a b]`: SWE-smith's reading stops an id at a space, and so does this one
    assert task.test_files == ["pandas/tests/indexing/test_datetime.py"]
    assert len(task.fail_to_pass) == 2 and len(task.pass_to_pass) == 9
    assert task.source_images == (
        "swesmith.x86_64.pandas-dev__pandas.95280573",  # the row's image_name
        "swebench/swesmith.x86_64.pandas-dev_1776_pandas.95280573",  # SWE-smith's Docker Hub name
    )
    assert task.image == "srl-agent/sweb.eval.x86_64.pandas-dev_1776_pandas.95280573.pr_53652:latest"
    assert task.gold_patch is not None and task.gold_patch == reverse_patch(task.row["patch"])
    with pytest.raises(MissingGradingFields, match="graded by the fast runner"):
        task.instance()


def test_every_installed_profile_is_read_and_the_overriding_ones_are_named():
    profiles = installed_profiles()
    assert len(profiles) > 100
    assert all(key == f"{p.owner}__{p.repo}.{p.commit[:8]}" for key, p in profiles.items())
    assert profiles["mewwts__addict.75284f95"].test_cmd == SWESMITH_TEST_CMD  # the inherited default
    assert "pytest -rA --color=no" in profiles["paramiko__paramiko.23f92003"].test_cmd  # its own
    assert profiles["paramiko__paramiko.23f92003"].overrides == ("log_parser",)
    assert profiles["python__mypy.e93f06ce"].overrides == ("log_parser", "get_test_cmd")


def test_test_lists_may_be_json_strings_or_python_literals(tmp_path: Path):
    rows = [
        smith_row("a__b.00000001", FAIL_TO_PASS=json.dumps(F2P), PASS_TO_PASS=str(P2P)),
        smith_row("a__b.00000002", FAIL_TO_PASS=str(F2P), PASS_TO_PASS="not a list ["),
    ]
    profiles = {f"a__b.0000000{n}": SmithProfile("a", "b", f"0000000{n}", "pytest --verbose") for n in (1, 2)}
    tasks, skipped = load_task_source(write_rows(tmp_path / "rows.jsonl", rows), profiles=profiles)
    assert [(t.fail_to_pass, t.pass_to_pass) for t in tasks] == [(tuple(F2P), tuple(P2P))]
    ((iid, reason),) = skipped
    assert iid == "a__b.00000002.func_pm_hand__0001"
    assert "'PASS_TO_PASS' is a string that is neither JSON" in reason


def test_rows_without_a_usable_profile_are_reported_with_why(tmp_path: Path):
    path = write_rows(
        tmp_path / "rows.jsonl",
        [smith_row("nobody__nothing.12345678"), smith_row("paramiko__paramiko.23f92003")],
    )
    tasks, skipped = load_task_source(path)
    assert tasks == []
    reasons = dict(skipped)
    assert reasons["nobody__nothing.12345678.func_pm_hand__0001"].startswith(
        "no SWE-smith profile for repository nobody__nothing.12345678"
    )
    assert "overrides log_parser" in reasons["paramiko__paramiko.23f92003.func_pm_hand__0001"]
    assert all(r.endswith("require_grading=False") for r in reasons.values())
    # An episode can still run on them; grading then says why it cannot.
    loaded = load_task_source(path, require_grading=False).tasks
    assert [t.fast_gradable for t in loaded] == [False, False]
    with pytest.raises(MissingGradingFields, match="no SWE-smith profile for repository nobody__nothing"):
        loaded[0].instance()


def test_a_row_without_its_bug_patch_is_skipped(tmp_path: Path):
    path = write_rows(tmp_path / "rows.jsonl", [smith_row("a__b.00000001", patch="")])
    ((iid, reason),) = load_task_source(path, require_grading=False).skipped
    assert iid == "a__b.00000001.func_pm_hand__0001" and "'patch' must be a non-empty string" in reason


def test_repository_image_names():
    assert repository_images("Owner__Repo.abcdef12", None) == (
        "swesmith.x86_64.Owner__Repo.abcdef12",
        "swebench/swesmith.x86_64.owner_1776_repo.abcdef12",
    )
    assert repository_images("o__r.1", "mine/img:v1") == (
        "mine/img:v1",
        "swebench/swesmith.x86_64.o_1776_r.1",
    )


# ---------------------------------------------------------------------------------------------------
# The gold fix: the bug patch reversed


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return done.stdout


def test_the_reverse_patch_undoes_every_kind_of_change(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    files = {
        "x.txt": "a\nb\nc\nd\ne\nf\ng\nh\n",
        "y.txt": "keep\nno-eol",
        "gone.txt": "old\n",
        "m.txt": "mv\n",
    }
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clean")
    (repo / "x.txt").write_text("a\nB\nB2\nc\nd\ne\nf\nh\nnew\n")
    (repo / "y.txt").write_text("keep\nchanged-no-eol")
    (repo / "gone.txt").unlink()
    (repo / "new.txt").write_text("fresh\n")
    git(repo, "mv", "m.txt", "m2.txt")
    (repo / "x.txt").chmod(0o755)
    git(repo, "add", "-A")
    bug = git(repo, "diff", "--cached", "-M")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "bug")
    for marker in ("deleted file mode", "new file mode", "rename from", "old mode", "\\ No newline"):
        assert marker in bug, marker
    gold = reverse_patch(bug)
    assert gold != bug and reverse_patch(gold) == bug
    subprocess.run(["git", "-C", str(repo), "apply", "--index", "-"], input=gold, text=True, check=True)
    assert git(repo, "diff", "--cached", "HEAD~1", "--stat") == ""  # back to the clean commit, modes too


# ---------------------------------------------------------------------------------------------------
# On a real engine: a row in SWE-smith's format, its repository image built here under its name


@pytest.fixture(scope="module")
def calc_row(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, SmithProfile]]:
    """A SWE-smith row for the fixture package, its repository image built here under the row's
    `image_name` (the offline base image, the package at /testbed, `pip install -e .`, as the task
    factory makes them), and the profile SWE-smith's registry would hold for it."""
    from environments.config import EnvConfig
    from environments.factory.profile import detect
    from environments.factory.source import fetch
    from environments.factory.tasks import repo_image

    # its install writes calc/version.py, which no patch of the row's task may carry
    source = factory_repo_writing_a_version_file(tmp_path_factory.mktemp("smith-source") / "calc")
    checkout = fetch(str(source), tmp_path_factory.mktemp("smith"))
    profile = SmithProfile(
        owner="srl-test",
        repo="calc",
        commit=checkout.commit,
        # several commands, as SWE-smith's (`source ...; conda activate testbed; pytest ...`)
        test_cmd="export PYTHONDONTWRITEBYTECODE=1; "
        "python3 -m pytest --disable-warnings --color=no --tb=no --verbose",
    )
    row = smith_row(profile.key)
    repo_image(detect("calc", checkout.path, checkout.commit, row["image_name"]), checkout.path, EnvConfig())
    return row, {profile.key: profile}


@pytest.mark.docker
def test_a_swesmith_row_is_graded_in_its_named_image(calc_row, tmp_path: Path):
    import docker

    from environments.config import GradingConfig
    from environments.container import DockerEnvironment
    from environments.grader import grade, grader_for
    from environments.tasks.sources import prepare_image

    row, profiles = calc_row
    # as SWE-smith exports them: PASS_TO_PASS a JSON string
    source = write_rows(tmp_path / "smith.jsonl", [{**row, "PASS_TO_PASS": json.dumps(P2P)}])
    (task,) = load_task_source(source, profiles=profiles).tasks
    cfg = GradingConfig()
    assert isinstance(task, SmithTask) and grader_for(task, cfg) == "fast"
    try:
        assert prepare_image(task, pull=False) == task.image
        with DockerEnvironment(task.image) as env:
            # the start: the repository image's /testbed with the bug committed, in a commit of its own
            assert env.run("git rev-list --count HEAD && git status --porcelain").output == "1\n"
            assert env.run("test -f calc/version.py").exit_code == 0  # the install wrote it: not a change
            assert "total = value" in env.run("cat calc/core.py").output
            assert env.diff() == ""
            gold = grade(task, task.gold_patch, cfg, env=env)
            missed = grade(task, MISSED_PATCH, cfg, env=env)
        empty = grade(task, "", cfg)  # in a fresh container of the task's image
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker.from_env().images.remove(task.image, force=True)
    assert gold.status == "resolved", gold
    assert gold.fail_to_pass.success == F2P and gold.pass_to_pass.success == P2P
    assert empty.status == "empty_patch" and not empty.resolved
    assert missed.status == "unresolved", missed
    assert missed.fail_to_pass.failure == F2P and missed.pass_to_pass.success == P2P


@pytest.mark.docker
def test_a_bug_patch_that_does_not_apply_names_the_instance(calc_row, tmp_path: Path):
    from environments.images import ImageBuildError
    from environments.tasks.sources import prepare_image

    row, profiles = calc_row
    stale = {
        **row,
        "instance_id": row["instance_id"] + "_stale",
        "patch": BUG_PATCH.replace("total = 0", "t = 0"),
    }
    (task,) = load_task_source(write_rows(tmp_path / "stale.jsonl", [stale]), profiles=profiles).tasks
    with pytest.raises(
        ImageBuildError, match=rf"{re.escape(task.instance_id)}: the row's patch does not apply"
    ):
        prepare_image(task, pull=False)


@pytest.mark.docker
def test_the_pandas_rows_image_is_reported_missing(shared_data: Path):
    from environments.tasks.sources import ImageMissing, prepare_image

    (task,) = load_task_source(shared_data / "swesmith" / PANDAS).tasks
    with pytest.raises(ImageMissing) as caught:
        prepare_image(task, pull=False)
    assert caught.value.instance_id == task.instance_id
    assert "swebench/swesmith.x86_64.pandas-dev_1776_pandas.95280573" in str(caught.value)
    assert "swesmith.x86_64.pandas-dev__pandas.95280573" in str(caught.value)
