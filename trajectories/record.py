"""The typed records every part of srl-agent exchanges.

- `Trajectory`: one expert (or policy) episode on a SWE task: the task text, the steps (thought, one
  tool call, observation), the final patch and whether it resolved the task. Expert data from every
  reader and the policy's own rollouts use this one record.
- `StepExample`: one SRL training example cut from a trajectory or a math solution: the context the
  policy sees and the expert's next action, the target of the similarity reward.

Both serialise to JSON lines carrying `FORMAT_VERSION`; `from_dict` refuses other versions and names
the missing or wrong-typed field, so a corrupt file is an error, never a silent default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FORMAT_VERSION = 1
_SCALARS = (str, int, float, bool, type(None))
# json.dumps(..., ensure_ascii=False) with the cycle check off (records are trees): 40% faster.
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
_encode_str = json.encoder.encode_basestring  # what _ENCODER does to a str (ensure_ascii=False)

TaskKind = Literal["swe", "math"]


class RecordError(ValueError):
    """A serialised record is malformed; the message names the field."""


@dataclass
class ToolCall:
    """One action: a canonical tool name (`bash`, `str_replace_editor`, `submit`, ...) and arguments.

    `original_name` keeps the tool name the source used (`execute_bash`, `finish`, `open`, ...);
    `raw` the action text as the source wrote it, when there was one.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    original_name: str | None = None
    id: str | None = None
    raw: str | None = None


@dataclass
class Step:
    """One agent turn: free-text reasoning, exactly one tool call, and what the environment answered."""

    thought: str
    action: ToolCall
    observation: str | None = None


@dataclass
class Trajectory:
    task: str
    steps: list[Step]
    instance_id: str | None = None
    system: str | None = None
    final_patch: str | None = None
    resolved: bool | None = None
    exit_status: str | None = None
    source_format: str = "srl_jsonl"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "record": "trajectory", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        _check_header(data, "trajectory")
        steps_raw = _field(data, "steps", list)
        steps = []
        for i, s in enumerate(steps_raw):
            where = f"steps[{i}]"
            if not isinstance(s, dict):
                raise RecordError(f"{where}: expected an object, got {type(s).__name__}")
            act = _field(s, "action", dict, where)
            steps.append(
                Step(
                    thought=_field(s, "thought", str, where),
                    action=ToolCall(
                        name=_field(act, "name", str, f"{where}.action"),
                        arguments=_field(act, "arguments", dict, f"{where}.action"),
                        original_name=_opt(act, "original_name", str, f"{where}.action"),
                        id=_opt(act, "id", str, f"{where}.action"),
                        raw=_opt(act, "raw", str, f"{where}.action"),
                    ),
                    observation=_opt(s, "observation", str, where),
                )
            )
        return cls(
            task=_field(data, "task", str),
            steps=steps,
            instance_id=_opt(data, "instance_id", str),
            system=_opt(data, "system", str),
            final_patch=_opt(data, "final_patch", str),
            resolved=_opt(data, "resolved", bool),
            exit_status=_opt(data, "exit_status", str),
            source_format=_opt(data, "source_format", str) or "srl_jsonl",
            meta=_opt(data, "meta", dict) or {},
        )


@dataclass
class ContextItem:
    """One earlier expert step shown in an SRL prompt: its action text and, for SWE, its observation."""

    action: str
    observation: str | None = None


