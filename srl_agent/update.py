"""The update: one gradient step on a batch of sequences, for SFT and for GRPO, on steps and on episodes.

`update` is the one loop. It cuts the sequences into micro-batches (at most `micro_batch_size`
sequences, and with `micro_batch_tokens` at most that many padded tokens: `micro_batches`), runs each
forward and backward with the loss normalised by the batch-wide token (or sequence) count so that the
accumulated gradient is the full batch's, clips the gradient, steps the optimizer, and repeats that
`epochs` times over the same micro-batches. What differs between the stages is the per-token loss
and nothing else (a `TokenLoss`):
- SFT (`sft_update`): the next-token loss of the expert's wrapped step (`grpo.sft_token_loss`);
- GRPO (`policy_update`): PPO's clipped surrogate with the sequence's advantage, plus the KL to a
  frozen reference when there is one (`PPOLoss`, on `grpo.ppo_clip_loss` and `grpo.KL_ESTIMATORS`).
The loss math itself is pure and lives in `srl_agent.grpo`.

On several ranks (`srl_agent.distributed`), the sequences are this rank's: the normalisers are the
counts of all ranks, the loss is scaled by the world size (a sharded model's gradients are averaged
over the ranks; times W makes them the sum) and a rank with fewer micro-batches runs empty ones, since
every forward of a sharded model is a collective. The update is then the one of all sequences on one
process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor

from srl_agent import grpo
from srl_agent.distributed import ONE_PROCESS, World, full_norm
from srl_agent.logprobs import completion_logprobs, pack

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler
    from transformers import PreTrainedModel

    from srl_agent.config import OptimConfig, ResolvedTrainConfig
    from srl_agent.rollouts import Group
    from srl_agent.swe_rlvr import EpisodeGroup


@dataclass
class Sequence:
    """One sequence to train on: prompt and completion token ids, its advantage (unused by SFT), the
    sampler's per-token log-probabilities (None when the generator reports none, and for SFT)."""

    prompt: list[int]
    completion: list[int]
    advantage: float = 0.0
    sampler_logprobs: list[float] | None = None


@dataclass
class MicroBatch:
    """One forward pass's sequences, packed (`logprobs.pack`'s tensors; `mask` [N, T] marks the
    completion tokens), their advantages [N], the sampler's log-probs [N, T] (None when some sequence
    has none) and, with several epochs, the log-probs before the first update [N, T]."""

    tensors: dict[str, Tensor]
    advantages: Tensor
    sampler: Tensor | None = None
    old_logp: Tensor | None = None

    @property
    def mask(self) -> Tensor:
        return self.tensors["mask"]


class TokenLoss(Protocol):
    """What SFT and GRPO differ in: the loss of each completion token of a micro-batch.

    Called with the policy's log-probs of the micro-batch's completions [N, T] (with gradient); returns
    the loss per token [N, T] and sums over this micro-batch's tokens of the quantities named in
    `stats` (e.g. clipped tokens), which the update turns into means over all tokens and epochs.
    """

    stats: tuple[str, ...]

    def __call__(self, logp: Tensor, micro: MicroBatch) -> tuple[Tensor, dict[str, float]]: ...


@dataclass(frozen=True)
class SFTLoss:
    """The negative log-likelihood of each target token."""

    stats: tuple[str, ...] = ()

    def __call__(self, logp: Tensor, micro: MicroBatch) -> tuple[Tensor, dict[str, float]]:
        return grpo.sft_token_loss(logp, micro.mask), {}


@dataclass(frozen=True)
class PPOLoss:
    """PPO's clipped surrogate with each sequence's advantage (the old log-probs are the current ones
    detached when the micro-batch has none: the policy has not moved since it sampled), plus
    `kl_coef` times the KL estimate to `reference` when one is given. Stats: the clipped tokens and the
    KL summed over the tokens."""

    clip_eps: float
    clip_eps_high: float | None
    reference: PreTrainedModel | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    temperature: float = 1.0
    compute_dtype: str = "float32"
    stats: tuple[str, ...] = ("clip_fraction", "kl")

    def __call__(self, logp: Tensor, micro: MicroBatch) -> tuple[Tensor, dict[str, float]]:
        old = logp.detach() if micro.old_logp is None else micro.old_logp
        per_token, clipped = grpo.ppo_clip_loss(
            logp, old, micro.advantages, micro.mask, self.clip_eps, self.clip_eps_high
        )
        sums = {"clip_fraction": float(clipped.sum())}
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = completion_logprobs(
                    self.reference, micro.tensors, self.temperature, self.compute_dtype
                )
            kl = grpo.KL_ESTIMATORS[self.kl_estimator](logp, ref_logp)
            per_token = per_token + self.kl_coef * kl
            sums["kl"] = (kl * micro.mask).sum().item()
        return per_token, sums


