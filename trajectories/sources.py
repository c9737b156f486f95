"""Read any supported source into `Trajectory` / `MathProblem` items, listing what was skipped.

A source is a file, a folder (its data files, recursively, in sorted order), a glob, or a Hugging Face
dataset (`hf:NAME`, or a bare `owner/name` that is not a local path; local `.parquet` files also go
through `datasets`). Files: `.json` / `.traj` hold one JSON document (an object = one record, a list =
one record per element, except that a list of chat messages is one conversation: `is_conversation`);
`.parquet` / `.arrow` are tables; any other file is read as JSON lines (a line may be such a list too).

The format of each record is detected from its keys (`detect_format`, formats.md §10), so a folder
may mix formats. A record that cannot be read (bad bytes, truncated JSON, not an object, unknown
shape, a reader's `BadRecord`) is skipped and listed in `SourceReader.skipped` with its position
(`file:line`, `file[index]`, `file` or `dataset[split]#row`) and reason; reading goes on. A source that
cannot be read at all raises `SourceError` naming it.

    reader = SourceReader("data/", unknown_tools="skip")
    for item in reader:          # streams: one record in memory at a time
        ...
    reader.skipped, reader.formats

`raw_records()` (positions and undecoded payloads) and `read_record()` (payload -> item) are the same
work in two halves, for callers that handle each record's outcome themselves. A dataset's split and config
come from `hf_split` / `hf_config` (SWE-smith-trajectories' splits: `tool`, `xml`, `ticks`).
"""

from __future__ import annotations

import glob
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajectories import math_steps, swe_readers
from trajectories.errors import BadRecord, SourceError
from trajectories.math_steps import MathProblem
from trajectories.record import RecordError, Trajectory
from trajectories.tools import UnknownTools

Item = Trajectory | MathProblem
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".traj", ".parquet", ".arrow")
_DOCUMENT_SUFFIXES = (".json", ".traj")
_TABLE_SUFFIXES = (".parquet", ".arrow")
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

MATH_FORMATS = ("s1k", "gsm8k", "math")


@dataclass
class Skipped:
    """A record left out: where it is (`file:line`, `file[i]`, `dataset[split]#row`) and why."""

    record: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"record": self.record, "reason": self.reason}


@dataclass
class ReadResult:
    items: list[Item]
    skipped: list[Skipped]
    formats: Counter = field(default_factory=Counter)


def read_source(source: str | Path, **options: Any) -> ReadResult:
    """Read a whole source into memory (for small sources and tests; use SourceReader to stream)."""
    reader = SourceReader(source, **options)
    items = list(reader)
    return ReadResult(items=items, skipped=reader.skipped, formats=reader.formats)


@dataclass(frozen=True)
class ReadOptions:
    """What changes how a record is read (the reader options apart from where to read)."""

    unknown_tools: UnknownTools = "keep"
    require_numbered_steps: bool = False


Payload = bytes | dict[str, Any] | BadRecord  # a JSON line not yet decoded, a decoded record, or why not


def read_record(position: str, payload: Payload, options: ReadOptions = ReadOptions()) -> Item:
    """One raw record -> its item (position kept in `meta["position"]`); raises BadRecord."""
    record = _decode(payload) if isinstance(payload, bytes) else payload
    if isinstance(record, BadRecord):
        raise record
    fmt = detect_format(record)
    if fmt in MATH_FORMATS:
        if fmt == "s1k":
            item: Item = math_steps.read_s1k(record, options.require_numbered_steps)
        else:
            item = math_steps.read_gsm8k(record) if fmt == "gsm8k" else math_steps.read_math_row(record)
    else:
        try:
            item = _SWE_READERS[fmt](record, options.unknown_tools)
        except RecordError as e:  # a field the reader passed on unchecked has the wrong type
            raise BadRecord(f"malformed {fmt} record: {e}") from None
    item.meta["position"] = position
    if isinstance(item, Trajectory) and item.instance_id is None and position.endswith(".traj"):
        item.instance_id = Path(position).stem
    return item


