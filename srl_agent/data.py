"""Step examples in: train/validation splits built by the `trajectories` package, and the sampling order.

Readers, step building and the by-group split all live in `trajectories`; this module knows the
default sources (the task spec picks one), runs `trajectories.build.build` into the run folder (so the run keeps the exact
examples it trained and validated on) and reads them back. `DataStream` walks the training examples in
a fresh seeded permutation per epoch; its position is two integers, saved in every checkpoint, so a
resumed run draws exactly the prompts it would have drawn.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srl_agent.config import DataConfig
from trajectories.actions import ActionParseError, parse_action
from trajectories.build import build
from trajectories.config import ConfigError
from trajectories.errors import SourceError
from trajectories.math_steps import bundled_math_path
from trajectories.record import StepExample, read_step_examples

# The public SWE-smith sample of this workspace (never copied into the project): `$SRL_SHARED_DATA` or
# the `shared/data` folder beside the repository, as the tests find it.
SHARED_DATA = Path(os.environ.get("SRL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SWE_SAMPLE = SHARED_DATA / "swesmith" / "ft_xml_example.jsonl"
TRAIN_FILE, VAL_FILE = "train.jsonl", "validation.jsonl"


@dataclass
class Splits:
    train: list[StepExample]
    val: list[StepExample]
    source: str


def bundled_math_source() -> str:
    """The math steps bundled with `trajectories` (what `data.source: auto` means for math)."""
    return str(bundled_math_path())


def shared_swe_source() -> str:
    """This workspace's SWE-smith sample (what `data.source: auto` means for SWE), if it is here."""
    if not SWE_SAMPLE.is_file():
        raise ConfigError(
            f"data.source: `auto` for --task swe means {SWE_SAMPLE} (the SWE-smith sample), which does not "
            "exist here; set data.source to SWE trajectories (a file, folder, glob or HF dataset id)"
        )
    return str(SWE_SAMPLE)


def whole_problems(examples: list[StepExample]) -> list[StepExample]:
    """Outcome-rewarded stages train on whole problems: the first step example of each group that
    carries a final answer."""
    first: dict[str, StepExample] = {}
    for ex in examples:
        if ex.answer is not None and (
            ex.group_id not in first or ex.step_index < first[ex.group_id].step_index
        ):
            first[ex.group_id] = ex
    return list(first.values())


def load_splits(
    kind: str, source: str, cfg: DataConfig, work_dir: Path, reuse: bool = False, need_train: bool = True
) -> Splits:
    """Step examples of `kind` from `source`, split by whole trajectory/problem; built into `work_dir`
    unless `source` is a prebuilt folder.

    `reuse` (a resumed run) reads what `work_dir` already holds, so a run continues on exactly the
    examples it started with even if the source changed meanwhile. `need_train` (training): a split
    that leaves no training example is a ConfigError saying why; an evaluation of the validation split
    passes False.
    """
    folder = Path(source)
    if reuse and (work_dir / TRAIN_FILE).is_file():
        folder = work_dir
    elif not (folder.is_dir() and (folder / TRAIN_FILE).is_file()):
        try:
            report = build(source, kind, work_dir, cfg.build)  # type: ignore[arg-type]
        except SourceError as e:  # a missing file, an unreadable dataset: the user's data.source
            raise ConfigError(f"data.source: {e}") from None
        if report.skipped:
            print(
                f"data: {len(report.skipped)} records of {source} skipped (see trajectories' report): "
                f"{report.skipped[0].to_dict()}"
            )
        folder = work_dir
    train = list(read_step_examples(folder / TRAIN_FILE))
    val = list(read_step_examples(folder / VAL_FILE)) if (folder / VAL_FILE).is_file() else []
    wrong = [ex.example_id for ex in train + val if ex.kind != kind]
    if wrong:
        raise ConfigError(f"data.source: {source} holds {wrong[0]!r} of another task than --task {kind}")
    if not train and need_train:
        raise ConfigError(f"data.source: {source} gave no training step examples{_why_no_train(val, cfg)}")
    if cfg.max_train_examples is not None:
        train = train[: cfg.max_train_examples]
    if cfg.repeat_tools:
        train = repeat_by_tool(train, cfg.repeat_tools)
    if cfg.max_val_examples is not None:
        val = val[: cfg.max_val_examples]
    if not train and need_train:
        raise ConfigError(
            f"data.max_train_examples={cfg.max_train_examples} leaves no training step examples"
        )
    return Splits(train=train, val=val, source=source)


def _why_no_train(val: list[StepExample], cfg: DataConfig) -> str:
    """Why a split left nothing to train on, when the validation split took it all."""
    held = len({ex.group_id for ex in val})
    if not held:
        return ""
    key = (
        f"data.build.validation_groups={cfg.build.validation_groups}"
        if cfg.build.validation_groups is not None
        else f"data.build.validation_fraction={cfg.build.validation_fraction}"
    )
    return (
        f": all {held} of its trajectories/problems went to validation ({key}); set "
        f"data.build.validation_groups to fewer than {held} (0: no validation), or add data"
    )


def repeat_by_tool(examples: list[StepExample], times: dict[str, int]) -> list[StepExample]:
    """`examples` with each one whose target calls a tool of `times` repeated that many times in
    place (a target that is no call, a math step, counts once)."""
    out = []
    for ex in examples:
        try:
            name = parse_action(ex.target).name if ex.kind == "swe" else None
        except ActionParseError:
            name = None
        out.extend([ex] * times.get(name, 1) if name else [ex])
    return out


class DataStream:
    """Training examples in a seeded permutation per epoch; `position` is (epoch, offset)."""

    def __init__(self, examples: list[StepExample], seed: int):
        self.examples, self.seed = examples, seed
        self.epoch, self.offset = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[StepExample]:
        out = []
        while len(out) < n:
            if self.offset == len(self._order):
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            out.append(self.examples[self._order[self.offset]])
            self.offset += 1
        return out

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = self._permutation(self.epoch)
