"""The two ways reading expert data fails.

- `BadRecord`: one record (a line, a `.traj` file, a dataset row) cannot become a trajectory or a math
  problem. Readers raise it with the reason; `sources.SourceReader` catches it, adds the position and
  lists the record as skipped, and goes on with the rest of the source.
- `SourceError`: the source as a whole cannot be read (missing path, unreadable file, a glob that
  matches nothing, a dataset that does not load). It names the file or the source and stops the read.
"""

from __future__ import annotations


class BadRecord(ValueError):
    """One record is malformed or unusable; the message is the reason it was skipped."""


class SourceError(OSError):
    """A whole source cannot be read; the message names the file or dataset."""
