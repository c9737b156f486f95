"""The tasks a factory folder holds, as `TaskInstance`s, and the images they run in.

A factory folder (`make-tasks --out DIR`) holds `manifest.json`, `profile.json`, `instances.jsonl`
(SWE-smith's instance format: `patch` introduces the bug, the gold fix is its reverse), the repository
(`repo/`, a git repository whose branch `<instance_id>` is the clean commit plus the bug, as in
SWE-smith's mirrors) and `trajectories/<instance_id>.traj`.

Images: the repository's image (`profile.image`, SWE-smith's `image_name`: the base image, the
repository at its clean commit in /testbed, installed) and one thin image per task on top of it, whose
/testbed is at the task's bug commit (`base_commit`): the agent starts from the bug, tests included,
and `git diff` against that commit is exactly its patch. Grading is the fast runner
(`grading.run_tests_in_env`): the FAIL_TO_PASS and PASS_TO_PASS tests after the patch, with the test
files put back to the task's commit first (a patch cannot change the tests it is graded by).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from environments.factory.profile import LOG_PARSER, RepoProfile
from environments.factory.source import GIT_EXCLUDE
from environments.grading import parse_pytest_report
from environments.tasks.bundled import EXCLUDE_UNTRACKED

if TYPE_CHECKING:
    import docker

    from environments.config import EnvConfig

MANIFEST = "manifest.json"
INSTANCES = "instances.jsonl"
PROFILE = "profile.json"
IMAGE_NAMESPACE = "srl-factory"
# The graded tests' command: the bundled tasks' (`-rA` summary lines, which `parse_log_pytest` reads).
TEST_COMMAND = "python3 -m pytest -rA -p no:cacheprovider"
# Run where the task image puts /testbed at the bug commit (a fresh clone, so a fresh .git/info/exclude):
# the caches the tests leave, then what the repository image's install wrote into the checkout.
TASK_SETUP = f"printf %s {shlex.quote(GIT_EXCLUDE)} >> .git/info/exclude\n{EXCLUDE_UNTRACKED}\n"


@dataclass(frozen=True)
class GeneratedTask:
    """One generated task (an `environments.protocol.TaskInstance`; see the module)."""

    instance_id: str
    repo: str
    patch: str
    FAIL_TO_PASS: list[str]
    PASS_TO_PASS: list[str]
    image_name: str
    problem_statement: str
    base_commit: str
    created_at: str
    folder: Path = field(compare=False)
    row: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @property
    def image(self) -> str:
        """This task's own image: the repository's, with /testbed at the bug commit."""
        repository, _, _ = self.image_name.partition(":")
        return f"{repository}:{self.instance_id.rsplit('.', 1)[-1][:120]}"

    @property
    def fast_gradable(self) -> bool:
        return True

    @property
    def gold_patch(self) -> str:
        """The fix: the diff from the bug commit back to the clean one."""
        from environments.factory.source import run_git

        clean = RepoProfile.read(self.folder / PROFILE).commit
        return run_git(self.repo_dir, "diff", self.base_commit, clean) + "\n"

    @property
    def repo_dir(self) -> Path:
        return self.folder / "repo"

    @property
    def fail_to_pass(self) -> list[str]:
        return self.FAIL_TO_PASS

    @property
    def pass_to_pass(self) -> list[str]:
        return self.PASS_TO_PASS

    @property
    def test_patch(self) -> str:
        return ""  # the tests are the repository's own, already in the task's commit

    @property
    def test_command(self) -> str:
        return TEST_COMMAND

    def parse_log(self, log: str) -> dict[str, str]:
        """The statuses of `TEST_COMMAND`'s `-rA` summary lines (as the harness's `parse_log_pytest`)."""
        return parse_pytest_report(log)

    @property
    def test_files(self) -> list[str]:
        """Files of the graded tests: put back to the task's commit before grading."""
        return sorted({t.split("::", 1)[0] for t in (*self.FAIL_TO_PASS, *self.PASS_TO_PASS)})

    @property
    def eval_script(self) -> str:
        """The SWE-bench style eval script the official harness runs: the graded test files put back to
        the task's commit, the tests between the markers its grader reads, the files put back again."""
        files = " ".join(shlex.quote(f) for f in self.test_files)
        tests = " ".join(shlex.quote(t) for t in (*self.FAIL_TO_PASS, *self.PASS_TO_PASS))
        lines = [
            "#!/bin/bash",
            "set -uxo pipefail",
            "cd /testbed",
            f"git checkout {self.base_commit} {files}",
            ": '>>>>> Start Test Output'",
            f"{TEST_COMMAND} {tests}",
            ": '>>>>> End Test Output'",
            f"git checkout {self.base_commit} {files}",
        ]
        return "\n".join(lines) + "\n"

    def instance(self) -> dict[str, Any]:
        """The swebench 5.x instance the official harness grades (its `patch` is the gold fix, as in
        SWE-bench; the SWE-smith row, whose `patch` makes the bug, is `row`)."""
        return {
            "instance_id": self.instance_id,
            "repo": self.repo,
            "version": "0",
            "base_commit": self.base_commit,
            "environment_setup_commit": self.base_commit,
            "created_at": self.created_at,
            "problem_statement": self.problem_statement,
            "hints_text": "",
            "patch": self.gold_patch,
            "test_patch": "",
            "FAIL_TO_PASS": list(self.FAIL_TO_PASS),
            "PASS_TO_PASS": list(self.PASS_TO_PASS),
            "image": self.image,
            "eval_script": self.eval_script,
            "log_parser": LOG_PARSER,
            "eval_type": "pass_and_fail",
        }