class SourceReader:
    """Iterate the items of a source; `skipped` and `formats` fill in as iteration proceeds."""

    def __init__(
        self,
        source: str | Path,
        *,
        unknown_tools: UnknownTools = "keep",
        require_numbered_steps: bool = False,
        hf_split: str = "train",
        hf_config: str | None = None,
        streaming: bool = True,
        limit: int | None = None,
    ) -> None:
        self.source = str(source)
        self.options = ReadOptions(unknown_tools, require_numbered_steps)
        self.hf_split, self.hf_config, self.streaming = hf_split, hf_config, streaming
        self.limit = limit
        self.skipped: list[Skipped] = []
        self.formats: Counter = Counter()

    def __iter__(self) -> Iterator[Item]:
        for position, payload in self.raw_records():
            try:
                item = read_record(position, payload, self.options)
            except BadRecord as e:
                self.skipped.append(Skipped(position, str(e)))
                continue
            self.formats[item.source_format] += 1
            yield item

    def raw_records(self) -> Iterator[tuple[str, Payload]]:
        """(position, payload) for every record, at most `limit`; `read_record` turns one into an item."""
        for n, (position, payload) in enumerate(self._records()):
            if self.limit is not None and n >= self.limit:
                return
            yield position, payload

    # -- records with their positions ---------------------------------------------------------------

    def _records(self) -> Iterator[tuple[str, Payload]]:
        for kind, target in self._expand():
            if kind == "hf":
                from trajectories import hf

                rows = hf.iter_rows(
                    target, split=self.hf_split, config=self.hf_config, streaming=self.streaming
                )
                for i, row in enumerate(rows):
                    yield f"{target}[{self.hf_split}]#{i}", row
            elif kind == "skip":
                yield target, BadRecord(f"not a data file (expected one of {', '.join(DATA_SUFFIXES)})")
            else:
                yield from _file_records(Path(target), self.streaming)

    def _expand(self) -> Iterator[tuple[str, str]]:
        src = self.source
        if src.startswith("hf:"):
            yield "hf", src[3:]
            return
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise SourceError(f"{src}: folder holds no files")
            for p in files:
                yield ("file" if p.suffix in DATA_SUFFIXES else "skip"), str(p)
        elif path.exists():
            yield "file", src
        elif any(ch in src for ch in "*?["):
            matches = sorted(m for m in glob.glob(src, recursive=True) if Path(m).is_file())
            if not matches:
                raise SourceError(f"{src}: the pattern matches no file")
            for m in matches:
                yield "file", m
        elif _HF_ID.match(src) and path.suffix not in DATA_SUFFIXES:  # `dir/x.traj` is a missing file
            yield "hf", src
        else:
            raise SourceError(f"{src}: no such file or folder (and not a dataset id like owner/name)")


def _file_records(path: Path, streaming: bool) -> Iterator[tuple[str, Payload]]:
    if path.suffix in _TABLE_SUFFIXES:
        from trajectories import hf

        table = "parquet" if path.suffix == ".parquet" else "arrow"
        for i, row in enumerate(hf.iter_rows(table, data_files=str(path), streaming=streaming)):
            yield f"{path}#{i}", row
        return
    try:
        handle = path.open("rb")
    except OSError as e:
        raise SourceError(f"{path}: cannot open ({e.strerror or e})") from None
    with handle:
        if path.suffix in _DOCUMENT_SUFFIXES:
            yield from _document_records(path, handle.read())
            return
        for lineno, raw in enumerate(handle, 1):
            if not raw.isspace():  # a blank line is no record (isspace, unlike strip, copies nothing)
                yield f"{path}:{lineno}", raw  # decoded by read_record


def _document_records(path: Path, raw: bytes) -> Iterator[tuple[str, Payload]]:
    data = _decode(raw, whole=True)
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield f"{path}[{i}]", item if isinstance(item, dict) else BadRecord(_not_object(item))
    else:
        yield str(path), data


def _decode(raw: bytes, whole: bool = False) -> Any:
    """JSON from bytes; a BadRecord (returned, not raised) names what is wrong with them.

    A list of chat messages is one conversation, returned as the record `{"messages": [...]}`; any
    other list is returned as it is when `whole` (a document: one record per element).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadRecord(f"bad bytes: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return BadRecord(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; truncated?)")
    if is_conversation(data):
        return {"messages": data}
    if whole and isinstance(data, list):
        return data
    return data if isinstance(data, dict) else BadRecord(_not_object(data))


def is_conversation(data: Any) -> bool:
    """A bare list of chat messages (every item an object with `role` and `content`), the shape of
    mini-swe-agent's test trajectories and of many chat exports: one record, not one per message."""
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in data)
    )


