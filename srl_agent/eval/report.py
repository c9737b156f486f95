"""What the evaluations share: the model as the user named it and the output folders named after it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

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