def is_factory_folder(path: Path) -> bool:
    return (path / MANIFEST).is_file() and (path / INSTANCES).is_file()


SPLITS = ("train", "held_out")
"""The manifest's splits (`make-tasks --split-by`)."""
EVERY_TASK = ("all", "test")
"""Split names that read every task of a folder: `test` is the datasets' default split, which
`evaluate` and `check-experts` ask for."""


def load_folder(path: Path, split: str = "all") -> list[GeneratedTask]:
    """The tasks of a factory folder, in file order: those of the manifest's `split` (`train`,
    `held_out`), or every one (`all`, `test`). Another split name raises ValueError naming the valid ones."""
    if split in EVERY_TASK:
        chosen = None
    elif split in SPLITS:
        chosen = set(json.loads((path / MANIFEST).read_text(encoding="utf-8"))["split"][split])
    else:
        raise ValueError(
            f"{path}: a factory folder has the splits {', '.join(SPLITS)} (or {' or '.join(EVERY_TASK)}"
            f" for every task), not {split!r}"
        )
    tasks = []
    for line in (path / INSTANCES).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if chosen is not None and row["instance_id"] not in chosen:
                continue
            fields = {k: row[k] for k in GeneratedTask.__dataclass_fields__ if k not in ("folder", "row")}
            tasks.append(GeneratedTask(**fields, folder=path, row=row))
    return tasks


def repo_image(
    profile: RepoProfile, repo: Path, cfg: EnvConfig, client: docker.DockerClient | None = None
) -> str:
    """The repository's image (`profile.image`): built once, cached by its inputs."""
    from environments.images import build_task_image, ensure_base_image

    base = ensure_base_image(cfg, client=client)
    return build_task_image(
        profile.image,
        base,
        repo,
        profile.commit,
        profile.setup_script(),
        client=client,
        timeout=cfg.build_timeout,
    )


def task_image(task: GeneratedTask, cfg: EnvConfig, client: docker.DockerClient | None = None) -> str:
    """`task.image`: the repository's image with /testbed at the task's bug commit (no network)."""
    from environments.images import build_task_image

    profile = RepoProfile.read(task.folder / PROFILE)
    base = repo_image(profile, task.repo_dir, cfg, client)
    return build_task_image(
        task.image, base, task.repo_dir, task.base_commit, TASK_SETUP, client=client, network=False
    )