def _not_object(value: Any) -> str:
    return f"expected a JSON object, got {type(value).__name__}"


# ---------------------------------------------------------------------------------------------------
# format detection (formats.md §10)


def detect_format(record: dict[str, Any]) -> str:
    """The source format of one record, from cheap key checks; BadRecord when it is none we read."""
    if "format_version" in record and "record" in record:
        if record["record"] == "trajectory":
            return "srl_jsonl"
        raise BadRecord(f"a {record['record']!r} record (already built, not an expert trajectory)")
    if "test_result" in record and "history" in record and "messages" not in record:
        raise BadRecord("OpenHands output.jsonl events are not read; use the chat-message exports")
    if _is_sweagent(record):
        return "sweagent_traj"
    if str(record.get("trajectory_format", "")).startswith("mini-swe-agent"):
        return "minisweagent"
    turns = record.get("trajectory")
    if isinstance(turns, list) and turns and all(isinstance(t, dict) for t in turns):
        if any(t.get("role") == "ai" or ("text" in t and "content" not in t) for t in turns):
            return "nebius_sweagent"
        if "messages" not in record:
            return _chat_format(turns)
    if "messages" in record:
        record["messages"] = messages = swe_readers.load_messages(record, "messages")  # decodes, checks roles
        return _chat_format(messages)
    if "trajectory_steps" in record and "output_patch" in record:
        raise BadRecord("R2E-Gym native run objects are not read; use the R2E-Gym SFT rows (XML messages)")
    if "question" in record and (
        "deepseek_attempt" in record or "attempt" in record or "thinking_trajectories" in record
    ):
        return "s1k"
    if "question" in record and isinstance(record.get("answer"), str) and "####" in record["answer"]:
        return "gsm8k"
    if "problem" in record or ("question" in record and "solution" in record):
        return "math"
    if "problem_statement" in record and "FAIL_TO_PASS" in record:
        raise BadRecord("a SWE-bench/SWE-smith task instance (no agent steps), not a trajectory")
    raise BadRecord(f"unrecognized record (keys: {', '.join(sorted(map(str, record))[:12])})")


def _is_sweagent(record: dict[str, Any]) -> bool:
    """`trajectory`/`history` with `info`/`environment`, or (demo files) a history of SWE-agent items."""
    if ("trajectory" in record or "history" in record) and ("info" in record or "environment" in record):
        return True
    history = record.get("history")
    return isinstance(history, list) and any(
        isinstance(m, dict) and ("message_type" in m or "agent" in m) for m in history[:3]
    )


def _chat_format(messages: list[Any]) -> str:
    assistants = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    replies = [m for m in messages if isinstance(m, dict) and m.get("role") in ("user", "tool")]
    if any(_content(m).lstrip().startswith("<returncode>") for m in replies):
        return "minisweagent"
    if any(m.get("tool_calls") for m in assistants):
        return "openai_tool_messages"
    texts = [_content(m) for m in assistants]
    if any("<function=" in t for t in texts):
        return "swesmith_sft_xml"
    if any("```mswea_bash_command" in t or "<mswea_bash_command>" in t for t in texts):
        return "minisweagent"
    if any("```" in t for t in texts):
        return "swesmith_sft_ticks"
    raise BadRecord(
        "chat messages with no recognizable actions (no tool_calls, <function=...> or ``` blocks)"
    )


def _content(message: dict[str, Any]) -> str:
    try:
        return swe_readers.text_of(message.get("content"))
    except BadRecord:
        return ""


_SWE_READERS: dict[str, Callable[[dict[str, Any], UnknownTools], Trajectory]] = {
    "sweagent_traj": swe_readers.read_sweagent_traj,
    "swesmith_sft_xml": swe_readers.read_xml_messages,
    "swesmith_sft_ticks": swe_readers.read_ticks_messages,
    "openai_tool_messages": swe_readers.read_tool_messages,
    "nebius_sweagent": swe_readers.read_nebius_sweagent,
    "minisweagent": swe_readers.read_mini_swe_agent,
    "srl_jsonl": swe_readers.read_srl_jsonl,
}
