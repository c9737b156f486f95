"""A resumable JSONL ledger: the per-key results of a run that may be killed and rerun.

    ledger = Ledger(out / "results.jsonl", Entry, key="instance_id")   # Entry: a dataclass
    ledger.get("django__django-16255")   # the latest entry for that key, or None
    ledger.write(Entry(...))             # appended and flushed at once

One line per entry, appended and flushed as it is written, so a kill loses nothing already written;
reading it back, the last line per key wins. A line a kill cut short (not JSON, or not an entry of
this type) is skipped with a warning naming the file and line: that key is simply done again. Safe
to write from several threads. Every run that records per-instance results keeps one (SWE
evaluation's `results.jsonl` and `predictions.jsonl`, check-experts' `results.jsonl`).

It lives in `trajectories`, the package every other one may import, so that `environments` and
`srl_agent` share it without breaking the one-way dependency rule.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class Ledger(Generic[E]):
    """The latest entry per key of a JSONL file of `entry_type` dataclasses (see the module)."""

    def __init__(self, path: str | Path, entry_type: type[E], key: str) -> None:
        self.path, self.entry_type, self.key = Path(path), entry_type, key
        self._lock = threading.Lock()
        self._latest: dict[str, E] = {}
        if self.path.is_file():
            for lineno, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    entry = entry_type(**json.loads(line))
                except (ValueError, TypeError):  # a line cut by a kill: that key is done again
                    log.warning("%s:%d: not a complete ledger entry, ignored", self.path, lineno)
                    continue
                self._latest[self._key(entry)] = entry

    def get(self, key: str) -> E | None:
        return self._latest.get(key)

    def latest(self) -> dict[str, E]:
        """{key: its latest entry}, in the order the keys first appeared."""
        return dict(self._latest)

    def write(self, entry: E) -> None:
        """Append `entry` (it becomes its key's latest) and flush it."""
        row: dict[str, Any] = asdict(entry)  # type: ignore[call-overload]
        with self._lock:
            self._latest[self._key(entry)] = entry
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()

    def note(self, entry: E) -> None:
        """`write`, unless `entry` is already its key's latest (verdicts a rerun decides again at no
        cost do not pile up)."""
        if self._latest.get(self._key(entry)) != entry:
            self.write(entry)

    def _key(self, entry: E) -> str:
        return str(getattr(entry, self.key))


def check_run_folder(out: Path, wanted: dict[str, Any], holds_results: bool, option: str) -> None:
    """Record in `out/run.json` what a resumable run is made with, or, when the folder holds results
    of a run made with other settings, a ConfigError naming each with both values: that folder's
    results are not this run's, and going on there would mix the two. `option` names the setting
    that chose the folder (`swe.out`, `--out`). A folder without results (a run that stopped before
    its first result) takes the new settings."""
    from trajectories.config import ConfigError

    path = out / "run.json"
    if path.is_file() and holds_results:
        had = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(key for key in had.keys() | wanted.keys() if had.get(key) != wanted.get(key))
        if differ:
            what = "; ".join(f"{key}: {had.get(key)!r} there, {wanted.get(key)!r} now" for key in differ)
            raise ConfigError(
                f"{option}: {out} holds a run made with other settings ({what}); choose another output folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
