"""Cut trajectories and math solutions into SRL step examples, split by group, stream them to JSONL.

For step k of a group (a trajectory or a problem) the example's `target` is the expert's step k:
- SWE: `render_action(step.action)`, the canonical XML function call. Context: the task plus the last
  `context_steps` (action, observation) pairs before k (`"all"` = every earlier pair); each
  observation is capped at `observation_max_chars` with a visible marker (`truncate_middle`).
  `next_swe_example` makes the example for the step after a trajectory's last the same way: the
  prompt an agent acting in this format gets at each turn, from its own history.
- Math: the step text. Context: the problem, the preamble (if any) as the first context item, then
  every earlier step; with `next_title_hint`, step k's bold title is the example's `hint`.

Which steps become examples is `predict_steps`: the paper says a solution with N steps gives N-1
examples, which can mean either end is left out, so `"all"` (default), `"skip_first"` and
`"skip_last"` are offered.

Validation is split by group, deterministically from `seed`: a group's split key (SWE: its
`instance_id`, so all trajectories of one task land together; math: the problem id) is hashed with the
seed. `validation_groups = n` holds out exactly the n keys with the smallest hashes (kept in memory
while streaming: only those n groups' examples are buffered); otherwise keys hashing below
`validation_fraction` are held out. Either way no step of a held-out group reaches the train file.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeInt

from trajectories.actions import render_action
from trajectories.config import Section
from trajectories.errors import BadRecord
from trajectories.math_steps import MathProblem
from trajectories.record import (
    ContextItem,
    JsonlWriter,
    StepExample,
    TaskKind,
    Trajectory,
    step_example_lines,
    to_json_line,
)
from trajectories.sources import Item, Payload, ReadOptions, Skipped, SourceReader, read_record


class BuildConfig(Section):
    """How expert data becomes SRL step examples (`python -m trajectories build`, and the trainer)."""

    context_steps: NonNegativeInt | Literal["all"] = 2
    """SWE: earlier (action, observation) pairs in an example's context; `all` = every earlier pair."""
    observation_max_chars: int | None = Field(4000, ge=64)
    """SWE: cap per observation in characters (cut in the middle, with a marker); null = no cap."""
    next_title_hint: bool = False
    """Math: show step k's title (the paper's footnote); off by default."""
    predict_steps: Literal["all", "skip_first", "skip_last"] = "all"
    """Which steps become examples: every one, or all but the first or the last (the paper's N-1)."""
    validation_fraction: float = Field(0.05, ge=0.0, le=1.0)
    """Share of groups held out for validation (groups whose seeded hash falls below it)."""
    validation_groups: int | None = Field(None, ge=0)
    """Exact number of held-out groups; wins over validation_fraction."""
    seed: int = 0
    """Seed of the split hash: the same seed puts every group on the same side."""
    only_resolved: bool = False
    """SWE: keep only trajectories marked resolved (unknown counts as not)."""
    unknown_tools: Literal["keep", "skip"] = "keep"
    """A record calling a tool outside the known vocabulary: keep it as it is, or skip the record."""
    require_numbered_steps: bool = False
    """Math: skip s1K rows without `1. **Title**` steps (paper v3)."""
    hf_split: str = "train"
    """Split of a Hugging Face dataset source (SWE-smith-trajectories: tool, xml, ticks)."""
    hf_config: str | None = None
    """Config (subset) of a Hugging Face dataset source; null = the dataset's default."""
    streaming: bool = True
    """Read datasets and Parquet/Arrow files row by row instead of loading them whole."""
    limit: int | None = Field(None, ge=1)
    """Read at most this many records."""

    def read_options(self) -> ReadOptions:
        return ReadOptions(self.unknown_tools, self.require_numbered_steps)

    def reader(self, source: str | Path) -> SourceReader:
        return SourceReader(
            source,
            unknown_tools=self.unknown_tools,
            require_numbered_steps=self.require_numbered_steps,
            hf_split=self.hf_split,
            hf_config=self.hf_config,
            streaming=self.streaming,
            limit=self.limit,
        )


TRUNCATION_MARKER = "\n[... {n} characters truncated ...]\n"


def truncate_middle(text: str, budget: int | None) -> str:
    """`text` if it fits `budget` characters, else its head and tail around a marker naming the cut.

    The result, marker included, is at most `budget` characters long (budget >= 64).
    """
    if budget is None or len(text) <= budget:
        return text
    marker_len = len(TRUNCATION_MARKER.format(n=len(text)))
    keep = max(budget - marker_len, 0)
    head, tail = keep - keep // 2, keep // 2
    return text[:head] + TRUNCATION_MARKER.format(n=len(text) - head - tail) + text[len(text) - tail :]


def predicted_steps(num_steps: int, mode: str) -> range:
    start = 1 if mode == "skip_first" else 0
    stop = num_steps - 1 if mode == "skip_last" else num_steps
    return range(start, max(start, stop))