@dataclass
class StepExample:
    """One SRL training example: predict expert step `step_index` given the context.

    `group_id` names the trajectory or problem it came from: train/validation splits are made by group,
    so no step of a held-out trajectory leaks into training. `target` is the expert's action in its
    canonical text form (SWE: the XML function call; math: the step text), the string the similarity
    reward compares against. `omitted_steps` counts earlier steps left out of `context` by the window.
    `answer` is the final answer (math) kept for outcome rewards.
    """

    kind: TaskKind
    group_id: str
    step_index: int
    num_steps: int
    task: str
    context: list[ContextItem]
    target: str
    omitted_steps: int = 0
    hint: str | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def example_id(self) -> str:
        return f"{self.group_id}#{self.step_index}"

    def to_dict(self) -> dict[str, Any]:
        # Spelled out rather than dataclasses.asdict, whose recursive deep copy was a third of the
        # time of building 134k SWE examples; the result is the same dict (a test checks it).
        return {
            "format_version": FORMAT_VERSION,
            "record": "step_example",
            "kind": self.kind,
            "group_id": self.group_id,
            "step_index": self.step_index,
            "num_steps": self.num_steps,
            "task": self.task,
            "context": [{"action": c.action, "observation": c.observation} for c in self.context],
            "target": self.target,
            "omitted_steps": self.omitted_steps,
            "hint": self.hint,
            "answer": self.answer,
            "meta": dict(self.meta)
            if all(isinstance(v, _SCALARS) for v in self.meta.values())
            else copy.deepcopy(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepExample:
        _check_header(data, "step_example")
        kind = _field(data, "kind", str)
        if kind not in ("swe", "math"):
            raise RecordError(f"kind: expected 'swe' or 'math', got {kind!r}")
        context = []
        for i, c in enumerate(_field(data, "context", list)):
            if not isinstance(c, dict):
                raise RecordError(f"context[{i}]: expected an object, got {type(c).__name__}")
            context.append(
                ContextItem(
                    action=_field(c, "action", str, f"context[{i}]"),
                    observation=_opt(c, "observation", str, f"context[{i}]"),
                )
            )
        return cls(
            kind=kind,  # type: ignore[arg-type]
            group_id=_field(data, "group_id", str),
            step_index=_field(data, "step_index", int),
            num_steps=_field(data, "num_steps", int),
            task=_field(data, "task", str),
            context=context,
            target=_field(data, "target", str),
            omitted_steps=_opt(data, "omitted_steps", int) or 0,
            hint=_opt(data, "hint", str),
            answer=_opt(data, "answer", str),
            meta=_opt(data, "meta", dict) or {},
        )


# ---------------------------------------------------------------------------------------------------
# JSON lines


def write_jsonl(records: Iterable[Trajectory | StepExample], path: str | Path) -> int:
    """Write records one JSON object per line (atomically: a temp file renamed into place)."""
    with JsonlWriter(path) as writer:
        for r in records:
            writer.write(r)
    return writer.count


def to_json_line(record: Trajectory | StepExample) -> str:
    """The JSON line `write_jsonl` writes for `record` (without the newline)."""
    return _ENCODER.encode(record.to_dict())


def step_example_lines(examples: list[StepExample]) -> list[str]:
    """`[to_json_line(e) for e in examples]`, encoding each string the examples share only once.

    The examples of one trajectory repeat its task and each observation in up to `context_steps`
    contexts; encoding those once made building 134k SWE examples about a fifth faster. The layout
    is `StepExample.to_dict`'s, key for key (a test compares the two on every kind of example).
    """
    memo: dict[str, str] = {}

    def s(text: str | None) -> str:
        if text is None:
            return "null"
        encoded = memo.get(text)
        if encoded is None:
            encoded = memo[text] = _encode_str(text)
        return encoded

    lines = []
    for e in examples:
        context = ", ".join(
            f'{{"action": {s(c.action)}, "observation": {s(c.observation)}}}' for c in e.context
        )
        lines.append(
            f'{{"format_version": {FORMAT_VERSION}, "record": "step_example", "kind": {s(e.kind)}, '
            f'"group_id": {s(e.group_id)}, "step_index": {e.step_index}, "num_steps": {e.num_steps}, '
            f'"task": {s(e.task)}, "context": [{context}], "target": {s(e.target)}, '
            f'"omitted_steps": {e.omitted_steps}, "hint": {s(e.hint)}, "answer": {s(e.answer)}, '
            f'"meta": {_ENCODER.encode(e.meta)}}}'
        )
    return lines


class JsonlWriter:
    """`write_jsonl` one record at a time, for writing several files from one stream.

    Lines go to `<path>.tmp`, renamed to `path` when the `with` block ends without an exception.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._tmp = self.path.with_name(self.path.name + ".tmp")

    def __enter__(self) -> JsonlWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._tmp.open("w", encoding="utf-8")
        return self

    def write(self, record: Trajectory | StepExample) -> None:
        self.write_line(to_json_line(record))

    def write_line(self, line: str) -> None:
        """Write a line made by `to_json_line` (for callers that encode records before routing them)."""
        self._file.write(line + "\n")
        self.count += 1

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._file.close()
        if exc_type is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def read_step_examples(path: str | Path) -> Iterator[StepExample]:
    """Read StepExamples written by `write_jsonl`; a bad line is an error naming file and line."""
    for lineno, data in _iter_json_lines(path):
        try:
            yield StepExample.from_dict(data)
        except RecordError as e:
            raise RecordError(f"{path}:{lineno}: {e}") from None


def read_trajectories_jsonl(path: str | Path) -> Iterator[Trajectory]:
    for lineno, data in _iter_json_lines(path):
        try:
            yield Trajectory.from_dict(data)
        except RecordError as e:
            raise RecordError(f"{path}:{lineno}: {e}") from None


def _iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(data, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, data


# ---------------------------------------------------------------------------------------------------
# field validation


def _check_header(data: dict[str, Any], record: str) -> None:
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise RecordError(f"format_version: expected {FORMAT_VERSION}, got {version!r}")
    if data.get("record", record) != record:
        raise RecordError(f"record: expected {record!r}, got {data.get('record')!r}")


def _field(data: dict[str, Any], key: str, typ: type, where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if key not in data:
        raise RecordError(f"{name}: missing")
    value = data[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise RecordError(f"{name}: expected {typ.__name__}, got {type(value).__name__}")
    return value


def _opt(data: dict[str, Any], key: str, typ: type, where: str = "") -> Any:
    if data.get(key) is None:
        return None
    return _field(data, key, typ, where)
