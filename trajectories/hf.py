"""Rows of a Hugging Face dataset (a hub id, a local dataset folder, or local Parquet files).

The one module that imports `datasets`, and only when a source needs it, so `import trajectories`
stays light. Streaming (the default) reads rows as they come, so a large dataset never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from trajectories.errors import SourceError


def iter_rows(
    name: str,
    *,
    split: str = "train",
    config: str | None = None,
    streaming: bool = True,
    data_files: str | list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the rows of `name` (hub id or path; `"parquet"`/`"json"` with `data_files` for local files).

    Raises SourceError naming the dataset when it cannot be loaded or read.
    """
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise SourceError(f"reading {name!r} needs the 'datasets' package ({e})") from None
    label = f"{name} ({data_files})" if data_files else name
    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming, data_files=data_files)
        for row in dataset:
            yield dict(row)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "cannot read this source"
        raise SourceError(f"cannot read dataset {label} split {split!r}: {type(e).__name__}: {e}") from None
