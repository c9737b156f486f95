"""Bundled SWE tasks: small Python repositories written for this project, each a swebench 5.x instance.

Each task lives in `environments/tasks/<name>/`:

- `task.json`: `instance_id, repo, version, base_commit, created_at, problem_statement, FAIL_TO_PASS,
  PASS_TO_PASS` (pytest node ids).
- `repo/`: the repository's files at the base commit, as plain files.
- `gold.patch`: the fix, a unified diff that `git apply` takes at the base commit.
- `test.patch`: the tests that check the fix (SWE-bench style: the agent never sees them; the eval
  script applies them before running the tests).
- `expert.traj`: an expert trajectory in SWE-agent 1.x function-calling `.traj` format, recorded by
  executing the handwritten steps in `experts.py` in the task's container (real observations).

The base commit is created, not stored: `materialize_repo` turns `repo/` into a git repository with
gitpython, one commit with a fixed author, committer, dates and message and every file at mode 100644,
so the sha depends only on the files. `task.json` records that sha (the harness and the eval script
name it); `materialize_repo` refuses to go on when the files no longer hash to it, naming the new sha,
so an edit to `repo/` without updating `task.json` is an error, never a silently different task.

`build_images` builds each task's image under `Task.image` (the base image plus the repository in
/testbed; pytest comes with the base). `Task.instance()` is the swebench 5.x instance (with `image`,
`eval_script`, `log_parser`, `eval_type`) that `swebench.harness.run_evaluation` grades;
`write_dataset` writes them as the JSON file the harness reads with `dataset_name=<path>`.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from environments.grading import parse_pytest_report

if TYPE_CHECKING:
    from environments.config import EnvConfig

TASKS_DIR = Path(__file__).resolve().parent
IMAGE_NAMESPACE = "srl-agent"
LOG_PARSER = "parse_log_pytest"  # the name in swebench 5.x PARSER_REGISTRY; reads `pytest -rA` lines
EVAL_TYPE = "pass_and_fail"
TEST_COMMAND = "python3 -m pytest -rA -p no:cacheprovider"
HEREDOC = "EOF_114329324912"  # the delimiter SWE-bench's own eval scripts use

# Fixed identity and time of every base commit, so that its sha depends on the files alone.
COMMIT_AUTHOR = ("srl-agent tasks", "tasks@srl-agent.invalid")
COMMIT_DATE = "1735689600 +0000"  # 2025-01-01T00:00:00Z in git's raw form
COMMIT_MESSAGE = "Base commit of a bundled srl-agent task\n"
# Written to .git/info/exclude (not part of the tree, so not part of the sha): keeps caches that running
# the tests leaves behind out of `git add -A` and thus out of submitted patches.
GIT_EXCLUDE = "__pycache__/\n*.pyc\n.pytest_cache/\n"
# Shell, run in the checkout of an image whose repository was installed (factory tasks, SWE-smith rows):
# what the install wrote there (a version file from setuptools-scm, say tabulate's `tabulate/version.py`)
# is untracked, so `git add -A` would put it into every submitted patch; each such path, anchored and
# with its glob characters escaped, joins .git/info/exclude. Files the agent creates later stay in it.
EXCLUDE_UNTRACKED = (
    "git ls-files --others --exclude-standard"
    " | sed -e 's/[][*?!#\\\\]/\\\\&/g' -e 's|^|/|' >> .git/info/exclude"
)
# Run in /testbed when the task image is built (no network needed: pytest comes with the base image).
TASK_SETUP = f"cat >> .git/info/exclude <<'EOF'\n{GIT_EXCLUDE}EOF\npython3 -m pytest --version\n"

_REQUIRED = ("instance_id", "repo", "version", "base_commit", "created_at", "problem_statement")
_DIFF_TARGET = re.compile(r"^\+\+\+ b/(.+)$", re.MULTILINE)


class TaskError(ValueError):
    """A bundled task's files are missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Task:
    instance_id: str
    repo: str
    version: str
    base_commit: str
    created_at: str
    problem_statement: str
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    patch: str
    test_patch: str
    directory: Path

    @property
    def image(self) -> str:
        """Image name in swebench's naming (`__` becomes `_1776_`), under our own namespace."""
        return local_image_name(self.instance_id)

    @property
    def repo_dir(self) -> Path:
        return self.directory / "repo"

    @property
    def fast_gradable(self) -> bool:
        return True  # the test patch is here and the tests are pytest's: `grading.run_tests_in_env`

    @property
    def gold_patch(self) -> str | None:
        return self.patch if self.patch.strip() else None

    @property
    def test_command(self) -> str:
        return TEST_COMMAND

    def parse_log(self, log: str) -> dict[str, str]:
        """The statuses of `TEST_COMMAND`'s `-rA` summary lines (as the harness's `parse_log_pytest`)."""
        return parse_pytest_report(log)

    @property
    def expert_trajectory(self) -> Path:
        return self.directory / "expert.traj"

    @property
    def test_files(self) -> list[str]:
        """Files the test patch touches: reset before and after the tests, then given to pytest."""
        return sorted(set(_DIFF_TARGET.findall(self.test_patch)))

    @property
    def eval_script(self) -> str:
        """The SWE-bench style eval script: reset the test files, apply the test patch, run the tests
        between the markers the harness's grader looks for, and reset the test files again."""
        files = " ".join(shlex.quote(f) for f in self.test_files)
        lines = [
            "#!/bin/bash",
            "set -uxo pipefail",
            "cd /testbed",
            "git status",
            f"git -c core.fileMode=false diff {self.base_commit}",
            f"git checkout {self.base_commit} {files}",
            f"git apply -v - <<'{HEREDOC}'",
            self.test_patch.rstrip("\n"),
            HEREDOC,
            ": '>>>>> Start Test Output'",
            f"{TEST_COMMAND} {files}",
            ": '>>>>> End Test Output'",
            f"git checkout {self.base_commit} {files}",
        ]
        return "\n".join(lines) + "\n"

    def instance(self) -> dict[str, Any]:
        """The swebench 5.x instance: the classic fields plus `image, eval_script, log_parser, eval_type`."""
        return {
            "instance_id": self.instance_id,
            "repo": self.repo,
            "version": self.version,
            "base_commit": self.base_commit,
            "environment_setup_commit": self.base_commit,
            "created_at": self.created_at,
            "problem_statement": self.problem_statement,
            "hints_text": "",
            "patch": self.patch,
            "test_patch": self.test_patch,
            "FAIL_TO_PASS": list(self.fail_to_pass),
            "PASS_TO_PASS": list(self.pass_to_pass),
            "image": self.image,
            "eval_script": self.eval_script,
            "log_parser": LOG_PARSER,
            "eval_type": EVAL_TYPE,
        }


