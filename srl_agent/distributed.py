"""Training on several processes: `torchrun` launches them, FSDP2 shards the model, rollouts are data-parallel.

    torchrun --nproc-per-node 8 -m srl_agent.train --task swe --config configs/paper_swe_qwen2.5-coder-7b.yaml

`World` is this process's place among the others (rank, size) and the few collectives the trainer
needs; one process (no torchrun) is a `World()` of size 1 whose collectives return their input, so the
single-process trainer runs the same code. The layout of one step on W ranks:
- every rank holds the same data stream; each sampling round takes the missing prompts from it and
  rank r keeps every W-th one (`shard`), with all G rollouts of a prompt on its rank, so advantages
  are computed over whole groups; dynamic sampling counts the prompts kept on all ranks (`sum`), so
  every rank runs the same rounds and the batch is full across them;
- the model's parameters, gradients and AdamW states are sharded (FSDP2 `fully_shard`: each decoder
  layer, then the root). For generation each rank gathers the full weights once (`gathered`) and
  samples on its own, with no collective per token (ranks generate different lengths);
- the loss is normalised by the token (or sequence) count of all ranks and the gradients are summed
  over ranks, so the update equals the single-process one on the same rollouts; every rank runs the
  same number of micro-batches (a rank with fewer adds empty ones), since each forward all-gathers;
- rank 0 writes the run folder, logs and checkpoints. A checkpoint holds the full model (as
  `save_pretrained` writes it) and the full optimizer state keyed by parameter name, so a run resumes
  on any number of ranks.

The heavy `torch.distributed` imports are here and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's rank among `size` training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """The rank that writes the run folder, logs and checkpoints."""
        return self.rank == 0

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share of `items`: every `size`-th one from position `rank`."""
        return items[self.rank :: self.size]

    def sum(self, value: float) -> float:
        """`value` summed over the ranks."""
        return self._reduce(value, "SUM")

    def max(self, value: float) -> float:
        """The largest `value` of the ranks."""
        return self._reduce(value, "MAX")

    def _reduce(self, value: float, op: str) -> float:
        if self.size == 1:
            return value
        import torch.distributed as dist

        out = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(out, op=getattr(dist.ReduceOp, op))
        return float(out.item())

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


ONE_PROCESS = World()
"""The world of a run not launched by torchrun."""


def init_world() -> World:
    """The `World` torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), with its process
    group started (NCCL on GPUs, gloo on the CPU); `World()` when this process was not launched so."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return ONE_PROCESS
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(rank, size)


def shard_model(model: Any, world: World) -> Any:
    """Shard `model` over the ranks with FSDP2: each decoder layer, then the root (the embeddings and
    head). One process: `model` as it is. Parameter names stay those of the plain model."""
    if world.size == 1:
        return model
    return fsdp2_shard(model)


def fsdp2_shard(model: Any) -> Any:
    """`model` sharded with FSDP2 over the default process group, whatever its size: `fully_shard` on
    each decoder layer, then on the root. `shard_model` calls it on several ranks; on one rank it is
    what bench/gpu_check.py runs to check FSDP2 over NCCL on a single GPU."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def decoder_layers(model: Any) -> list[Any]:
    """The repeated transformer blocks of a causal LM (`model.model.layers` in Llama/Qwen/Mistral)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(
            f"{type(model).__name__}: no `model.layers` to shard; FSDP2 needs the decoder layers"
        )
    return list(layers)


def _fsdp_modules(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: Any) -> Iterator[None]:
    """The full weights on this rank for the block (a collective: every rank enters it together).
    Inside it, forward passes run no collective, so each rank generates on its own, for as many
    tokens as its completions need; on exit the weights are sharded again."""
    modules = _fsdp_modules(model)
    if not modules:
        yield
        return
    for m in modules:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True)


def full_norm(norm: Any) -> float:
    """A gradient norm as a float (a sharded model's `clip_grad_norm_` returns a DTensor)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def full_model_state(model: Any) -> dict[str, Any] | None:
    """The whole model's state dict on the CPU, on rank 0 (None elsewhere); a collective."""
    if not _fsdp_modules(model):
        return None  # save_pretrained reads the plain model itself
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """The optimizer's whole state keyed by parameter name (so it loads on any number of ranks); on
    rank 0 (empty elsewhere for a sharded model). A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    offload = bool(_fsdp_modules(model))
    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=offload)
    )


def load_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Load a state `full_optimizer_state` wrote (on any number of ranks), or an optimizer's own
    `state_dict()` (checkpoints written before names were used, single process only)."""
    groups = state.get("param_groups", [])
    by_index = all(isinstance(i, int) for g in groups for i in g.get("params", []))
    if by_index and not _fsdp_modules(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
    )
