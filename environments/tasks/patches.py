"""Reversing a unified diff as git writes it, without a repository: `reverse_patch(patch)`.

A SWE-smith row's `patch` introduces its bug; the gold fix is that patch reversed (SWE-smith applies it
with `git apply --reverse`). A task's `gold_patch` must be a diff of its own, so it is written here:
file headers (`diff --git`, `---`/`+++`, `index`, modes, new/deleted file, renames) and hunk ranges
swap sides, `-` and `+` lines swap signs, and in each run of changed lines the removed ones come first
again, as git writes them. `\\ No newline at end of file` stays with its line. Binary patches are
refused (`PatchError`): their reverse needs the repository's blobs.
"""

from __future__ import annotations

import re

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_DIFF_GIT = re.compile(r"^diff --git a/(.*) b/(.*)$")
_INDEX = re.compile(r"^index ([0-9a-f]+)\.\.([0-9a-f]+)(.*)$")
# Extended header lines that come in pairs (old side, new side): reversed by swapping their values.
_PAIRS = (("old mode ", "new mode "), ("rename from ", "rename to "), ("copy from ", "copy to "))
_SWAPPED = {"new file mode ": "deleted file mode ", "deleted file mode ": "new file mode "}


class PatchError(ValueError):
    """The patch cannot be reversed here; says why."""


def reverse_patch(patch: str) -> str:
    """`patch` reversed: applying it undoes `patch`. Raises PatchError for a binary or malformed patch."""
    lines = patch.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("GIT binary patch", "Binary files ")):
            raise PatchError("a binary patch cannot be reversed without the repository")
        pair = next((p for p in _PAIRS if line.startswith(p[0])), None)
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = line[4:], lines[i + 1][4:]
            out += ["--- " + _side(new, "a/"), "+++ " + _side(old, "b/")]
            i += 2
        elif pair and i + 1 < len(lines) and lines[i + 1].startswith(pair[1]):
            out += [pair[0] + lines[i + 1][len(pair[1]) :], pair[1] + line[len(pair[0]) :]]
            i += 2
        elif match := _HUNK.match(line):
            i = _reverse_hunk(lines, i, match, out)
        else:
            out.append(_header(line))
            i += 1
    return "\n".join(out)


def _header(line: str) -> str:
    if match := _DIFF_GIT.match(line):
        return f"diff --git a/{match.group(2)} b/{match.group(1)}"
    if match := _INDEX.match(line):
        return f"index {match.group(2)}..{match.group(1)}{match.group(3)}"
    for prefix, swapped in _SWAPPED.items():
        if line.startswith(prefix):
            return swapped + line[len(prefix) :]
    return line


def _side(path: str, prefix: str) -> str:
    """A `---`/`+++` path moved to the other side: `a/x` <-> `b/x`; /dev/null stays."""
    if path.startswith(("a/", "b/")):
        return prefix + path[2:]
    return path


def _reverse_hunk(lines: list[str], start: int, match: re.Match[str], out: list[str]) -> int:
    """Appends the reversed hunk starting at `lines[start]` to `out`; the index after it."""
    old_start, old_count, new_start, new_count, rest = match.groups()
    old_left = 1 if old_count is None else int(old_count)
    new_left = 1 if new_count is None else int(new_count)
    out.append(f"@@ -{new_start}{_count(new_count)} +{old_start}{_count(old_count)} @@{rest}")
    removed: list[str] = []  # the reversed hunk's `-` lines of the current run (the original's `+`)
    added: list[str] = []
    i = start + 1
    last: list[str] | None = None  # where the last line went, for a following "\ No newline" marker
    while i < len(lines) and (old_left > 0 or new_left > 0 or lines[i].startswith("\\")):
        line = lines[i]
        if line.startswith("\\"):
            (last if last is not None else out).append(line)
        elif line.startswith("+"):
            removed.append("-" + line[1:])
            last, new_left = removed, new_left - 1
        elif line.startswith("-"):
            added.append("+" + line[1:])
            last, old_left = added, old_left - 1
        elif line.startswith(" ") or line == "":
            out += removed + added
            removed, added = [], []
            out.append(line if line else " ")
            last, old_left, new_left = None, old_left - 1, new_left - 1
        else:
            raise PatchError(f"line {i + 1}: {line[:60]!r} inside a hunk (its counts do not match its lines)")
        i += 1
    if old_left > 0 or new_left > 0:
        raise PatchError(f"line {start + 1}: the hunk ends before its counts say")
    out += removed + added
    return i


def _count(count: str | None) -> str:
    return "" if count is None else f",{count}"
