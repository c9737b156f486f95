"""LoRA adapters through peft (`model.lora`): the policy trains low-rank adapters on frozen base weights.

- `add_adapter` wraps a plain model in a peft model with fresh adapters (B = 0: it starts as the base)
  and every base weight frozen, so the optimizer, which takes the parameters that require grad, holds
  only the adapters; `load_adapter` puts a saved adapter (a LoRA run's checkpoint) on its base.
- A LoRA checkpoint is what peft's `save_pretrained` writes (adapter_config.json and the adapter's
  weights) next to the tokenizer and trainer state; its config records the base it was trained on
  (`adapter_base`: the run's `model.init_from` or `model.name` as given, a folder made absolute).
  A `tiny-random` base is rebuilt from the loader's seed: load with the seed the run trained with.
- `merged_weights` is the weights of the plain model the LoRA policy stands for, W + (alpha/r) B A
  for each adapted layer, under the base model's own parameter names: what a vLLM engine is given
  after each step. It reads the policy without changing it and without copying the model (one
  layer's merged weight at a time, as the caller takes them); `save_plain` writes them as a plain
  model folder.
- `merge` is peft's own merge into the base, in place, for a model loaded only to be merged.

This is the one module that imports peft.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from srl_agent.config import LoRAConfig

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(path: str | Path) -> bool:
    """True for a folder peft saved an adapter into (a LoRA run's checkpoint)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(folder: str | Path) -> str:
    """The base model the adapter in `folder` was trained on, as a model name `load_model_and_tokenizer`
    takes."""
    config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{folder}: the adapter config does not name its base model")
    return base


def is_lora(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def add_adapter(model: Any, cfg: LoRAConfig, base: str) -> Any:
    """`model` with fresh adapters on `cfg.target_modules`, its own weights frozen; `base` is the name
    it was loaded by, recorded in the adapter's config so a checkpoint names its base."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    # get_peft_model records the model's `name_or_path` (empty for tiny-random, a cache folder for the
    # embedded default): the name it was loaded by is what loads it again
    peft_model.peft_config["default"].base_model_name_or_path = (
        str(Path(base).resolve()) if Path(base).is_dir() else base
    )
    return peft_model


def load_adapter(model: Any, folder: str | Path, trainable: bool) -> Any:
    """The base `model` with the adapter saved in `folder` (trainable: to train it on)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)


def merge(model: Any) -> Any:
    """The plain model with the adapters merged into its weights (peft's merge, in place)."""
    return model.merge_and_unload()


def merged_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs of the plain model `model` stands for, one at a time: a plain model's
    own state dict; for a LoRA model the base model's names (no `base_layer`, no adapter tensors) with
    each adapted weight W + (alpha/r) B A, computed as it is reached. Tensors the adapters do not touch
    are the model's own, detached (not copies)."""
    import torch

    if not is_lora(model):
        for name, tensor in model.state_dict().items():
            yield name, tensor.detach()
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {
        f"{name}.weight": module
        for name, module in base.named_modules()
        if isinstance(module, LoraLayer) and not module.merged  # a merged layer's weight has it already
    }
    for key, tensor in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        module = adapted.get(key)
        active = [a for a in module.active_adapters if a in module.lora_A] if module is not None else []
        if not active:
            yield key, tensor.detach()
            continue
        with torch.no_grad():  # closed before the yield: grad mode is the caller's between items
            merged = tensor.detach() + sum(module.get_delta_weight(a) for a in active).to(tensor.dtype)
        yield key, merged


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """`merged_weights` as a dict (holding a merged copy of every adapted weight at once)."""
    return dict(merged_weights(model))


def save(model: Any, folder: str | Path) -> None:
    """`model.save_pretrained(folder)` in safetensors; for a LoRA model the adapter alone (never the
    embeddings: the vocabulary does not change, and peft's `auto` would look the base up on the Hub to
    decide)."""
    if is_lora(model):
        model.save_pretrained(folder, safe_serialization=True, save_embedding_layers=False)
    else:
        model.save_pretrained(folder, safe_serialization=True)


def save_plain(model: Any, folder: str | Path) -> None:
    """Save the plain model `model` stands for (`merged_state_dict`) as `save_pretrained` writes one."""
    if not is_lora(model):
        model.save_pretrained(folder)
        return
    model.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(model))