def swe_examples(traj: Trajectory, group_id: str, cfg: BuildConfig) -> list[StepExample]:
    """The step examples of one trajectory; BadRecord when an action has no canonical text form.

    Step j's context item is one object shared by the examples whose window holds it (records are
    not mutated after the build), so a window of k steps costs one item per step, not k. Items and
    examples are made with `trusted` (no validation): their fields come from the validated
    trajectory, the config and `render_action`, and this is the build's hot path.
    """
    targets, items = swe_context_items(traj, cfg)
    return [
        swe_example(traj, group_id, i, items, targets[i], cfg)
        for i in predicted_steps(len(traj.steps), cfg.predict_steps)
    ]


def next_swe_example(traj: Trajectory, group_id: str, cfg: BuildConfig) -> StepExample:
    """The example for the step after the trajectory's last, not taken yet: what an agent acting in
    the SRL format is prompted with (`srl_agent.agent`). Its context is made exactly as in
    `swe_examples`; its `target` is empty, since no expert step exists, and `num_steps` counts the
    step being taken."""
    _, items = swe_context_items(traj, cfg)
    return swe_example(traj, group_id, len(traj.steps), items, "", cfg)


def swe_context_items(traj: Trajectory, cfg: BuildConfig) -> tuple[list[str], list[ContextItem]]:
    """(canonical action text, context item) of every step; BadRecord when an action cannot be rendered."""
    targets = []
    for i, step in enumerate(traj.steps):
        try:
            targets.append(render_action(step.action))
        except ValueError as e:
            raise BadRecord(f"step {i}: {e}") from None
    items = [
        ContextItem.trusted(
            action=target, observation=truncate_middle(s.observation or "", cfg.observation_max_chars)
        )
        for target, s in zip(targets, traj.steps)
    ]
    return targets, items


def swe_example(
    traj: Trajectory, group_id: str, i: int, items: list[ContextItem], target: str, cfg: BuildConfig
) -> StepExample:
    """The example predicting step `i` from the window of `items` before it (`cfg.context_steps`)."""
    first = 0 if cfg.context_steps == "all" else max(0, i - cfg.context_steps)
    taken = i < len(traj.steps)
    meta = {"tool": traj.steps[i].action.name} if taken else {}
    meta["source_format"] = traj.source_format
    if traj.instance_id:
        meta["instance_id"] = traj.instance_id
    return StepExample.trusted(
        kind="swe",
        group_id=group_id,
        step_index=i,
        num_steps=len(traj.steps) if taken else i + 1,
        task=traj.task,
        context=items[first:i],
        target=target,
        omitted_steps=first,
        hint=None,
        answer=None,
        meta=meta,
    )


def math_examples(problem: MathProblem, group_id: str, cfg: BuildConfig) -> list[StepExample]:
    preamble = [ContextItem(action=problem.preamble)] if problem.preamble else []
    items = preamble + [ContextItem(action=s) for s in problem.steps]  # shared, as in swe_examples
    examples = []
    n = len(problem.steps)
    for i in predicted_steps(n, cfg.predict_steps):
        title = problem.titles[i] if i < len(problem.titles) else None
        examples.append(
            StepExample(
                kind="math",
                group_id=group_id,
                step_index=i,
                num_steps=n,
                task=problem.problem,
                context=items[: len(preamble) + i],
                target=problem.steps[i],
                hint=title if cfg.next_title_hint else None,
                answer=problem.answer,
                meta={
                    "source_format": problem.source_format,
                    "step_format": problem.step_format,
                    "has_preamble": bool(preamble),
                },
            )
        )
    return examples


# ---------------------------------------------------------------------------------------------------
# the streaming build


@dataclass
class BuildReport:
    source: str
    task: TaskKind
    formats: Counter = field(default_factory=Counter)
    read: int = 0
    groups: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0})
    examples: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0})
    format_error_turns: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "task": self.task,
            "formats": dict(self.formats),
            "read": self.read,
            "kept_groups": self.groups,
            "examples": self.examples,
            "format_error_turns": self.format_error_turns,
            "skipped_count": len(self.skipped),
            "skipped": [s.to_dict() for s in self.skipped],
            "seconds": round(self.seconds, 3),
        }


