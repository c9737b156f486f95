"""Fixtures for trainer tests: step examples written as a prebuilt data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from srl_helpers import math_example

from trajectories.record import write_jsonl


@pytest.fixture
def simple_data(tmp_path: Path) -> Path:
    """A prebuilt data folder whose every target is the same short step: an easy thing to learn."""
    folder = tmp_path / "data"
    write_jsonl([math_example(f"g{i}", i % 2, "x=5") for i in range(8)], folder / "train.jsonl")
    write_jsonl([math_example("v0", 0, "x=5"), math_example("v1", 1, "x=5")], folder / "validation.jsonl")
    return folder
