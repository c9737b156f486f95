"""The typed records every part of srl-agent exchanges.

- `Trajectory`: one expert (or policy) episode on a SWE task: the task text, the steps (thought, one
  tool call, observation), the final patch and whether it resolved the task. Expert data from every
  reader and the policy's own rollouts use this one record.
- `StepExample`: one SRL training example cut from a trajectory or a math solution: the context the
  policy sees and the expert's next action, the target of the similarity reward.

Both serialise to JSON lines carrying `FORMAT_VERSION` and a `record` name; `from_dict` refuses other
versions and names the missing or wrong-typed field, so a corrupt file is an error, never a silent
default.

The records are pydantic models with strict fields (a `str` takes only a string, an `int` never a
bool, nested records take objects). Reading a file (`from_dict`) validates fully, and so do the
constructors, which the readers use (they build records from foreign data). Either way a bad field
raises `RecordError` naming its path, e.g. `steps[3].action.name: expected str, got int`. The one
exception is the build's hot path (`build.swe_examples`, 135k examples for 5,000 trajectories): it
makes `StepExample`/`ContextItem` with `trusted`, without validation, from fields of an
already-validated `Trajectory` and strings it made itself. `trusted` is `model_construct` without
that method's generic per-field loop, which on pydantic 2.14 costs more than validating (3.0 vs
1.9 us per `StepExample`); validated, the build took ~8% more CPU than with the dataclasses, with
`trusted` ~4%. Assignment after construction is not validated (the readers fill in fields they
find later).

Constructors take keywords or, as the dataclasses these records were, positional arguments in field
order (`ToolCall("bash", {"command": "ls"})`); an unknown keyword is a TypeError. In a file `null`
means the default for `source_format`, `meta` and `omitted_steps`; `ToolCall.arguments` may be left
out of a constructor (it defaults to `{}`) but not out of a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

FORMAT_VERSION = 1
# json.dumps(..., ensure_ascii=False) with the cycle check off (records are trees): 40% faster.
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
_encode_str = json.encoder.encode_basestring  # what _ENCODER does to a str (ensure_ascii=False)

TaskKind = Literal["swe", "math"]
_set = object.__setattr__


class RecordError(ValueError):
    """A record is malformed; the message names the field (`steps[3].action.name: ...`)."""


class _Record(BaseModel):
    """Strict fields, positional construction in field order, and `RecordError` for bad fields."""

    model_config = ConfigDict(strict=True, extra="ignore")

    # Top-level keys whose `null` in a file means the field's default (files have always allowed it).
    _null_means_default: ClassVar[frozenset[str]] = frozenset()
    # Fields a constructor may leave out although a file must hold them: name -> default factory.
    _init_defaults: ClassVar[dict[str, Any]] = {}
    _field_names: ClassVar[tuple[str, ...]] = ()
    _field_set: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._field_names = tuple(cls.model_fields)
        cls._field_set = frozenset(cls._field_names)

    def __init__(self, /, *args: Any, **data: Any) -> None:
        if args or not self._field_set.issuperset(data):
            data = self._keywords(args, data)
        try:  # what BaseModel.__init__ does, without packing `data` into keywords once more
            self.__pydantic_validator__.validate_python(data, self_instance=self)
        except ValidationError as e:
            # Constructor defaults go in only when validation failed without them: calls that pass
            # every field (the readers' hot path) pay nothing for them.
            missing = self._init_defaults.keys() - data.keys()
            if not missing:
                raise RecordError(_describe(e)) from None
            self.__init__(**data, **{name: self._init_defaults[name]() for name in missing})

    # Marks this as the plain pydantic constructor, so that `model_validate` (files) keeps validating
    # the data as it is instead of calling it: files may hold extra keys and must hold `arguments`.
    # A test checks it (`test_files_are_validated_without_the_constructor`).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """The record, unvalidated, for code that passes every field in order, each already of its
        type (see the module docstring): what `model_construct` makes, without its loop over aliases
        and defaults. It fills the four slots of a pydantic instance (`BaseModel.__slots__`; a test
        checks that they are still these four and that the result equals the validated record)."""
        record = cls.__new__(cls)
        _set(record, "__dict__", fields)
        _set(record, "__pydantic_fields_set__", set(fields))
        _set(record, "__pydantic_extra__", None)
        _set(record, "__pydantic_private__", None)
        return record

    @classmethod
    def _keywords(cls, args: tuple[Any, ...], data: dict[str, Any]) -> dict[str, Any]:
        """Positional arguments named in field order; an unknown keyword is a TypeError, as it was."""
        if len(args) > len(cls._field_names):
            raise TypeError(f"{cls.__name__} takes at most {len(cls._field_names)} positional arguments")
        for name, value in zip(cls._field_names, args):
            if name in data:
                raise TypeError(f"{cls.__name__} got multiple values for {name!r}")
            data[name] = value
        if not cls._field_set.issuperset(data):
            unknown = ", ".join(sorted(data.keys() - cls._field_set))
            raise TypeError(f"{cls.__name__} got unexpected keyword arguments: {unknown}")
        return data

    @classmethod
    def _validated(cls, data: dict[str, Any], record: str) -> Any:
        _check_header(data, record)
        if any(data.get(k, 0) is None for k in cls._null_means_default):
            data = {k: v for k, v in data.items() if v is not None or k not in cls._null_means_default}
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise RecordError(_describe(e)) from None


class ToolCall(_Record):
    """One action: a canonical tool name (`bash`, `str_replace_editor`, `submit`, ...) and arguments.

    `original_name` keeps the tool name the source used (`execute_bash`, `finish`, `open`, ...);
    `raw` the action text as the source wrote it, when there was one.
    """

    name: str
    arguments: dict[str, Any]
    original_name: str | None = None
    id: str | None = None
    raw: str | None = None

    _init_defaults: ClassVar[dict[str, Any]] = {"arguments": dict}  # a constructor may leave them out


class Step(_Record):
    """One agent turn: free-text reasoning, exactly one tool call, and what the environment answered."""

    thought: str
    action: ToolCall
    observation: str | None = None


class Trajectory(_Record):
    task: str
    steps: list[Step]
    instance_id: str | None = None
    system: str | None = None
    final_patch: str | None = None
    resolved: bool | None = None
    exit_status: str | None = None
    source_format: str = "srl_jsonl"
    meta: dict[str, Any] = Field(default_factory=dict)

    _null_means_default: ClassVar[frozenset[str]] = frozenset({"source_format", "meta"})

    @field_validator("source_format", mode="before")
    @classmethod
    def _empty_source_format(cls, value: Any) -> Any:
        return "srl_jsonl" if value == "" else value  # an empty name read as the default, as it was

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "record": "trajectory", **self.model_dump()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        return cls._validated(data, "trajectory")


class ContextItem(_Record):
    """One earlier expert step shown in an SRL prompt: its action text and, for SWE, its observation."""

    action: str
    observation: str | None = None


class StepExample(_Record):
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
    meta: dict[str, Any] = Field(default_factory=dict)

    _null_means_default: ClassVar[frozenset[str]] = frozenset({"omitted_steps", "meta"})

    @property
    def example_id(self) -> str:
        return f"{self.group_id}#{self.step_index}"

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "record": "step_example", **self.model_dump()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepExample:
        return cls._validated(data, "step_example")


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


def step_example_lines(examples: list[StepExample]) -> list[bytes]:
    """`[to_json_line(e).encode() for e in examples]`, encoding each string the examples share once.

    The examples of one trajectory repeat its task and each observation in up to `context_steps`
    contexts; encoding those once made building 134k SWE examples about a fifth faster, and keeping
    them as UTF-8 (not re-encoding every whole line on write) a few percent more. The layout is
    `StepExample.to_dict`'s, key for key (a test compares the two on every kind of example).
    """
    memo: dict[str, bytes] = {}

    def s(text: str | None) -> bytes:
        if text is None:
            return b"null"
        encoded = memo.get(text)
        if encoded is None:
            encoded = memo[text] = _encode_str(text).encode()
        return encoded

    lines = []
    for e in examples:
        context = b", ".join(
            [b'{"action": %s, "observation": %s}' % (s(c.action), s(c.observation)) for c in e.context]
        )
        lines.append(
            b'{"format_version": %d, "record": "step_example", "kind": %s, "group_id": %s, '
            b'"step_index": %d, "num_steps": %d, "task": %s, "context": [%s], "target": %s, '
            b'"omitted_steps": %d, "hint": %s, "answer": %s, "meta": %s}'
            % (
                FORMAT_VERSION,
                s(e.kind),
                s(e.group_id),
                e.step_index,
                e.num_steps,
                s(e.task),
                context,
                s(e.target),
                e.omitted_steps,
                s(e.hint),
                s(e.answer),
                _ENCODER.encode(e.meta).encode(),
            )
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

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._tmp.open("wb")
        return self

    def write(self, record: Trajectory | StepExample) -> None:
        self.write_line(to_json_line(record).encode())

    def write_line(self, line: bytes) -> None:
        """Write one UTF-8 line without its newline: `to_json_line(record).encode()`, or one of
        `step_example_lines` (for callers that encode records before routing them)."""
        self._file.write(line)
        self._file.write(b"\n")
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
# the header and error messages


def _check_header(data: dict[str, Any], record: str) -> None:
    """The line's header, which belongs to the file format rather than to the record's fields."""
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise RecordError(f"format_version: expected {FORMAT_VERSION}, got {version!r}")
    if data.get("record", record) != record:
        raise RecordError(f"record: expected {record!r}, got {data.get('record')!r}")


_EXPECTED = {
    "string_type": "str",
    "int_type": "int",
    "bool_type": "bool",
    "dict_type": "dict",
    "list_type": "list",
    "model_type": "an object",
}


def _describe(error: ValidationError) -> str:
    """The first error as `path: what is wrong`, the path written as in Python (`steps[3].action`)."""
    err = error.errors(include_url=False)[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    value = err.get("input")
    if err["type"] == "missing":
        what = "missing"
    elif err["type"] in _EXPECTED:
        what = f"expected {_EXPECTED[err['type']]}, got {type(value).__name__}"
    elif err["type"] == "literal_error":
        what = f"expected {err['ctx']['expected']}, got {value!r}"
    else:
        what = f"{err['msg']} (got {value!r})"
    more = len(error.errors()) - 1
    return f"{path}: {what}" + (f" (and {more} more errors)" if more else "")
