"""The training run's configuration: one typed section per component, defaults here and only here.

The defaults ARE the CPU demo: `python -m srl_agent.train --task math` with no config file runs a short
SRL demo of the embedded default model (SmolLM2-135M) on the bundled math steps in a few minutes on
2 cores. The YAML files in `configs/` override only what differs (the paper's settings for GPU
machines, ...). Every choice the paper leaves open is a field here; docs/method.md says why each
default is what it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trajectories.build import BuildConfig
from trajectories.config import Section


class ModelConfig(Section):
    name: str = "smollm2-135m"  # `smollm2-135m` (embedded default), `tiny-random`, an HF id or a local folder
    # Compute dtype. Training keeps float32 master weights and AdamW state and runs forward passes under
    # autocast in this dtype (pure bf16 weights would round away small updates); the frozen KL reference
    # and `srl_agent.evaluate` load their weights in it.
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "auto"  # auto = cuda when available, else cpu
    # A checkpoint folder (a run's checkpoints/best or checkpoints/last) to start from instead of `name`:
    # SRL then RLVR is `--stage rlvr model.init_from=runs/math-srl/checkpoints/best`.
    init_from: str | None = None


def _demo_build() -> BuildConfig:
    # Hold out a fixed number of whole problems/trajectories (the paper: 60 of s1K's 1,000 problems).
    return BuildConfig(validation_groups=4)


class DataConfig(Section):
    # Where the expert data comes from. `auto`: the bundled math steps for --task math; for --task swe the
    # SWE-smith sample of this workspace (../shared/data/swesmith/ft_xml_example.jsonl). Otherwise any
    # source the `trajectories` readers take (a file, folder, glob or HF dataset id), or a folder that
    # `python -m trajectories build` wrote (train.jsonl + validation.jsonl), used as it is.
    source: str = "auto"
    # How steps become examples (context window, observation cap, hint, which steps, the split):
    # trajectories.build.BuildConfig, the same section `python -m trajectories build` takes.
    build: BuildConfig = Field(default_factory=_demo_build)
    max_train_examples: int | None = None  # cap after the split (None: all)
    max_val_examples: int | None = 8  # validation is generation-bound: a fixed subset (None: all)


class PromptConfig(Section):
    system_prompt: str | None = (
        None  # None: the built-in prompt for the task and stage (srl_agent/prompts.py)
    )
    omitted_steps_note: bool = True  # say "N earlier steps are not shown" when the window cut some
    # Text that opens the assistant turn before the policy writes; it counts as part of the output for
    # the format check. "" = the policy writes everything (the paper; configs/paper_*.yaml). The CPU demo
    # prefills an empty monologue because SmolLM2-135M never closes one by itself (docs/method.md):
    # it then writes only the action, which the reward scores exactly as before.
    prefill: str = "<think>\n</think>\n"


class RewardConfig(Section):
    # `difflib`: difflib.SequenceMatcher(None, a, b, autojunk=...).ratio(), the paper's reward;
    # `rapidfuzz`: exact LCS-based 2M/T (Indel normalized similarity), ~1000x faster on long actions;
    # `auto`: difflib for math (short steps), rapidfuzz for SWE (difflib needs seconds per created file).
    similarity: Literal["auto", "difflib", "rapidfuzz"] = "auto"
    autojunk: bool = False  # difflib's popular-character heuristic; True is Python's default (see docs)
    strip: bool = True  # strip leading/trailing whitespace of action and target before comparing
    allow_preamble: bool = False  # accept text before `<think>` (the output contract says it starts there)


class GenerationConfig(Section):
    backend: Literal["hf"] = "hf"  # vLLM arrives with its own issue
    max_new_tokens: int = 48  # the demo's math steps are ~50 characters; the paper configs raise it
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 32  # sequences per generate() call
    # Strings that end a completion (kept in it). None: the task's default, `</function>` for SWE (the
    # contract allows one tool call and nothing after it; text after the call would be a format
    # error) and none for math. [] turns it off.
    stop: list[str] | None = None


class GRPOConfig(Section):
    group_size: int = 4  # G rollouts per prompt (paper: 8)
    advantage: Literal["grpo", "drgrpo"] = "grpo"  # grpo: (r-mean)/(std+eps); drgrpo: r-mean
    advantage_eps: float = 1e-6
    clip_eps: float = 0.2  # PPO clip (verl's default; the paper does not state it)
    clip_eps_high: float | None = None  # None: symmetric clipping
    kl_coef: float = 0.0  # >0 loads a frozen reference model (the initial policy)
    kl_estimator: Literal["k1", "k3"] = "k3"
    loss_agg: Literal["token_mean", "seq_mean_token_mean"] = "token_mean"
    # Which groups train: `auto` = `std` for srl (dynamic sampling), `dapo` for rlvr; `none` keeps all.
    filter: Literal["auto", "std", "dapo", "none"] = "auto"
    filter_eps: float = 1e-4  # keep a prompt iff population std of its G rewards > filter_eps
    max_sampling_rounds: int = 3  # refill rounds per step before training on a partial batch
    ppo_epochs: int = 1  # passes (optimizer steps) over one batch of rollouts


class OptimConfig(Section):
    lr: float = 1e-5  # demo value; the paper's 5e-7 is in configs/paper_*.yaml
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    schedule: Literal["constant", "warmup_constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr


class TrainerConfig(Section):
    steps: int = 4  # training steps (one batch of rollouts each)
    batch_size: int = 4  # kept prompts per step (paper: 512 SRL, 128 RLVR)
    micro_batch_size: int = 8  # sequences per forward/backward (gradient accumulation over the rest)
    # Recompute activations in the backward pass (one more forward per micro-batch) instead of storing
    # them: SWE prompts of 2k+ tokens otherwise hold every layer's attention for the backward (a
    # micro-batch of 4 SWE-smith steps on SmolLM2-135M went past 16 GB on the CPU; with recomputation
    # the run peaked at 9.6 GB).
    gradient_checkpointing: bool = False
    val_every: int = 2  # validate on held-out steps every N steps (0: only at the start and the end)
    validate_at_start: bool = True
    save_every: int = 2  # checkpoint every N steps (and always at the end)
    keep_best: bool = True  # keep checkpoints/best, the best validation reward seen
    resume: bool = True  # re-running the same command continues from checkpoints/last
    progress: bool = True  # a console progress bar
    tensorboard: bool = False  # write TensorBoard events to <run>/tensorboard (the `logging` extra)
    # Log to Weights & Biases (the `logging` extra; a login, or WANDB_MODE=offline to write <run>/wandb
    # and `wandb sync` it later). A resumed run continues the same wandb run.
    wandb: bool = False
    wandb_project: str = "srl-agent"


class SFTConfig(Section):
    # The SFT baseline trains on the expert step wrapped in the same output format as SRL's contract.
    think_text: str = ""  # what goes between <think> and </think> in the SFT target


class TrainConfig(Section):
    task: Literal["swe", "math"] = "math"
    stage: Literal["srl", "rlvr", "sft"] = "srl"
    seed: int = 0
    run_dir: str = "runs/{task}-{stage}"  # `{task}` and `{stage}` are filled in
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)


class EvalSection(Section):
    split: Literal["val", "train"] = "val"
    greedy: bool = True  # greedy decoding (else sampled at generation.temperature)
    output: str | None = None  # also write the per-example results as JSONL here


class EvalConfig(Section):
    """`python -m srl_agent.evaluate`: held-out step reward of a model or checkpoint."""

    task: Literal["swe", "math"] = "math"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    eval: EvalSection = Field(default_factory=EvalSection)
