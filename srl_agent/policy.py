"""The policy's side of training: per-token log-probabilities of completions, in micro-batches.

Layout of a micro-batch: prompts left-padded and completions right-padded, so every completion starts
at the same column and only the last T+1 positions' logits are computed (`logits_to_keep`): the
vocabulary projection over the prompt, the largest tensor by far, is never materialised.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor


def pack(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, device: Any
) -> dict[str, Tensor]:
    """Token lists -> input_ids, attention_mask, position_ids [N, P+T] and completion mask [N, T]."""
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
    with autocast(batch["input_ids"].device, compute_dtype):
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            logits_to_keep=width_c + 1,
            use_cache=False,
        )
    logits = out.logits[:, :-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = batch["input_ids"][:, -width_c:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
