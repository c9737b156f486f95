"""Training on several processes (`srl_agent.distributed`): 2 gloo ranks under torchrun on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from srl_helpers import TINY, math_example

from srl_agent import update
from srl_agent.config import OptimConfig
from srl_agent.distributed import ONE_PROCESS, World, load_optimizer_state
from srl_agent.models import load_model_and_tokenizer
from srl_agent.runlog import read_metrics
from trajectories.record import write_jsonl

REPO = Path(__file__).resolve().parents[2]


def torchrun(*args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node ranks ARGS` (a free port: tests may run side by side)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    proc = subprocess.run(
        [*launch, *args], cwd=REPO, env=env, timeout=600, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_one_process_world_passes_values_through():
    assert ONE_PROCESS.main and ONE_PROCESS.size == 1
    assert ONE_PROCESS.shard([1, 2, 3]) == [1, 2, 3]
    assert ONE_PROCESS.sum(2.5) == 2.5 and ONE_PROCESS.max(3) == 3 and ONE_PROCESS.gather("x") == ["x"]
    # rank r of W takes every W-th item from position r: together the ranks cover each item once
    shards = [World(r, 3).shard(list(range(8))) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert not World(1, 3).main


@pytest.mark.slow
@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean"])
def test_two_ranks_make_the_one_process_update(tmp_path, loss_agg):
    """The same six rollouts, split 5 + 1 over two ranks of a sharded model, give the weights one
    process gets from all six (loss normalised over all ranks, gradients summed, the short rank padded
    with empty micro-batches)."""
    out = tmp_path / "out.json"
    torchrun(str(REPO / "tests" / "srl_agent" / "distributed_update_check.py"), str(out), loss_agg)
    result = json.loads(out.read_text())
    assert result["moved"] > 1e-3  # the update did something ...
    assert result["max_diff"] < 1e-6  # ... and the same thing on two ranks
    for key in ("loss", "grad_norm", "tokens", "sequences"):
        assert result["sharded"][key] == pytest.approx(result["one_process"][key], rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_two_rank_run_checkpoints_and_resumes_on_one_rank(tmp_path):
    data = tmp_path / "data"
    write_jsonl([math_example(f"g{i}", i % 2, "x=5") for i in range(8)], data / "train.jsonl")
    write_jsonl([math_example("v0", 0, "x=5"), math_example("v1", 1, "x=5")], data / "validation.jsonl")
    run_dir = tmp_path / "run"
    args = [
        "-m", "srl_agent.train", "--task", "math", *TINY, f"data.source={data}", f"run_dir={run_dir}",
        "trainer.batch_size=3", "grpo.group_size=4", "generation.max_new_tokens=12", "optim.lr=5e-3",
        "trainer.val_every=1", "grpo.filter=none", "trainer.save_every=1",
    ]  # fmt: skip
    proc = torchrun(*args, "trainer.steps=2")
    assert proc.stdout.count("data: 8 train") == 1  # one rank reports
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["kept_prompts"] == 3 and r["sampled_prompts"] == 3 for r in rows[1:])  # all ranks' prompts
    assert all(r["sequences"] == 12 for r in rows[1:])  # 3 prompts x G=4 over both ranks
    last = run_dir / "checkpoints" / "last"
    assert json.loads((last / "state.json").read_text())["world_size"] == 2
    saved = torch.load(last / "trainer_state.pt", weights_only=False)
    assert len(saved["rng_ranks"]) == 2

    # the gathered optimizer state loads into one process's optimizer, by parameter name
    model, _ = load_model_and_tokenizer(str(last), dtype="float32", device="cpu", seed=0)
    optimizer, _ = update.make_optimizer(model, OptimConfig(), 3)  # as the trainer makes it
    load_optimizer_state(model, optimizer, saved["optimizer"])
    name, param = next(iter(model.named_parameters()))
    assert torch.equal(optimizer.state[param]["exp_avg_sq"], saved["optimizer"]["state"][name]["exp_avg_sq"])

    subprocess.run(
        [sys.executable, *args, "trainer.steps=3"], cwd=REPO, check=True, timeout=600, capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [0, 1, 2, 3]
    state = json.loads((last / "state.json").read_text())
    assert state["step"] == 3 and "world_size" not in state


@pytest.mark.slow
def test_two_rank_sft_matches_one_process(tmp_path):
    """SFT has no sampling: two ranks and one process train on the same examples, and the weights
    after two steps agree."""
    data = tmp_path / "data"
    write_jsonl([math_example(f"g{i}", i % 2, f"x={i}") for i in range(8)], data / "train.jsonl")
    common = [
        "-m", "srl_agent.train", "--task", "math", "--stage", "sft", *TINY, f"data.source={data}",
        "trainer.batch_size=3", "trainer.micro_batch_size=1", "optim.lr=1e-2", "trainer.steps=2",
        "trainer.val_every=0",
    ]  # fmt: skip
    torchrun(*common, f"run_dir={tmp_path / 'two'}")
    subprocess.run(
        [sys.executable, *common, f"run_dir={tmp_path / 'one'}"], cwd=REPO, check=True, timeout=600,
        capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5)
    a, _ = load_model_and_tokenizer(str(tmp_path / "two" / "checkpoints" / "last"), dtype="float32", seed=0)
    b, _ = load_model_and_tokenizer(str(tmp_path / "one" / "checkpoints" / "last"), dtype="float32", seed=0)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    init, _ = load_model_and_tokenizer("tiny-random", dtype="float32", seed=0)
    moved = any(not torch.equal(p, q) for p, q in zip(a.parameters(), init.parameters(), strict=True))
    assert moved


class _SecondOfTwo(World):
    """Rank 1 of 2 without a process group: rank 0 is taken to keep two prompts each round."""

    def sum(self, value: float) -> float:
        return value + 2


def test_a_rank_left_without_prompts_in_a_refill_round_goes_on():
    """Dynamic sampling on rank 1 of 2 with a batch of 3: rank 0 keeps 2, rank 1 its 1 prompt of
    round 1 is filtered out, so round 2 draws 1 prompt, which is rank 0's. Rank 1 samples nothing
    that round (no generate call, nothing to judge) and runs the rounds with the others."""
    from srl_agent.config import GRPOConfig
    from srl_agent.data import DataStream
    from srl_agent.protocols import Completion, Scored
    from srl_agent.rollouts import Group, dynamic_sampling

    examples = [math_example(f"g{i}", 0, "x") for i in range(8)]
    calls: list[int] = []

    def sample(items):
        calls.append(len(items))
        flat = [Scored(0.5, None), Scored(0.5, None)]  # no spread: the std filter drops the group
        return [Group(ex, [1], [Completion([1], "", "stop")] * 2, flat) for ex in items]

    cfg = GRPOConfig(filter="std", max_sampling_rounds=3)
    kept, sampled, rounds = dynamic_sampling(DataStream(examples, 0), 3, sample, cfg, _SecondOfTwo(1, 2))
    assert rounds == 3 and calls == [1]  # rounds 2 and 3 gave rank 1 no prompt
    assert kept == [] and len(sampled) == 1
