"""LoRA (`model.lora`): only the adapters train, generation samples the adapted policy, the vLLM engine
gets the merged weights under the base's names, checkpoints hold the adapter and resume exactly, and a
checkpoint merges into a plain model that computes what the adapted one does."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from srl_helpers import TINY

from srl_agent import lora, train, update
from srl_agent.config import LoRAConfig, ModelConfig, TrainConfig
from srl_agent.generation.hf import HFGenerator
from srl_agent.models import load_model_and_tokenizer, load_policy
from srl_agent.runlog import read_metrics
from srl_agent.tasks import resolve
from trajectories.config import ConfigError, resolve_config

IDS = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 50, 51, 52, 53, 54]])
LORA_CFG = ModelConfig(name="tiny-random", lora=LoRAConfig(enabled=True, r=4, alpha=8))


def adapted_tiny(seed: int = 0):
    """The tiny model with adapters whose B is random (fresh ones are zero: the base exactly)."""
    model, tokenizer = load_model_and_tokenizer("tiny-random", seed=seed)
    model = lora.add_adapter(model, LoRAConfig(r=4, alpha=8), "tiny-random")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, tokenizer


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_bad_lora_key_or_value_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"unknown config key model\.lora\.rank"):
        resolve_config(TrainConfig, None, ["model.lora.rank=8"])
    with pytest.raises(ConfigError, match=r"bad value for model\.lora\.r"):
        resolve_config(TrainConfig, None, ["model.lora.r=0"])
    cfg = resolve_config(TrainConfig, None, ["model.lora.enabled=true", "model.lora.target_modules=[q_proj]"])
    assert cfg.model.lora.enabled and cfg.model.lora.target_modules == ["q_proj"]
    assert not TrainConfig().model.lora.enabled  # off unless asked for


def test_merged_weights_are_peft_merge_under_the_base_names_and_leave_the_policy_alone():
    from srl_agent.generation.vllm_engine import (
        _checkpoint_weights,  # what the engine is given (no vllm import)
    )

    model, _ = adapted_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handed = dict(_checkpoint_weights(model))
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    plain, _ = load_model_and_tokenizer("tiny-random")
    assert list(handed) == list(merged) == list(plain.state_dict())  # the base model's own names
    assert all(torch.equal(handed[k], merged[k]) for k in merged)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(handed[q], plain.state_dict()[q])  # the update is in it
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    # a plain policy is handed its own state dict
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in lora.merged_weights(plain))


def test_the_hf_generator_samples_the_adapted_policy():
    model, tokenizer = adapted_tiny()
    merged = copy.deepcopy(model).merge_and_unload()
    base, _ = load_model_and_tokenizer("tiny-random")
    prompts = [[1, 40, 41, 42], [1, 50]]

    def greedy_copies(m):  # n = 3 copies with top_k = 1: the shared-prefill path, argmax tokens
        torch.manual_seed(0)
        out = HFGenerator(m, tokenizer, top_k=1).generate(prompts, 3, 12, 1.0)
        return [[c.token_ids for c in group] for group in out]

    adapted = greedy_copies(model)
    assert adapted == greedy_copies(merged)
    assert adapted != greedy_copies(base)  # the adapters are active in what is sampled


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_only_the_adapters_are_optimized_and_change(dtype):
    cfg = resolve(TrainConfig(model=LORA_CFG.model_copy(update={"dtype": dtype})))
    torch.manual_seed(0)
    model, _ = load_policy(cfg.model, 0)
    # the frozen base in the compute dtype, the adapters in float32 (bf16 would round their updates away)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {getattr(torch, dtype)}
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    optimizer, _ = update.make_optimizer(model, cfg.optim.model_copy(update={"lr": 1e-2}), 2)
    adapters = {n for n, p in model.named_parameters() if "lora_" in n}
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {n for n, p in model.named_parameters() if id(p) in optimized} == adapters
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sequences = [
        update.Sequence([1, 40, 41], [42, 43, 44], 1.0),
        update.Sequence([1, 50], [51, 52, 53, 54], -1.0),
    ]
    for _ in range(2):  # B starts at 0, so A gets no gradient until B has moved
        update.policy_update(cfg, model, None, optimizer, sequences)
    after = dict(model.named_parameters())
    assert [n for n in before if n not in adapters and not torch.equal(after[n], before[n])] == []
    assert [n for n in adapters if torch.equal(after[n], before[n])] == []


def test_a_run_from_a_lora_checkpoint_starts_from_its_merged_weights(tmp_path):
    model, tokenizer = adapted_tiny()
    folder = tmp_path / "ckpt"
    lora.save(model, folder)
    tokenizer.save_pretrained(folder)
    assert lora.adapter_base(folder) == "tiny-random"
    loaded, _ = load_model_and_tokenizer(str(folder))  # what evaluate and the KL reference load
    assert not lora.is_lora(loaded)
    torch.testing.assert_close(logits(loaded), logits(model))
    cfg = LORA_CFG.model_copy(update={"init_from": str(folder)})
    policy, _ = load_policy(cfg, 0)  # fresh adapters on the checkpoint's merged weights
    assert lora.is_lora(policy) and lora.adapter_base(folder) == "tiny-random"
    assert policy.peft_config["default"].base_model_name_or_path == str(folder.resolve())
    torch.testing.assert_close(logits(policy), logits(model))


def run_lora(run_dir, steps: int, *extra: str) -> None:
    assert train.main([
        "--task", "math", *TINY, f"data.source={run_dir.parent / 'data'}", f"run_dir={run_dir}",
        "model.lora.enabled=true", "model.lora.r=4", "optim.lr=5e-3", f"trainer.steps={steps}",
        "trainer.batch_size=2", "grpo.group_size=8", "grpo.filter=none", "generation.max_new_tokens=16",
        "trainer.save_every=1", "trainer.val_every=1", *extra,
    ]) == 0  # fmt: skip


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """A 3-step LoRA run, and one of 2 steps resumed for a third (step 1 samples no format hit, so
    no update; steps 2 and 3 train)."""
    from srl_helpers import math_example

    from trajectories.record import write_jsonl

    root = tmp_path_factory.mktemp("lora")
    write_jsonl([math_example(f"g{i}", i % 2, "x=5") for i in range(8)], root / "data" / "train.jsonl")
    write_jsonl([math_example("v0", 0, "x=5")], root / "data" / "validation.jsonl")
    whole, resumed = root / "whole", root / "resumed"
    run_lora(whole, 3)
    run_lora(resumed, 2)
    run_lora(resumed, 3)
    return whole, resumed


@pytest.mark.slow
def test_lora_checkpoints_hold_the_adapter_and_resume_exactly(lora_runs):
    whole, resumed = lora_runs
    last = whole / "checkpoints" / "last"
    assert (last / "adapter_config.json").is_file() and not (last / "model.safetensors").exists()
    assert (whole / "checkpoints" / "best" / "adapter_config.json").is_file()
    adapter = load_file(last / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert all(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # trained away from 0
    # the optimizer state is the adapters' only
    state = torch.load(last / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
    assert sorted(s["exp_avg"].numel() for s in state.values()) == sorted(t.numel() for t in adapter.values())
    # 2 steps, then resumed for a third == 3 steps: the same rollouts and the same adapter, bit for bit
    assert [r["step"] for r in read_metrics(resumed / "metrics.jsonl")] == [0, 1, 2, 3]
    rows = {r["step"]: r for r in read_metrics(whole / "metrics.jsonl")}
    for row in read_metrics(resumed / "metrics.jsonl"):
        for key in ("reward_mean", "loss", "grad_norm", "val_reward_mean"):
            assert row.get(key) == rows[row["step"]].get(key), (row["step"], key)
    assert rows[3]["loss"] != 0.0  # the last step trained
    again = load_file(resumed / "checkpoints" / "last" / "adapter_model.safetensors")
    assert again.keys() == adapter.keys() and all(torch.equal(again[k], adapter[k]) for k in adapter)
    assert json.loads((resumed / "checkpoints" / "last" / "state.json").read_text())["step"] == 3


@pytest.mark.slow
def test_a_lora_checkpoint_exports_as_a_plain_model_that_computes_the_same(lora_runs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srl_agent import export

    whole, _ = lora_runs
    last = whole / "checkpoints" / "last"
    torch.manual_seed(0)
    adapted, _ = load_policy(LORA_CFG, 0, last)  # as a resumed run holds it
    out = tmp_path / "plain"
    assert export.main([str(last), str(out)]) == 0
    assert not (out / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("x=5").input_ids == load_model_and_tokenizer("tiny-random")[1]("x=5").input_ids
    torch.testing.assert_close(logits(plain), logits(adapted), atol=1e-5, rtol=1e-5)
    base, _ = load_model_and_tokenizer("tiny-random")
    assert (logits(plain) - logits(base)).abs().max() > 1e-3  # the adapter is in it
    with pytest.raises(ConfigError, match="not empty"):
        export.main([str(last), str(out)])


@pytest.mark.slow
def test_evaluate_reads_a_lora_checkpoint(lora_runs, capsys):
    from srl_agent import evaluate

    whole, _ = lora_runs
    argv = [
        "--task", "math", f"data.source={whole.parent / 'data'}", "prompt.system_prompt=Answer.",
        "prompt.prefill=<think>", "generation.max_new_tokens=16",
    ]  # fmt: skip
    capsys.readouterr()
    assert evaluate.main([*argv, "--checkpoint", str(whole / "checkpoints" / "last")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["examples"] == 1 and result["model"] == str(whole / "checkpoints" / "last")


@pytest.mark.slow
def test_a_lora_run_from_a_lora_checkpoint_trains_new_adapters_on_its_merged_weights(lora_runs):
    """What the RLVR stage of `--stage srl+rlvr` does with LoRA: `model.init_from` a LoRA checkpoint."""
    whole, _ = lora_runs
    first = whole / "checkpoints" / "last"
    second = whole.parent / "second"
    run_lora(second, 3, f"model.init_from={first}")
    last = second / "checkpoints" / "last"
    adapter = load_file(last / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)
    assert lora.adapter_base(last) == str(first.resolve())  # its base: the first run's, merged
    cfg = LORA_CFG.model_copy(update={"init_from": str(first)})
    policy, _ = load_policy(cfg, 0, last)  # as the second run resumes
    both, _ = load_model_and_tokenizer(str(last))  # both adapters merged, as evaluate loads it
    torch.testing.assert_close(logits(both), logits(policy), atol=1e-5, rtol=1e-5)
    first_only, _ = load_model_and_tokenizer(str(first))
    assert (logits(both) - logits(first_only)).abs().max() > 1e-4
