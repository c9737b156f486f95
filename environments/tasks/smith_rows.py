"""SWE-smith instance rows as tasks (`SmithTask`, an `environments.protocol.TaskInstance`), graded with
their repository's SWE-smith profile.

A SWE-smith row (`repo` is `swesmith/<owner>__<repo>.<commit8>`) carries `instance_id`, `patch` (it
INTRODUCES the bug: the gold fix is its reverse), `FAIL_TO_PASS`, `PASS_TO_PASS` (lists, or those
lists as JSON strings or Python literals), `image_name` and `problem_statement`. `smith_task_from_row`
reads it; it raises `RowError` for a row no episode can run on (no id, statement or patch, test lists
that are not lists of strings).

What the task runs in: the repository's image, found locally under the row's `image_name`
(`swesmith.x86_64.<owner>__<repo>.<commit8>`) or under SWE-smith's Docker Hub name
(`swebench/swesmith.x86_64.<owner>_1776_<repo>.<commit8>`, lower-cased), in that order
(`source_images`), with the row's `patch` applied to its /testbed and committed: `task.image`, a thin
image `sources.prepare_image` derives. That commit has no parent, so the clean code is not in the
history the agent can read; its sha is only known once the image is made, so `base_commit` is None
and the image's label names it (as for every derived image).

Grading: the fast runner (`grading.run_tests_in_env`) runs the profile's `test_cmd` on the
FAIL_TO_PASS and PASS_TO_PASS tests, with their test files put back to the task's commit first (as
SWE-smith reverts edits to test files), and reads the log with SWE-smith's default parser
(`grading.parse_pytest_verbose`); resolved iff every F2P and P2P test passes (swebench's rules,
`grading.grade_statuses`). The profile comes from `profiles` (default: SWE-smith's own, read from the
installed package by `smith_profiles.installed_profiles`). A row whose repository has no profile, or
whose profile overrides what this project grades with, still makes a task (an episode can run on it),
but `ungradable` says why, and `sources.load_task_source` reports it instead of loading it by default.
The swebench harness cannot grade these rows (no eval script or parser of swebench's reads
`pytest --verbose`): `instance()` raises `MissingGradingFields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from environments.grading import parse_pytest_verbose
from environments.tasks.bundled import local_image_name
from environments.tasks.patches import PatchError, reverse_patch
from environments.tasks.smith_profiles import SmithProfile, installed_profiles
from environments.tasks.swebench_rows import (
    MissingGradingFields,
    RowError,
    optional_text,
    tests_field,
    text_field,
)

REPO_PREFIX = "swesmith/"
HUB_NAMESPACE = "swebench"
ARCH = "x86_64"
HARNESS_FIELDS = ("version", "eval_script", "log_parser", "eval_type")
HARNESS_FIX = (
    "SWE-smith rows are graded by the fast runner with their repository's SWE-smith profile "
    "(grading.grader=auto or fast); swebench 5.x has no log parser for their `pytest --verbose` output"
)


def is_smith_row(row: Mapping[str, Any]) -> bool:
    """Whether `row` is a SWE-smith instance (its `repo` is `swesmith/...`)."""
    repo = row.get("repo")
    return isinstance(repo, str) and repo.startswith(REPO_PREFIX)


@dataclass(frozen=True)
class SmithTask:
    """One SWE-smith row as a task; see the module docstring. Make it with `smith_task_from_row`."""

    instance_id: str
    problem_statement: str = field(repr=False)
    repo_key: str
    """SWE-smith's repository name, `<owner>__<repo>.<commit8>` (the row's `repo` without `swesmith/`)."""
    bug_patch: str = field(repr=False)
    """The row's `patch`: applied to the repository image to make the task's starting state."""
    source_images: tuple[str, ...]
    """The repository image's names, looked for in this order (see the module)."""
    fail_to_pass: tuple[str, ...] = field(repr=False)
    pass_to_pass: tuple[str, ...] = field(repr=False)
    profile: SmithProfile | None
    ungradable: str | None
    """Why this project cannot grade the row (no profile, an override it does not implement); None: it can."""
    row: dict[str, Any] = field(repr=False, compare=False)

    @property
    def image(self) -> str:
        return local_image_name(self.instance_id)

    @property
    def base_commit(self) -> str | None:
        return None  # the bug commit is made with the image; its label names it

    @property
    def gradable(self) -> bool:
        return self.ungradable is None

    @property
    def fast_gradable(self) -> bool:
        return self.gradable

    @property
    def gold_patch(self) -> str | None:
        """The row's patch reversed; None when it cannot be reversed here (a binary patch)."""
        try:
            return reverse_patch(self.bug_patch)
        except PatchError:
            return None

    @property
    def repo_dir(self) -> Path | None:
        return None  # the repository is in the image only

    @property
    def test_patch(self) -> str:
        return ""  # the tests are the repository's own, already in the task's commit

    @property
    def test_files(self) -> list[str]:
        """Files of the graded tests (SWE-smith's `get_test_files`): put back before grading."""
        return sorted({t.split("::", 1)[0] for t in (*self.fail_to_pass, *self.pass_to_pass)})

    @property
    def test_command(self) -> str:
        """The profile's `test_cmd`. Raises RuntimeError for a row without a usable profile."""
        if self.profile is None or self.ungradable:
            raise RuntimeError(f"{self.instance_id}: {self.ungradable}")
        return self.profile.test_cmd

    def parse_log(self, log: str) -> dict[str, str]:
        return parse_pytest_verbose(log)

    def instance(self) -> dict[str, Any]:
        raise MissingGradingFields(self.instance_id, HARNESS_FIELDS, self.ungradable or HARNESS_FIX)


