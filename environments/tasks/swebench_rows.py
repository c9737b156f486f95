"""SWE-bench instance rows as tasks (`SWEBenchTask`, an `environments.protocol.TaskInstance`).

A row is one instance as the datasets store it (HF `SWE-bench/SWE-bench_Lite`, a local JSON/JSONL
file). `task_from_row(row)` reads the fields an episode needs and checks the ones grading needs; it
raises `RowError` only for a row no episode can run on (no `instance_id`, no problem statement, test
lists that are not lists of strings). SWE-smith rows (`repo` is `swesmith/...`) are `smith_rows`'.

What the task runs in: the row's `image` when it has one (swebench 5.x datasets do), else the
official image `swebench/sweb.eval.x86_64.<id>:latest` (`__` as `_1776_`,
`grading.official_image_name`). Those images hold `/testbed` at the base commit, so the episode
starts at their HEAD.

Grading: swebench 5.x's `make_test_spec` reads `repo, version, FAIL_TO_PASS, PASS_TO_PASS,
eval_script, log_parser, eval_type` (and `image`, which every task has). 5.0.2 no longer derives the
eval script or the log parser from `repo`/`version` (its per-repo specs table is gone), so a row
without them cannot be graded by the harness: classic 12-field SWE-bench rows lack the last three.
Such a row still makes a task (an episode can run on it); `missing_for_grading` lists the fields, and
`instance()` raises `MissingGradingFields` naming the instance and them. `sources.load_task_source`
skips such rows up front by default, so that no episode is spent on an instance that cannot be graded.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from environments.grading import official_image_name

# What swebench 5.x's make_test_spec reads from an instance, besides instance_id and image.
GRADING_FIELDS = ("repo", "version", "FAIL_TO_PASS", "PASS_TO_PASS", "eval_script", "log_parser", "eval_type")
SWEBENCH_FIX = (
    "use a dataset that carries them (SWE-bench/SWE-bench_Lite or SWE-bench/SWE-bench_Verified from the hub "
    "rather than the classic princeton-nlp copies), or add them to the row"
)


class RowError(ValueError):
    """A row no episode can run on; the message names the field."""


class MissingGradingFields(ValueError):
    """The instance lacks fields swebench 5.x needs to grade it; names the instance and the fields."""

    def __init__(self, instance_id: str, missing: tuple[str, ...], fix: str = SWEBENCH_FIX):
        self.instance_id, self.missing = instance_id, missing
        self.reason = (
            f"lacks {', '.join(missing)}, which grading with swebench 5.x needs (its make_test_spec reads "
            f"them; 5.0.2 no longer derives them from repo/version); {fix}"
        )
        super().__init__(f"{instance_id}: {self.reason}")


@dataclass(frozen=True)
class SWEBenchTask:
    """One SWE-bench row as a task; see the module docstring. Make it with `task_from_row`."""

    instance_id: str
    problem_statement: str = field(repr=False)
    image: str
    """What episodes run in and the harness grades in: the row's image, or the official one."""
    base_commit: str | None
    fail_to_pass: tuple[str, ...] = field(repr=False)
    pass_to_pass: tuple[str, ...] = field(repr=False)
    missing_for_grading: tuple[str, ...]
    """The `GRADING_FIELDS` the row lacks; empty when the harness can grade it."""
    row: dict[str, Any] = field(repr=False, compare=False)

    @property
    def gradable(self) -> bool:
        return not self.missing_for_grading

    @property
    def fast_gradable(self) -> bool:
        return False  # its tests run as its eval script says, which only the harness reads

    @property
    def gold_patch(self) -> str | None:
        patch = self.row.get("patch")
        return patch if isinstance(patch, str) and patch.strip() else None

    @property
    def repo_dir(self) -> Path | None:
        return None  # the repository is in the image only

    def instance(self) -> dict[str, Any]:
        """The row as the swebench 5.x harness reads it, with this task's `image`.

        Raises MissingGradingFields when the row lacks what the harness needs.
        """
        if self.missing_for_grading:
            raise MissingGradingFields(self.instance_id, self.missing_for_grading)
        return {**self.row, "image": self.image}


def task_from_row(row: dict[str, Any]) -> SWEBenchTask:
    """A task from one SWE-bench row (a dict as the dataset holds it). Raises RowError."""
    instance_id = text_field(row, "instance_id")
    where = f"instance {instance_id}"
    problem = row.get("problem_statement")
    if not isinstance(problem, str) or not problem.strip():
        raise RowError(f"{where}: 'problem_statement' must be a non-empty string (the issue the agent gets)")
    named = optional_text(row, "image", where) or optional_text(row, "image_name", where)
    return SWEBenchTask(
        instance_id=instance_id,
        problem_statement=problem,
        image=named or official_image_name(instance_id),
        base_commit=optional_text(row, "base_commit", where),
        fail_to_pass=tests_field(row, "FAIL_TO_PASS", where),
        pass_to_pass=tests_field(row, "PASS_TO_PASS", where),
        missing_for_grading=tuple(key for key in GRADING_FIELDS if _absent(row.get(key))),
        row=dict(row),
    )


def text_field(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"{key!r} must be a non-empty string, got {_shown(value)}")
    return value.strip()


def optional_text(row: dict[str, Any], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value.strip() or None


def tests_field(row: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    """FAIL_TO_PASS / PASS_TO_PASS: a list of test names, or that list as a JSON string (as on HF) or as
    a Python literal (`str(list)`, single quotes, as some SWE-smith exports hold it)."""
    value = row.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise RowError(
                    f"{where}: {key!r} is a string that is neither JSON ({e}) nor a Python list literal"
                ) from None
    if not isinstance(value, list) or not all(isinstance(test, str) for test in value):
        raise RowError(f"{where}: {key!r} must be a list of test names, got {_shown(value)}")
    return tuple(value)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