@dataclass(frozen=True)
class Settings:
    """How the update runs: micro-batching, epochs over the batch, clipping, numerics, aggregation."""

    micro_batch_size: int
    micro_batch_tokens: int | None = None
    max_grad_norm: float = 1.0
    epochs: int = 1
    temperature: float = 1.0
    """The sampling temperature the log-probs are computed at (1.0 for SFT)."""
    compute_dtype: str = "float32"
    aggregate: Callable[[Tensor, Tensor, float, float], Tensor] = grpo.token_mean
    """(per-token loss, mask, tokens of all ranks, sequences of all ranks) -> this micro-batch's loss."""
    share_prompts: bool | Literal["always"] = False
    """`logprobs.pack`'s layout: run a prompt shared by a micro-batch's sequences once."""


def update(
    model: PreTrainedModel,
    optimizer: Optimizer,
    sequences: list[Sequence],
    loss: TokenLoss,
    settings: Settings,
    world: World = ONE_PROCESS,
) -> dict[str, Any]:
    """`settings.epochs` optimizer steps on `sequences` (this rank's) with `loss`: the metrics.

    Returns `loss` (the aggregated loss, averaged over epochs), each of `loss.stats` as a mean over the
    tokens of all ranks and the epochs, `grad_norm` (before clipping, of the last epoch),
    `logprob_gap_mean`/`_max` (how far the first pass's log-probs are from the sampler's: ~0 for the
    same weights and numerics; only when the sequences carry the sampler's), `tokens`, `sequences`.
    """
    pad, device, epochs = model.config.pad_token_id or 0, model.device, settings.epochs
    micro = [
        micro_batch(m, pad, device, settings.share_prompts)
        for m in micro_batches(sequences, settings.micro_batch_size, settings.micro_batch_tokens)
    ]
    for _ in range(int(world.max(len(micro))) - len(micro)):  # every rank runs as many passes
        micro.append(
            MicroBatch(empty_batch(pad, device, settings.share_prompts), torch.zeros(1, device=device))
        )
    total_tokens = world.sum(sum(len(s.completion) for s in sequences))
    total_sequences = world.sum(len(sequences))

    def logprobs(m: MicroBatch) -> Tensor:
        return completion_logprobs(model, m.tensors, settings.temperature, settings.compute_dtype)

    if epochs > 1:  # with one epoch the old log-probs are the current ones detached: a pass saved
        with torch.no_grad():
            for m in micro:
                m.old_logp = logprobs(m)
    stats = {"loss": 0.0, **dict.fromkeys(loss.stats, 0.0)}
    gaps: list[tuple[float, float, float]] = []
    for epoch in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        for m in micro:
            logp = logprobs(m)
            if epoch == 0 and m.sampler is not None:
                gaps.append(grpo.logprob_gap(logp.detach(), m.sampler, m.mask))
            per_token, sums = loss(logp, m)
            for name, value in sums.items():
                stats[name] += value / total_tokens / epochs
            batch_loss = settings.aggregate(per_token, m.mask, total_tokens, total_sequences)
            (batch_loss * world.size).backward()  # the sum over ranks of a sharded model's gradients
            stats["loss"] += batch_loss.item() / epochs
        stats["grad_norm"] = full_norm(
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        )
        optimizer.step()
    stats = {k: v if k == "grad_norm" else world.sum(v) for k, v in stats.items()}
    gap_tokens = world.sum(sum(g[2] for g in gaps))
    if gap_tokens:
        stats["logprob_gap_mean"] = world.sum(sum(g[0] for g in gaps)) / gap_tokens
        stats["logprob_gap_max"] = world.max(max((g[1] for g in gaps), default=0.0))
    return {**stats, "tokens": int(total_tokens), "sequences": int(total_sequences)}


def policy_update(
    cfg: ResolvedTrainConfig,
    model: PreTrainedModel,
    reference: PreTrainedModel | None,
    optimizer: Optimizer,
    sequences: list[Sequence],
    world: World = ONE_PROCESS,
) -> dict[str, Any]:
    """GRPO: PPO-clip (+ the KL to `reference` when given) over micro-batches, `grpo.ppo_epochs` times.

    A group's rollouts share their prompt, which runs once per micro-batch; not on a model with
    gradient checkpointing (the KV cache that needs is what checkpointing drops), and on several ranks
    in every micro-batch, so that the ranks' passes pair up.
    """
    share = not getattr(model, "is_gradient_checkpointing", False) and ("always" if world.size > 1 else True)
    g = cfg.grpo
    loss = PPOLoss(
        g.clip_eps,
        g.clip_eps_high,
        reference,
        g.kl_coef,
        g.kl_estimator,
        cfg.generation.temperature,
        cfg.model.dtype,
    )
    return update(model, optimizer, sequences, loss, replace(settings(cfg), share_prompts=share), world)


def sft_update(
    cfg: ResolvedTrainConfig,
    model: PreTrainedModel,
    optimizer: Optimizer,
    sequences: list[Sequence],
    world: World = ONE_PROCESS,
) -> dict[str, Any]:
    """SFT: the token-mean next-token loss of the sequences' completions (the targets), one step, the
    log-probs at temperature 1."""
    plain = replace(settings(cfg), epochs=1, temperature=1.0, aggregate=grpo.token_mean)
    return update(model, optimizer, sequences, SFTLoss(), plain, world)