def smith_task_from_row(row: dict[str, Any], profiles: Mapping[str, SmithProfile] | None = None) -> SmithTask:
    """A task from one SWE-smith row; `profiles` by repository key (default: SWE-smith's). Raises RowError."""
    instance_id = text_field(row, "instance_id")
    where = f"instance {instance_id}"
    problem = row.get("problem_statement")
    if not isinstance(problem, str) or not problem.strip():
        raise RowError(f"{where}: 'problem_statement' must be a non-empty string (the issue the agent gets)")
    patch = row.get("patch")
    if not isinstance(patch, str) or not patch.strip():
        raise RowError(f"{where}: 'patch' must be a non-empty string (the diff that introduces the bug)")
    key = text_field(row, "repo").removeprefix(REPO_PREFIX)
    profiles = installed_profiles() if profiles is None else profiles
    profile = profiles.get(key)
    if profile is None:
        known = "no SWE-smith profiles are installed (pip install swesmith)" if not profiles else (
            f"{len(profiles)} profiles known"
        )  # fmt: skip
        ungradable: str | None = f"no SWE-smith profile for repository {key} ({known})"
    else:
        ungradable = profile.unsupported
    return SmithTask(
        instance_id=instance_id,
        problem_statement=problem,
        repo_key=key,
        bug_patch=patch,
        source_images=repository_images(key, optional_text(row, "image_name", where)),
        fail_to_pass=tests_field(row, "FAIL_TO_PASS", where),
        pass_to_pass=tests_field(row, "PASS_TO_PASS", where),
        profile=profile,
        ungradable=ungradable,
        row=dict(row),
    )


def repository_images(key: str, image_name: str | None) -> tuple[str, ...]:
    """The names the repository image may have here: the row's `image_name` (else SWE-smith's own
    `swesmith.x86_64.<key>`), then SWE-smith's Docker Hub name for it."""
    owner, _, rest = key.partition("__")
    hub = f"{HUB_NAMESPACE}/swesmith.{ARCH}.{owner}_1776_{rest}".lower()
    names = [image_name or f"swesmith.{ARCH}.{key}", hub]
    if image_name and "/" not in image_name:
        names.append(f"{HUB_NAMESPACE}/{image_name.replace('__', '_1776_')}".lower())
    return tuple(dict.fromkeys(names))
