"""Checkpoints that survive a kill, and exact resumption.

A checkpoint is a folder: the model and tokenizer as `save_pretrained` writes them (a LoRA policy's:
the adapter, which names its base; so any checkpoint loads with `load_model_and_tokenizer(folder)`,
serves as `model.init_from` and becomes a plain model with `python -m srl_agent.export`), plus
`trainer_state.pt` (optimizer, LR scheduler, RNG states, step, data position, best validation reward)
and `state.json` (the same facts a human wants to read). It is written into a temporary folder next
to its final place and renamed into place; the previous one is moved aside first and deleted last, so
a kill at any moment leaves either the old or the new checkpoint complete (`find_checkpoint` picks up
the aside copy when the kill fell between the two renames).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from srl_agent import lora

STATE_FILE = "trainer_state.pt"


def save_checkpoint(
    folder: Path,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any] | None,
    info: dict[str, Any],
    weights: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint to `folder` (model + tokenizer, optional trainer state, info JSON);
    `weights`: the model's full state dict when the model itself holds only a shard of it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the per-shard bar is noise in a training log
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}-*"):  # temporary folders of a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        if weights is None:
            lora.save(model, tmp)
        else:  # a sharded model's full state dict, gathered by the caller
            model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE_FILE)
        (tmp / "state.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        aside = folder.with_name(folder.name + ".old")
        if folder.exists():  # complete (only a finished temp folder is ever renamed to it) ...
            if aside.exists():
                shutil.rmtree(aside)  # ... so an older aside copy is redundant
            folder.rename(aside)
        tmp.rename(folder)
        shutil.rmtree(aside, ignore_errors=True)  # only now: until here it may be the only complete copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def find_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint at `folder`, or the copy moved aside if a kill fell between renames."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_trainer_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
