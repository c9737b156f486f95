"""GRPO's math as pure functions on tensors (shapes in each docstring), chosen by name from plain dicts.

Shapes: P prompts, G rollouts per prompt, N = sequences in a micro-batch, T = completion tokens
(padded; `mask` is 1 on real completion tokens).

- Advantages are group-normalized: A_i = (r_i - mean(r)) / (std(r) + eps) with the POPULATION std over
  the G rollouts of one prompt, the same value for every token of rollout i (`grpo`); `drgrpo` drops
  the division (Dr. GRPO).
- Filters decide which prompts train: `std` (SRL dynamic sampling: keep iff population std > eps),
  `dapo` (RLVR: drop groups that are all right or all wrong), `none`.
- The policy loss is PPO's clipped surrogate per token, aggregated over the whole batch of tokens
  (`token_mean`, DAPO/verl) or per sequence then over sequences (`seq_mean_token_mean`). Micro-batches
  pass the batch-wide normalizer so that accumulated gradients equal the full-batch gradient.
- KL to a reference model: `k1` (log ratio) or `k3` (Schulman's unbiased, always >= 0 estimator).
- `logprob_gap` measures the sampler/trainer mismatch (a different engine or dtype shows up here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def grpo_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """rewards [P, G] -> advantages [P, G]: (r - mean) / (population std + eps), per prompt."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def drgrpo_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """rewards [P, G] -> advantages [P, G]: r - mean per prompt (no std division; `eps` unused)."""
    return rewards - rewards.mean(dim=1, keepdim=True)


ADVANTAGES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "grpo": grpo_advantages,
    "drgrpo": drgrpo_advantages,
}


def std_filter(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    """rewards [P, G] -> keep [P] bool: the population std of the group's rewards exceeds eps."""
    return rewards.std(dim=1, unbiased=False) > eps


def dapo_filter(rewards: Tensor, eps: float = 1e-4, success: float = 1.0) -> Tensor:
    """rewards [P, G] (outcome, 1 = right) -> keep [P] bool: at least one right and one wrong rollout."""
    right = rewards >= success - eps
    return right.any(dim=1) & ~right.all(dim=1)


def no_filter(rewards: Tensor, eps: float = 0.0) -> Tensor:
    """rewards [P, G] -> keep [P] bool, all True."""
    return torch.ones(rewards.shape[0], dtype=torch.bool)


FILTERS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "std": std_filter,
    "dapo": dapo_filter,
    "none": no_filter,
}


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token clipped surrogate loss.

    logp, old_logp, mask: [N, T]; advantages: [N] (broadcast over the tokens of each rollout).
    Returns (loss [N, T], clipped [N, T] bool), both zero where mask is 0. The loss is
    -min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A) with ratio = exp(logp - old_logp).
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high) * adv
    loss = -torch.minimum(unclipped, clipped) * mask
    was_clipped = (clipped < unclipped) & mask.bool()
    return loss, was_clipped


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """[N, T] -> [N, T]: log pi - log pi_ref."""
    return logp - ref_logp


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """[N, T] -> [N, T]: exp(ref - logp) - (ref - logp) - 1, unbiased for KL(pi || pi_ref) and >= 0."""
    log_ratio = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.exp(log_ratio) - log_ratio - 1.0


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": kl_k1, "k3": kl_k3}


def token_mean(per_token: Tensor, mask: Tensor, total_tokens: float, total_sequences: float) -> Tensor:
    """per_token, mask [N, T] -> scalar: sum over this micro-batch's tokens / tokens in the whole batch."""
    return (per_token * mask).sum() / max(total_tokens, 1.0)


def seq_mean_token_mean(
    per_token: Tensor, mask: Tensor, total_tokens: float, total_sequences: float
) -> Tensor:
    """per_token, mask [N, T] -> scalar: each sequence's token mean, summed / sequences in the whole batch."""
    per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_seq.sum() / max(total_sequences, 1.0)


LOSS_AGG: dict[str, Callable[[Tensor, Tensor, float, float], Tensor]] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
}


def logprob_gap(logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> tuple[float, float, float]:
    """logp, sampler_logp, mask [N, T] -> (sum of |logp - sampler_logp| over real tokens, its max,
    the number of real tokens): how far the trainer's log-probs are from the sampler's."""
    diff = (logp - sampler_logp).abs() * mask
    return float(diff.sum()), float(diff.max()) if diff.numel() else 0.0, float(mask.sum())


def sft_token_loss(logp: Tensor, mask: Tensor) -> Tensor:
    """logp, mask [N, T] -> [N, T]: the negative log-likelihood of each target token (0 off the mask)."""
    return -logp * mask