def settings(cfg: ResolvedTrainConfig) -> Settings:
    """The update's `Settings` as a resolved config gives them (GRPO's: `grpo.ppo_epochs`, the sampling
    temperature, `grpo.loss_agg`; the prompt layout plain)."""
    return Settings(
        micro_batch_size=cfg.trainer.micro_batch_size,
        micro_batch_tokens=cfg.trainer.micro_batch_tokens,
        max_grad_norm=cfg.optim.max_grad_norm,
        epochs=cfg.grpo.ppo_epochs,
        temperature=cfg.generation.temperature,
        compute_dtype=cfg.model.dtype,
        aggregate=grpo.LOSS_AGG[cfg.grpo.loss_agg],
    )


def make_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, total_steps: int
) -> tuple[Optimizer, LRScheduler]:
    """AdamW and transformers' LR schedule for `cfg.schedule` (stepped once per training step)."""
    from transformers import get_scheduler  # (transformers takes seconds to import: not for --help)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
    )
    name, kwargs = {
        "constant": ("constant", {}),
        "warmup_constant": ("constant_with_warmup", {}),
        "cosine": ("cosine_with_min_lr", {"min_lr_rate": cfg.min_lr_ratio}),
    }[cfg.schedule]
    scheduler = get_scheduler(
        name,
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=total_steps,
        scheduler_specific_kwargs=kwargs,
    )
    return optimizer, scheduler


def micro_batch(
    sequences: list[Sequence], pad: int, device: Any, share_prompts: bool | Literal["always"]
) -> MicroBatch:
    """`sequences` packed for one forward pass, with their advantages and the sampler's log-probs."""
    tensors = pack(
        [s.prompt for s in sequences], [s.completion for s in sequences], pad, device, share_prompts
    )
    advantages = torch.tensor([s.advantage for s in sequences], dtype=torch.float32, device=device)
    return MicroBatch(tensors, advantages, sampler_logprobs(sequences, tensors["mask"]))


def empty_batch(pad: int, device: Any, share_prompts: bool | Literal["always"] = False) -> dict[str, Tensor]:
    """A micro-batch that trains on nothing (its mask is 0), in the layout `share_prompts` gives: a
    rank with fewer micro-batches than another runs these, because every forward of a sharded model
    is a collective."""
    batch = pack([[pad]], [[pad]], pad, device, share_prompts)
    batch["mask"].zero_()
    return batch


def micro_batches(sequences: list[Sequence], size: int, tokens: int | None = None) -> list[list[Sequence]]:
    """`sequences` in micro-batches of at most `size`; with a `tokens` cap, sorted by length and cut
    so that no micro-batch pads past `tokens` (a longer sequence goes alone). The gradient is the sum
    over micro-batches, so neither changes the update, only its memory."""
    if tokens is None:
        return [sequences[i : i + size] for i in range(0, len(sequences), size)]
    out: list[list[Sequence]] = []
    longest_p = longest_c = 0
    for s in sorted(sequences, key=lambda s: (len(s.prompt), len(s.completion))):
        p, c = max(longest_p, len(s.prompt)), max(longest_c, len(s.completion))
        if out and len(out[-1]) < size and (len(out[-1]) + 1) * (p + c) <= tokens:
            out[-1].append(s)
            longest_p, longest_c = p, c
        else:
            out.append([s])
            longest_p, longest_c = len(s.prompt), len(s.completion)
    return out


def sampler_logprobs(micro: list[Sequence], mask: Tensor) -> Tensor | None:
    """The sampler's log-probs of a micro-batch laid out like its completion `mask` [N, T] (None
    when some rollout has none)."""
    if any(s.sampler_logprobs is None for s in micro):
        return None
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for i, s in enumerate(micro):
        if s.sampler_logprobs:
            out[i, : len(s.sampler_logprobs)] = torch.tensor(s.sampler_logprobs, dtype=torch.float32)
    return out


def step_sequences(groups: list[Group]) -> list[Sequence]:
    """One sequence per scored completion of the kept groups of step examples, with its advantage and
    the sampler's log-probs (a masked completion, which no reward could score, is left out)."""
    return [
        Sequence(g.prompt, c.token_ids, a, c.logprobs)
        for g in groups
        for c, a, scored in zip(g.completions, g.advantages, g.scores, strict=True)
        if scored.masked is None
    ]


def episode_sequences(groups: list[EpisodeGroup]) -> list[Sequence]:
    """One sequence per turn of every scored episode of the kept groups: the prompt token ids the
    model was given and the completion token ids it sampled, exactly, with the episode's advantage
    (masked episodes are left out)."""
    out = []
    for g in groups:
        for rollout, advantage in zip(g.rollouts, g.advantages, strict=True):
            if rollout.score.masked is not None:
                continue
            for turn in rollout.turns:
                if turn.prompt_ids is None or turn.token_ids is None:
                    raise ValueError(
                        f"an episode of {rollout.instance_id} has a turn without its sampled token ids: "
                        "only a model policy's episodes can be trained on"
                    )
                out.append(Sequence(turn.prompt_ids, turn.token_ids, advantage, turn.logprobs))
    return out
