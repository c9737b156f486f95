"""The policy's side of training: per-token log-probabilities of completions, in micro-batches.

Layout of a micro-batch: prompts left-padded and completions right-padded, so every completion starts
at the same column and only the last T+1 positions' logits are computed (`logits_to_keep`): the
vocabulary projection over the prompt, the largest tensor by far, is never materialised.

A GRPO micro-batch mostly holds the G rollouts of one prompt. With `share_prompts`, each distinct
prompt runs once: its KV cache (computed with gradients) is indexed out to the rows that continue it,
and only the completions run per row. The log-probs and the gradient are those of the plain layout
(the cache's index backward sums the rows' gradients into the one prompt pass); the work on a
232-token prompt with 8 x 64-token completions drops from 2,368 token positions to 744.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from torch import Tensor


def pack(
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_id: int,
    device: Any,
    share_prompts: bool | Literal["always"] = False,
) -> dict[str, Tensor]:
    """Token lists -> input_ids, attention_mask, position_ids [N, P+T] and completion mask [N, T].

    With `share_prompts` and a prompt repeated in the batch, the shared layout instead (see
    `_pack_shared`), and with "always" even when no prompt repeats (a sharded model's ranks must
    run the same passes: one layout for every micro-batch); `completion_logprobs` reads either."""
    if share_prompts == "always" or (share_prompts and len({tuple(p) for p in prompts}) < len(prompts)):
        return _pack_shared(prompts, completions, pad_id, device)
    n = len(prompts)
    width_p = max(len(p) for p in prompts)
    width_c = max(max(len(c) for c in completions), 1)
    ids = torch.full((n, width_p + width_c), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros((n, width_c), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, width_p - len(p) : width_p] = torch.tensor(p, dtype=torch.long)
        attn[i, width_p - len(p) : width_p] = 1
        if c:
            ids[i, width_p : width_p + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[i, width_p : width_p + len(c)] = 1
            mask[i, : len(c)] = 1.0
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
    return {
        "input_ids": ids.to(device),
        "attention_mask": attn.to(device),
        "position_ids": positions.to(device),
        "mask": mask.to(device),
    }


def _pack_shared(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, device: Any
) -> dict[str, Tensor]:
    """The distinct prompts, left-padded [U, P] (`prompt_ids`, `prompt_attention_mask`,
    `prompt_position_ids`), which prompt each row continues (`rows` [N]), and the completions
    right-padded [N, T] (`completion_ids`), with the attention mask over prompt and completion
    [N, P+T], the completions' positions and the completion mask."""
    distinct: dict[tuple[int, ...], int] = {}
    rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    unique = [list(p) for p in distinct]
    prompt = pack(unique, [[]] * len(unique), pad_id, "cpu")
    width_p = prompt["input_ids"].shape[1] - 1  # pack leaves one completion column; drop it
    width_c = max(max(len(c) for c in completions), 2)  # >= 2: always a completion pass
    index = torch.tensor(rows, dtype=torch.long)
    ids = torch.full((len(prompts), width_c), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width_c), dtype=torch.float32)
    for i, c in enumerate(completions):
        ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, : len(c)] = 1.0
    prompt_attn = prompt["attention_mask"][:, :width_p]
    lengths = prompt_attn.sum(dim=1)[index]
    return {
        "prompt_ids": prompt["input_ids"][:, :width_p].to(device),
        "prompt_attention_mask": prompt_attn.to(device),
        "prompt_position_ids": prompt["position_ids"][:, :width_p].to(device),
        "rows": index.to(device),
        "completion_ids": ids.to(device),
        "attention_mask": torch.cat([prompt_attn[index], mask.long()], dim=1).to(device),
        "position_ids": (lengths[:, None] + torch.arange(width_c)[None, :]).to(device),
        "mask": mask.to(device),
    }


def autocast(device: Any, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes: weights stay as they are, matmuls run in `dtype`."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, dtype))


def completion_logprobs(
    model: Any, batch: dict[str, Tensor], temperature: float = 1.0, compute_dtype: str = "float32"
) -> Tensor:
    """log pi(token) of every completion position: [N, T] (float32; garbage where batch['mask'] is 0)."""
    width_c = batch["mask"].shape[1]
    if "rows" in batch:
        logits, targets = _shared_prompt_logits(model, batch, compute_dtype)
    else:
        with autocast(batch["input_ids"].device, compute_dtype):
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                logits_to_keep=width_c + 1,
                use_cache=False,
            )
        logits, targets = out.logits[:, :-1, :], batch["input_ids"][:, -width_c:]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _shared_prompt_logits(model: Any, batch: dict[str, Tensor], compute_dtype: str) -> tuple[Tensor, Tensor]:
    """Logits [N, T, V] predicting each completion token, and those tokens [N, T], from a shared
    batch: each distinct prompt runs once into a KV cache (its last position gives the logits of the
    first completion token), the cache is indexed out to the N rows, and the completions but their
    last token run on it."""
    from transformers import DynamicCache

    if getattr(model, "is_gradient_checkpointing", False):
        raise ValueError("shared prompts need the KV cache, which gradient checkpointing turns off")
    completions = batch["completion_ids"]
    width_p, width_c = batch["prompt_ids"].shape[1], completions.shape[1]
    cache = DynamicCache(config=model.config)
    with autocast(completions.device, compute_dtype):
        first = model(
            input_ids=batch["prompt_ids"],
            attention_mask=batch["prompt_attention_mask"],
            position_ids=batch["prompt_position_ids"],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[batch["rows"]]
        cache.reorder_cache(batch["rows"])
        rest = model(
            input_ids=completions[:, :-1],
            attention_mask=batch["attention_mask"][:, : width_p + width_c - 1],
            position_ids=batch["position_ids"][:, :-1],
            past_key_values=cache,
            use_cache=True,
        ).logits
    return torch.cat([first, rest], dim=1), completions
