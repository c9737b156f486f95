"""Run by tests/srl_agent/test_distributed.py under torchrun (2 ranks, gloo): one policy update of a
sharded tiny model on each rank's share of fixed rollouts, against the same update on one process.

    python -m torch.distributed.run --nproc-per-node 2 tests/srl_agent/distributed_update_check.py OUT.json

Rank 0 has five sequences and rank 1 one, so rank 1 also runs the empty micro-batches that keep the
ranks' forward passes paired. Rank 0 then repeats the update on all six sequences with a plain model
and writes the largest weight difference, the weights' movement and both updates' metrics to OUT.json.
"""

from __future__ import annotations

import json
import sys

import torch

from srl_agent import update as trainer
from srl_agent.config import TrainConfig
from srl_agent.distributed import ONE_PROCESS, full_model_state, init_world, shard_model
from srl_agent.models import load_model_and_tokenizer
from srl_agent.tasks import resolve


def sequences() -> list[trainer.Sequence]:
    prompt_a, prompt_b = [1, 40, 41, 42, 43], [1, 50, 51]
    rows = [
        (prompt_a, [60, 61, 62], 1.0),
        (prompt_a, [63, 64], -1.0),
        (prompt_b, [70, 71, 72, 73], 0.5),
        (prompt_b, [74], -0.5),
        (prompt_a, [65, 66, 67, 68, 69], 0.8),
        (prompt_b, [75, 76], -0.8),
    ]
    return [trainer.Sequence(p, c, a) for p, c, a in rows]


def update(model, cfg, seqs, world):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
    return trainer.policy_update(cfg, model, None, optimizer, seqs, world)


def main(out: str) -> None:
    world = init_world()
    assert world.size == 2, "run under torchrun with 2 processes"
    cfg = resolve(TrainConfig(task="math"))
    cfg.optim.lr = 0.5
    cfg.trainer.micro_batch_size = 2
    cfg.grpo.loss_agg = sys.argv[2] if len(sys.argv) > 2 else "token_mean"
    seqs = sequences()
    model, _ = load_model_and_tokenizer("tiny-random", dtype="float32", device="cpu", seed=0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model = shard_model(model, world)
    sharded = update(model, cfg, seqs[:5] if world.rank == 0 else seqs[5:], world)
    weights = full_model_state(model)
    if world.main:
        plain, _ = load_model_and_tokenizer("tiny-random", dtype="float32", device="cpu", seed=0)
        one = update(plain, cfg, seqs, ONE_PROCESS)
        expected = plain.state_dict()
        result = {
            "max_diff": max((weights[k] - expected[k]).abs().max().item() for k in expected),
            "moved": max((expected[k] - initial[k]).abs().max().item() for k in expected),
            "sharded": sharded,
            "one_process": one,
        }
        with open(out, "w") as f:
            json.dump(result, f)
    world.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