def build(source: str | Path, task: TaskKind, out_dir: str | Path, cfg: BuildConfig) -> BuildReport:
    """Read `source`, write `train.jsonl` and `validation.jsonl` of StepExamples under `out_dir`.

    Streams: memory holds one record, the held-out groups' examples when `validation_groups` is set,
    and the group ids seen. Returns the report (the CLI also writes it as `report.json`).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    report = BuildReport(source=str(source), task=task)
    reader = cfg.reader(source)
    outcomes = (process_record(position, payload, task, cfg) for position, payload in reader.raw_records())
    seen: Counter = Counter()
    with JsonlWriter(out / "train.jsonl") as train, JsonlWriter(out / "validation.jsonl") as val:
        splitter = GroupSplitter(cfg, {"train": train, "validation": val})
        for o in outcomes:
            if o.source_format:
                report.read += 1
                report.formats[o.source_format] += 1
            if o.reason is not None:
                report.skipped.append(Skipped(o.position, o.reason))
                continue
            report.format_error_turns += o.format_error_turns
            group_id = _unique(o.group_id, seen)
            lines = o.lines if group_id == o.group_id else [_regroup(line, group_id) for line in o.lines]
            splitter.add(o.split_key, lines)
        splitter.flush()
    report.groups, report.examples = splitter.groups, {"train": train.count, "validation": val.count}
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class Outcome:
    """What one raw record became: example lines of one group, or the reason it was skipped.

    `source_format` is set when the record was read (even if the build then skipped it);
    `group_id` is the group's base id, made unique across the source by `build`.
    """

    position: str
    source_format: str | None = None
    reason: str | None = None
    group_id: str = ""
    split_key: str = ""
    lines: list[bytes] = field(default_factory=list)
    format_error_turns: int = 0


def process_record(position: str, payload: Payload, task: TaskKind, cfg: BuildConfig) -> Outcome:
    """Read one raw record and cut it into encoded step-example lines (pure)."""
    try:
        item = read_record(position, payload, cfg.read_options())
    except BadRecord as e:
        return Outcome(position, reason=str(e))
    try:
        group_id, split_key, examples = examples_for(item, task, cfg)
    except BadRecord as e:
        return Outcome(position, item.source_format, reason=str(e))
    return Outcome(
        position,
        item.source_format,
        None,
        group_id,
        split_key,
        step_example_lines(examples),
        item.meta.get("format_error_turns", 0) if isinstance(item, Trajectory) else 0,
    )


def examples_for(item: Item, task: TaskKind, cfg: BuildConfig) -> tuple[str, str, list[StepExample]]:
    """(group id, split key, examples) of one item; BadRecord when it cannot give examples for `task`.

    Group id: SWE `traj_id`/`trajectory_id`, else `instance_id`, else a digest of the task; math: the
    problem id. Split key: SWE `instance_id` (all trajectories of one task on the same side), else the
    group id.
    """
    if isinstance(item, Trajectory):
        if task != "swe":
            raise BadRecord(f"a SWE trajectory ({item.source_format}), not a math problem")
        if cfg.only_resolved and item.resolved is not True:
            raise BadRecord(f"resolved is {item.resolved} and only_resolved is on")
        group_id = (
            item.meta.get("traj_id")
            or item.meta.get("trajectory_id")
            or item.instance_id
            or _digest(item.task)
        )
        examples, split_key = swe_examples(item, group_id, cfg), item.instance_id or group_id
    else:
        if task != "math":
            raise BadRecord(f"a math problem ({item.source_format}), not a SWE trajectory")
        group_id = split_key = item.problem_id
        examples = math_examples(item, group_id, cfg)
    if not examples:
        raise BadRecord(f"no examples (predict_steps={cfg.predict_steps} leaves none of its steps)")
    return group_id, split_key, examples


def _regroup(line: bytes, group_id: str) -> bytes:
    example = StepExample.from_dict(json.loads(line))
    example.group_id = group_id
    return to_json_line(example).encode()


def _unique(base: str, seen: Counter) -> str:
    seen[base] += 1
    return base if seen[base] == 1 else f"{base}@{seen[base]}"


def _digest(text: str) -> str:
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def split_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same group always lands in the same split."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class GroupSplitter:
    """Routes each group's examples to the train or validation writer (see the module docstring)."""

    def __init__(self, cfg: BuildConfig, writers: dict[str, JsonlWriter]) -> None:
        self.cfg, self.writers = cfg, writers
        self.groups = {"train": 0, "validation": 0}
        self._decided: dict[str, str] = {}
        self._heap: list[tuple[float, str]] = []  # (-hash, key) of the held-out candidates
        self._held: dict[str, list[list[bytes]]] = {}

    def add(self, key: str, examples: list[bytes]) -> None:
        """Route one group's encoded example lines (from `step_example_lines`)."""
        if self.cfg.validation_groups is None:
            held = split_hash(self.cfg.seed, key) < self.cfg.validation_fraction
            self._emit("validation" if held else "train", examples)
        elif key in self._held:
            self._held[key].append(examples)
        elif key in self._decided or self.cfg.validation_groups == 0:
            self._emit("train", examples)
        else:
            self._offer(key, examples)

    def _offer(self, key: str, examples: list[bytes]) -> None:
        h = split_hash(self.cfg.seed, key)
        if len(self._heap) < self.cfg.validation_groups:
            heapq.heappush(self._heap, (-h, key))
            self._held[key] = [examples]
            return
        worst_h, worst = self._heap[0]
        if h < -worst_h:
            heapq.heapreplace(self._heap, (-h, key))
            self._held[key] = [examples]
            self._release(worst, "train")
        else:
            self._decided[key] = "train"
            self._emit("train", examples)

    def _release(self, key: str, split: str) -> None:
        self._decided[key] = split
        for examples in self._held.pop(key):
            self._emit(split, examples)

    def _emit(self, split: str, examples: list[bytes]) -> None:
        self.groups[split] += 1
        for line in examples:
            self.writers[split].write_line(line)

    def flush(self) -> None:
        for _, key in sorted(self._heap, reverse=True):
            self._release(key, "validation")
        self._heap.clear()