def local_image_name(instance_id: str) -> str:
    """An image this project makes for an instance: swebench's naming under our own namespace."""
    name = instance_id.lower().replace("__", "_1776_")
    return f"{IMAGE_NAMESPACE}/sweb.eval.x86_64.{name}:latest"


def load_tasks(directory: str | Path = TASKS_DIR) -> list[Task]:
    """Every task folder (one holding a `task.json`) under `directory`, sorted by instance id."""
    directory = Path(directory)
    tasks = [load_task(path.parent) for path in sorted(directory.glob("*/task.json"))]
    if not tasks:
        raise TaskError(f"no task folders (*/task.json) under {directory}")
    ids = [t.instance_id for t in tasks]
    if len(set(ids)) != len(ids):
        raise TaskError(f"duplicate instance ids under {directory}: {sorted(ids)}")
    return sorted(tasks, key=lambda t: t.instance_id)


def get_task(instance_id: str, directory: str | Path = TASKS_DIR) -> Task:
    tasks = {t.instance_id: t for t in load_tasks(directory)}
    if instance_id not in tasks:
        raise TaskError(f"no bundled task {instance_id!r}; known: {', '.join(tasks)}")
    return tasks[instance_id]


def load_task(folder: str | Path) -> Task:
    folder = Path(folder)
    meta_path = folder / "task.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TaskError(f"{meta_path}: cannot read: {e}") from None
    if not isinstance(meta, dict):
        raise TaskError(f"{meta_path}: expected an object")
    for key in _REQUIRED:
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise TaskError(f"{meta_path}: {key!r} must be a non-empty string")
    tests = {key: _test_ids(meta, key, meta_path) for key in ("FAIL_TO_PASS", "PASS_TO_PASS")}
    if not tests["FAIL_TO_PASS"]:
        raise TaskError(f"{meta_path}: FAIL_TO_PASS is empty; a task needs a test the fix makes pass")
    if not (folder / "repo").is_dir():
        raise TaskError(f"{folder / 'repo'}: the repository folder is missing")
    return Task(
        **{key: meta[key] for key in _REQUIRED},
        fail_to_pass=tests["FAIL_TO_PASS"],
        pass_to_pass=tests["PASS_TO_PASS"],
        patch=_read_patch(folder / "gold.patch"),
        test_patch=_read_patch(folder / "test.patch"),
        directory=folder,
    )


