"""Checkpoints that survive a kill, and exact resumption.

A checkpoint is a folder: the model and tokenizer as `save_pretrained` writes them (a LoRA policy's:
the adapter, which names its base; so any checkpoint loads with `load_model_and_tokenizer(folder)`,
serves as `model.init_from` and becomes a plain model with `python -m srl_agent.export`), plus
`trainer_state.pt` (optimizer, LR scheduler, RNG states, step, data position, best validation reward)
and `state.json` (the same facts a human wants to read). It is written into a temporary folder next
to its final place and renamed into place; the previous one is moved aside first and deleted last, so
a kill at any moment leaves either the old or the new checkpoint complete (`find_checkpoint` picks up
the aside copy when the kill fell between the two renames).

A training run saves `checkpoints/last` (`save_last`: everything to go on exactly) and
`checkpoints/best` (`save_model`: the weights and what they scored), and goes on from the last one
(`restore`). On several ranks every rank calls these together (gathering a sharded model's weights
and optimizer state is a collective); rank 0 writes.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import yaml

from srl_agent import lora
from srl_agent.distributed import (
    World,
    full_model_state,
    full_optimizer_state,
    load_optimizer_state,
)
from trajectories.config import ConfigError, dump_config

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from srl_agent.config import TrainConfig
    from srl_agent.data import DataStream

STATE_FILE = "trainer_state.pt"

# Keys that may change between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = {
    "trainer.steps",
    "trainer.progress",
    "trainer.tensorboard",
    "trainer.wandb",
    "trainer.gradient_checkpointing",  # memory for compute; the update is the same
    "generation.share_prefill",  # the same completions, faster
    "environment.pool_size",  # how many episodes run at once, not which
}


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


class Resumable(Protocol):
    """What a checkpoint saves of a training run and restores (`train.Run` is one): `state` holds the
    step and the best validation reward so far (`best_val`, `best_step`)."""

    run_dir: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    optimizer: Optimizer
    scheduler: LRScheduler
    stream: DataStream
    state: dict[str, Any]
    world: World


def save_last(run: Resumable) -> None:
    """checkpoints/last: model, optimizer, scheduler, data position, RNG states and run state."""
    trainer_state = {
        "optimizer": full_optimizer_state(run.model, run.optimizer),
        "scheduler": run.scheduler.state_dict(),
        "data": run.stream.state(),
        "rng": rng_state(),
        "rng_ranks": run.world.gather(rng_state()),
        "state": dict(run.state),
    }
    info = {"step": run.state["step"], **run.stream.state(), "best_val": run.state["best_val"]}
    if run.world.size > 1:
        info["world_size"] = run.world.size
    save_model(run, run.run_dir / "checkpoints" / "last", trainer_state, info)


def save_model(
    run: Resumable, folder: Path, trainer_state: dict[str, Any] | None, info: dict[str, Any]
) -> None:
    """A checkpoint of the whole model (gathered from the ranks of a sharded one), written by rank 0;
    every rank calls it (the gathering is a collective)."""
    weights = full_model_state(run.model)
    if run.world.main:
        save_checkpoint(folder, run.model, run.tokenizer, trainer_state, info, weights)
    run.world.barrier()  # no rank reads the folder before it is complete


def restore(run: Resumable, last: Path) -> None:
    """Continue exactly where checkpoints/last stopped (the model weights were loaded from it already)."""
    saved = load_trainer_state(last)
    load_optimizer_state(run.model, run.optimizer, saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.stream.restore(saved["data"])
    ranks = saved.get("rng_ranks", [saved["rng"]])
    if len(ranks) == run.world.size:  # the same ranks: each goes on with its own random numbers
        set_rng_state(ranks[run.world.rank])
    else:  # another world size: rank 0's state, each rank's sampling seeded apart
        set_rng_state(saved["rng"])
        if run.world.rank:
            torch.manual_seed(int(torch.randint(2**31, ())) + run.world.rank)
    run.state = saved["state"]
    print(f"resuming from {last} at step {run.state['step']}")


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Create the run folder and save the resolved config; refuse to resume a run with another config."""
    run_dir = Path(cfg.run_dir.format(task=cfg.task, stage=cfg.stage))
    saved = run_dir / "config.yaml"
    has_checkpoint = (run_dir / "checkpoints" / "last").exists() or (
        run_dir / "checkpoints" / "last.old"
    ).exists()
    if has_checkpoint and not cfg.trainer.resume:
        shutil.rmtree(run_dir / "checkpoints")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    elif has_checkpoint and saved.is_file():
        before = _flatten(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
        now = _flatten(cfg.model_dump(mode="json"))
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        changed = [k for k in changed if k not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(
                f"{run_dir} holds a run with a different config ({', '.join(changed)}); "
                "use another run_dir, or trainer.resume=false to start it over"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(dump_config(cfg), encoding="utf-8")
    return run_dir


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
