"""SEARCH/REPLACE edits, as pure functions: read them from a response, apply them to files, make a patch.

The edit format is Agentless's (swe-rl's Agentless-mini repair step), one block per edit:

    ```python
    ### configlite/parser.py
    <<<<<<< SEARCH
        key, value = line.split("=")
    =======
        key, value = line.split("=", 1)
    >>>>>>> REPLACE
    ```

- `parse_edits(text)`: the blocks in order, each with its file path, block number and line. The three
  markers are whole lines (trailing whitespace forgiven). The path is the last `### path` line between
  the previous block and this one; a block without one edits the previous block's file. Code fences
  are optional and ignored outside blocks; inside a block every line is content, fences included
  (docstrings hold them), so a block is only ended by its own `>>>>>>> REPLACE`. A block without a
  path, without its divider, or never closed is reported (`EditProblem`), never guessed at.
- `apply_edits(files, edits)`: each edit in order on the file's current content (so an edit may build
  on an earlier one). SEARCH must occur exactly once, as whole lines; an edit whose SEARCH does not
  occur, occurs more than once, is empty, or names a file that is not among `files` is not applied and
  is reported with its file and block. The other edits are still applied: the patch holds what did
  match (as Agentless-mini applies the edits that match and drops the rest), and the caller reports
  the failures next to it. An edit whose SEARCH equals its REPLACE changes nothing and is no failure.
- `unified_diff(originals, edited)`: a `git apply`-able patch (`diff --git a/P b/P`, `--- a/P`,
  `+++ b/P`, hunks with 3 lines of context, `\\ No newline at end of file` where due). Files are
  only changed, never created or deleted: the edits can only name files the prompt showed.

Paths are read as written except for a leading `./` or `/testbed/` (the repository's place in the
containers), which are dropped.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from typing import Any

SEARCH = "<<<<<<< SEARCH"
DIVIDER = "======="
REPLACE = ">>>>>>> REPLACE"
_PATH_LINE = re.compile(r"^###\s+(\S.*?)\s*$")
_FENCE = re.compile(r"^\s*```")
NO_NEWLINE = "\\ No newline at end of file\n"
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE block: replace the lines `search` with `replace` in `path`."""

    path: str
    search: str
    """The SEARCH lines, each ending with a newline ("" for an empty SEARCH)."""
    replace: str
    block: int
    """The block's number in the response, from 1."""
    line: int
    """The response line (from 1) of its `<<<<<<< SEARCH` marker."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EditProblem:
    """A block that could not be read, or an edit that could not be applied, and why."""

    block: int
    path: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"block {self.block} ({self.path or 'no path'}): {self.reason}"


def parse_edits(text: str) -> tuple[list[Edit], list[EditProblem]]:
    """The SEARCH/REPLACE blocks of `text` and the malformed ones; see the module docstring."""
    edits: list[Edit] = []
    problems: list[EditProblem] = []
    lines = text.splitlines()
    path: str | None = None  # the file the next block edits
    block = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if (found := _PATH_LINE.match(line)) and not _is_marker(line):
            path = normalise_path(found.group(1))
            i += 1
            continue
        if line.rstrip() != SEARCH:
            i += 1
            continue
        block, start = block + 1, i
        search, replace, part, end = [], [], "search", None
        for j in range(i + 1, len(lines)):
            marker = lines[j].rstrip()
            if marker == SEARCH:  # a new block opens before this one closed
                break
            if marker == DIVIDER and part == "search":
                part = "replace"
            elif marker == REPLACE:
                end = j
                break
            else:
                (search if part == "search" else replace).append(lines[j] + "\n")
        if end is None or part != "replace":
            why = f"no {DIVIDER} line" if part == "search" else f"no {REPLACE} line"
            problems.append(EditProblem(block, path, f"{why} (the block opened at line {start + 1})"))
            i = start + 1 if end is None else end + 1
            continue
        if path is None:
            problems.append(EditProblem(block, None, "no `### path` line names the file to edit"))
        else:
            edits.append(Edit(path, "".join(search), "".join(replace), block, start + 1))
        i = end + 1
    return edits, problems


def apply_edits(files: dict[str, str], edits: list[Edit]) -> tuple[dict[str, str], list[EditProblem]]:
    """The new content of every file an edit changed, and the edits not applied (see the module)."""
    current = dict(files)
    problems: list[EditProblem] = []
    for edit in edits:
        if edit.path not in current:
            shown = ", ".join(sorted(files)) or "none"
            problems.append(EditProblem(edit.block, edit.path, f"not a file of the prompt (shown: {shown})"))
            continue
        if not edit.search.strip():
            problems.append(EditProblem(edit.block, edit.path, "the SEARCH part is empty"))
            continue
        content = current[edit.path]
        padded = content if content.endswith("\n") or not content else content + "\n"
        starts = _line_starts_of(padded, edit.search)
        if len(starts) != 1:
            why = "does not occur" if not starts else f"occurs {len(starts)} times"
            first = edit.search.splitlines()[0].strip()
            problems.append(
                EditProblem(edit.block, edit.path, f"the SEARCH text {why} (its first line: {first!r})")
            )
            continue
        at = starts[0]
        new = padded[:at] + edit.replace + padded[at + len(edit.search) :]
        if padded is not content and new.endswith("\n"):
            new = new[:-1]  # the file had no final newline: keep it so
        current[edit.path] = new
    return {p: c for p, c in current.items() if c != files.get(p)}, problems


def unified_diff(originals: dict[str, str], edited: dict[str, str]) -> str:
    """The patch from `originals` to `edited` (files in `edited` only, sorted); '' when nothing changed."""
    parts = []
    for path in sorted(edited):
        before, after = originals[path], edited[path]
        if before == after:
            continue
        hunks = difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
        body = "".join(line if line.endswith("\n") else line + "\n" + NO_NEWLINE for line in hunks)
        parts.append(f"diff --git a/{path} b/{path}\n{body}")
    return "".join(parts)


def normalise_path(path: str) -> str:
    """A path as written, less surrounding backticks or quotes and a leading `./`, `/testbed/`."""
    path = path.strip().strip("`'\"")
    for prefix in ("/testbed/", "./"):
        path = path.removeprefix(prefix)
    return path


def _line_starts_of(content: str, search: str) -> list[int]:
    """Where `search` (whole lines) starts in `content`, at line starts only."""
    starts, at = [], content.find(search)
    while at != -1:
        if at == 0 or content[at - 1] == "\n":
            starts.append(at)
        at = content.find(search, at + 1)
    return starts


def _is_marker(line: str) -> bool:
    return line.rstrip() in (SEARCH, DIVIDER, REPLACE)


def edits_from_patch(patch: str, files: dict[str, str]) -> str:
    """The SEARCH/REPLACE blocks (in fences, one per hunk) that make `patch` from `files`: a gold patch
    written in the format a model answers in. Each SEARCH is the hunk's old lines; when those occur
    more than once in the file, the preceding lines are added until they occur once."""
    blocks = []
    for path, old, new in _hunks(patch):
        content = files[path]
        padded = content if content.endswith("\n") else content + "\n"
        before = padded[: padded.find(old)].splitlines(keepends=True) if old in padded else []
        while len(_line_starts_of(padded, old)) > 1 and before:
            extra = before.pop()
            old, new = extra + old, extra + new
        blocks.append(f"```python\n### {path}\n{SEARCH}\n{old}{DIVIDER}\n{new}{REPLACE}\n```\n")
    return "\n".join(blocks)


def _hunks(patch: str) -> list[tuple[str, str, str]]:
    """(path, old lines, new lines) of each hunk of a unified diff, read by the hunk headers' counts."""
    hunks = []
    lines = patch.splitlines(keepends=True)
    path, i = "", 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("+++ "):
            path = normalise_path(line[4:].strip().removeprefix("b/"))
        elif header := _HUNK.match(line):
            old_left, new_left = int(header.group(1) or 1), int(header.group(2) or 1)
            old, new = [], []
            while (old_left or new_left) and i < len(lines):
                line, i = lines[i], i + 1
                kind, text = line[:1], line[1:]
                if kind in (" ", "-"):
                    old.append(text)
                    old_left -= 1
                if kind in (" ", "+"):
                    new.append(text)
                    new_left -= 1
            hunks.append((path, "".join(old), "".join(new)))
    return hunks