def write_dataset(tasks: Iterable[Task], path: str | Path) -> Path:
    """Write the tasks' swebench instances as a JSON list (what `run_evaluation(dataset_name=path)` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([t.instance() for t in tasks], indent=1) + "\n", encoding="utf-8")
    return path


def materialize_repo(task: Task, dest: str | Path) -> Path:
    """Create the task's git repository at its base commit in `dest` (which must not exist or be empty).

    Raises TaskError when the commit made from `repo/` is not `task.base_commit`.
    """
    import git  # gitpython: only the image build needs it

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise TaskError(f"{dest}: not empty; materialize_repo needs a fresh folder")
    files = sorted(p for p in task.repo_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    repo = git.Repo.init(dest, initial_branch="main")
    for src in files:
        target = dest / src.relative_to(task.repo_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
        target.chmod(0o644)
    (dest / ".git" / "info").mkdir(parents=True, exist_ok=True)
    (dest / ".git" / "info" / "exclude").write_text(GIT_EXCLUDE)
    repo.index.add([str(p.relative_to(task.repo_dir)) for p in files])
    who = git.Actor(*COMMIT_AUTHOR)
    commit = repo.index.commit(
        COMMIT_MESSAGE,
        author=who,
        committer=who,
        author_date=COMMIT_DATE,
        commit_date=COMMIT_DATE,
    )
    repo.close()
    if commit.hexsha != task.base_commit:
        raise TaskError(
            f"{task.directory / 'task.json'}: base_commit is {task.base_commit} but {task.repo_dir} "
            f"now commits to {commit.hexsha}; set base_commit to the new sha if the edit was meant"
        )
    return dest


def build_images(
    tasks: Iterable[Task], cfg: EnvConfig | None = None, *, client: Any = None, rebuild: bool = False
) -> list[str]:
    """Build (or reuse, when their inputs are unchanged) the base image and every task's image, each
    under its `image` name, so the swebench harness finds them locally. Returns the image names."""
    from environments import docker_engine, images
    from environments.config import EnvConfig

    cfg = cfg or EnvConfig()
    base = images.ensure_base_image(cfg, client=client, rebuild=rebuild)
    built = []
    for task in tasks:
        with tempfile.TemporaryDirectory(prefix=f"srl-{task.directory.name}-") as tmp:
            repo = materialize_repo(task, Path(tmp) / "repo")
            tag = images.build_task_image(
                task.image, base, repo, task.base_commit, TASK_SETUP,
                ca_bundle=None, network=False, client=client, rebuild=rebuild,
            )  # fmt: skip
        built.append(_stop_with_sigkill(client or docker_engine.shared_client(), tag))
    return built


def _stop_with_sigkill(client: Any, tag: str) -> str:
    """Give the image STOPSIGNAL SIGKILL (once; labels and command are kept).

    The swebench harness keeps its containers alive with `tail -f /dev/null` as PID 1, which ignores
    SIGTERM, and removes them with `docker stop --time=15`: every graded instance would wait 15 s.
    """
    from environments.images import split_tag

    if client.images.get(tag).attrs["Config"].get("StopSignal") == "SIGKILL":
        return tag
    container = client.containers.create(tag, stop_signal="SIGKILL")  # commit keeps the container's config
    try:
        repository, version = split_tag(tag)
        container.commit(repository=repository, tag=version)
    finally:
        container.remove(force=True)
    return tag


def _test_ids(meta: dict[str, Any], key: str, where: Path) -> tuple[str, ...]:
    value = meta.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and "::" in v for v in value):
        raise TaskError(f"{where}: {key!r} must be a list of pytest node ids (path::test)")
    return tuple(value)


def _read_patch(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaskError(f"{path}: cannot read: {e}") from None
    if not text.startswith("diff --git ") or not text.endswith("\n"):
        raise TaskError(
            f"{path}: not a unified git diff (must start with 'diff --git' and end with a newline)"
        )
    return text
