"""What the evaluations share: the model as the user named it, the output folders named after it, and
the progress bar (`Bar`) they show while they run."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from srl_agent.config import EvalConfig


def model_string(cfg: EvalConfig) -> str:
    """The model as the user named it (`--model`, or `model.init_from` when set)."""
    return cfg.model.init_from or cfg.model.name


def model_folder(pattern: str, cfg: EvalConfig) -> Path:
    """An output folder `pattern` with `{model}` filled in: the model string made file-safe, its last
    80 characters (what names a checkpoint's run is at the end of its path)."""
    return Path(pattern.format(model=file_name(model_string(cfg).strip("/"))[-80:]))


def file_name(text: str) -> str:
    """`text` with every run of characters unsafe in a file name replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class Bar:
    """A rich progress bar on stderr for an evaluation, or nothing when disabled (the caller then prints
    a plain line per unit of work, which a log file keeps). `unit` names what is counted; each task of
    the bar is one row (`add`), its description the running text (`advance`)."""

    def __init__(self, enabled: bool, label: str, unit: str = "") -> None:
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                                 TimeElapsedColumn(), console=Console(stderr=True))  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def add(self, description: str, total: int) -> Any:
        """A new row of `total` units; its handle for `advance` (None when disabled)."""
        return self._bar.add_task(description, total=total) if self._bar is not None else None

    def advance(self, task: Any, n: int = 1, description: str | None = None) -> None:
        if self._bar is not None:
            self._bar.update(task, advance=n, **({"description": description} if description else {}))

    def print(self, line: str) -> None:
        """`line` above the bar (or on stderr when disabled)."""
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
