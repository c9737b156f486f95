"""Train a policy with SRL (default), RLVR or SFT: `python -m srl_agent.train --task {swe,math}`.

Reads top to bottom: resolve the config, make the run folder, load data and model (resuming from
checkpoints/last when there is one), then per training step: sample prompts, roll out G completions
each, score them, refill until the batch of kept prompts is full (dynamic sampling), compute advantages,
update with a PPO-clip loss over micro-batches (`srl_agent.update`, the one update loop SFT uses too),
log, validate, checkpoint (`srl_agent.checkpoint`). It ends by plotting the curves and printing where
the run folder, curves and checkpoints are.

- `--stage srl`: step-wise similarity reward against the expert's next action, std filter.
- `--stage rlvr`: outcome reward (math: answer equivalence) on whole problems, DAPO filter; start it
  from an SRL checkpoint with `model.init_from=runs/math-srl/checkpoints/best`.
- `--stage srl+rlvr`: both in one run folder, the paper's best schedule: the SRL stage in
  `<run_dir>/srl`, then the RLVR stage in `<run_dir>/rlvr` from the SRL stage's best checkpoint (its
  last when it kept none); `rlvr_overrides` sets what differs for RLVR. Each stage resumes on its own,
  so rerunning the command goes on from wherever it stopped.
- `--stage sft`: the paper's baseline, plain next-token loss on the same expert steps wrapped in the
  same output format, through the same data and code.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from srl_agent import checkpoint as ckpt
from srl_agent import swe_rlvr
from srl_agent.config import GenerationConfig, ResolvedTrainConfig, TrainConfig
from srl_agent.data import DataStream, load_splits
from srl_agent.distributed import ONE_PROCESS, World, gathered, init_world, shard_model
from srl_agent.generation.hf import end_of_turn_id
from srl_agent.generation.loader import inference_for
from srl_agent.models import load_policy, load_reference
from srl_agent.prompts import PromptCache, sft_target
from srl_agent.rollouts import collect_groups, evaluate_examples, step_stats, summarize
from srl_agent.runlog import NullLog, RunLog, SamplingConsole, plot_curves, progress_bar, summary_line
from srl_agent.tasks import TASKS, StageSpec, resolve, task_spec
from srl_agent.update import (
    Sequence,
    episode_sequences,
    make_optimizer,
    policy_update,
    sft_update,
    step_sequences,
)
from trajectories.config import ConfigError, add_config_arguments, explain_config, resolve_config, run_cli

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from environments.protocol import TaskInstance
    from srl_agent.protocols import Generator, Reward
    from trajectories.record import StepExample

EXAMPLES = """\
examples:
  python -m srl_agent.train --task math
  python -m srl_agent.train --task swe
  python -m srl_agent.train --task math --stage sft
  python -m srl_agent.train --task math --stage rlvr model.init_from=runs/math-srl/checkpoints/best
  python -m srl_agent.train --task math --stage srl+rlvr trainer.steps=4 rlvr_overrides=[trainer.steps=2]
  python -m srl_agent.train --task math --config configs/paper_math_qwen2.5-7b.yaml optim.lr=1e-6
  python -m srl_agent.train --task swe --config configs/swe_demo.yaml trainer.steps=2
"""


SRL_THEN_RLVR = "srl+rlvr"


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[ResolvedTrainConfig]]:
    """The flags, and the resolved config of each stage to train in order (two for `srl+rlvr`)."""
    parser = argparse.ArgumentParser(
        prog="python -m srl_agent.train",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument(
        "--stage", choices=["srl", "rlvr", "sft", SRL_THEN_RLVR], default=None, help="default: srl"
    )
    add_config_arguments(parser, "optim.lr=1e-6")
    args = parser.parse_args(argv)
    overrides = [f"task={args.task}"] + ([f"stage={args.stage}"] if args.stage else []) + args.overrides
    cfg = resolve_config(TrainConfig, args.config, overrides)
    if cfg.stage != SRL_THEN_RLVR:
        if cfg.stage == "rlvr" and cfg.rlvr_overrides:  # what differs for RLVR applies to it alone too
            more = ["rlvr_overrides=[]", *cfg.rlvr_overrides]
            cfg = resolve_config(TrainConfig, args.config, overrides + more)
        return args, [resolve(cfg)]
    run_dir = Path(cfg.run_dir.format(task=cfg.task, stage=cfg.stage))

    def stage(name: str, extra: list[str]) -> ResolvedTrainConfig:
        more = [f"stage={name}", f"run_dir={run_dir / name}", "rlvr_overrides=[]", *extra]
        return resolve(resolve_config(TrainConfig, args.config, overrides + more))

    # the RLVR stage's model.init_from is set once the SRL stage has its best checkpoint
    return args, [stage("srl", []), stage("rlvr", cfg.rlvr_overrides)]


def main(argv: list[str] | None = None) -> int:
    args, stages = parse_args(argv)
    if args.dry_run:
        for i, cfg in enumerate(stages):
            if len(stages) > 1:
                note = "" if i == 0 else ", model.init_from: the SRL stage's checkpoints/best"
                print(f"{'---' if i else ''}\n# stage {i + 1} of {len(stages)}: {cfg.stage}{note}")
            print(explain_config(cfg), end="")
        return 0
    for i, cfg in enumerate(stages):
        if i > 0:  # SRL then RLVR: RLVR starts from what the SRL stage did best
            gc.collect()  # the last stage's model, optimizer and generator go before the next loads
            cfg.model.init_from = str(stage_result(Path(stages[i - 1].run_dir)))
            print(f"\nstage {cfg.stage}: starting from {cfg.model.init_from}")
        train_stage(cfg)
    return 0


def stage_result(run_dir: Path) -> Path:
    """A finished stage's checkpoint for the next stage: checkpoints/best, else checkpoints/last."""
    for name in ("best", "last"):
        found = ckpt.find_checkpoint(run_dir / "checkpoints" / name)
        if found is not None:
            return found
    raise ConfigError(f"{run_dir}: the stage left no checkpoint to start the next stage from")


def train_stage(cfg: ResolvedTrainConfig) -> None:
    """Train one resolved stage to `trainer.steps` in its run folder (resuming checkpoints/last), on
    this process or, launched by torchrun, on all its ranks (`srl_agent.distributed`)."""
    world = init_world()
    with contextlib.ExitStack() as closing:  # SWE RLVR's environments: removed however the run ends
        if not world.main:  # one rank reports; the others' stdout would repeat it
            devnull = closing.enter_context(open(os.devnull, "w"))
            closing.enter_context(contextlib.redirect_stdout(devnull))
        run, last = setup_run(cfg, world, closing)
        train_run(run, last)


# ---------------------------------------------------------------------------------------------------
# setup


def setup_run(
    cfg: ResolvedTrainConfig, world: World, closing: contextlib.ExitStack
) -> tuple[Run, Path | None]:
    """The run folder, data, model, optimizer and generator of a stage, and checkpoints/last if the
    run resumes. Rank 0 makes the folder and writes the data split; the others wait and read it."""
    stage = task_spec(cfg.task).stage(cfg.stage)
    run_dir = (
        ckpt.prepare_run_dir(cfg) if world.main else Path(cfg.run_dir.format(task=cfg.task, stage=cfg.stage))
    )
    world.barrier()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed + world.rank)  # each rank samples its own completions
    last = ckpt.find_checkpoint(run_dir / "checkpoints" / "last") if cfg.trainer.resume else None
    load = swe_rlvr.load_tasks if stage.episodes else load_examples
    if world.main:
        train_examples, val_examples = load(cfg, run_dir, resume=last is not None)
    world.barrier()
    if not world.main:
        train_examples, val_examples = load(cfg, run_dir, resume=True)
    if world.size > 1 and cfg.model.lora.enabled:
        raise ConfigError("model.lora is for one process (one GPU); several ranks train the full model")
    model, tokenizer = load_policy(cfg.model, cfg.seed, last, cfg.trainer.gradient_checkpointing)
    model = shard_model(model, world)
    optimizer, scheduler = make_optimizer(model, cfg.optim, cfg.trainer.steps)
    inference = inference_for(model, tokenizer, stage, sampling_backend(cfg, stage, val_examples),
                              cfg.prompt, cfg.model.dtype)  # fmt: skip
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        model=model,
        tokenizer=tokenizer,
        reference=load_reference(cfg.model, cfg.seed) if cfg.grpo.kl_coef > 0 and stage.rollouts else None,
        optimizer=optimizer,
        scheduler=scheduler,
        stream=DataStream(train_examples, cfg.seed),
        val_examples=val_examples,
        prompts=inference.prompts,
        generator=inference.generator,
        reward=stage.reward(cfg.reward, cfg.prompt.prefill) if stage.reward else None,
        stage=stage,
        world=world,
    )
    if stage.episodes:
        run.episodes, run.val_episodes = swe_rlvr.make_runners(cfg, run_dir, inference, closing)
    return run, last


def sampling_backend(cfg: TrainConfig, stage: StageSpec, val_examples: list[Any]) -> GenerationConfig:
    """`cfg.generation`, or HF's where the stage never samples (SFT without validation examples): a
    vLLM engine there only held a second copy of the weights (about 15.7 GB of memory for SmolLM2 on
    the CPU) and took a weight sync every step, for no token."""
    if stage.rollouts or val_examples or cfg.generation.backend == "hf":
        return cfg.generation
    return cfg.generation.model_copy(update={"backend": "hf"})


def load_examples(
    cfg: TrainConfig, run_dir: Path, resume: bool
) -> tuple[list[StepExample], list[StepExample]]:
    """Train and validation step examples (whole problems only, for RLVR)."""
    spec = task_spec(cfg.task)
    source = spec.data_source(cfg.data.source)
    splits = load_splits(cfg.task, source, cfg.data, run_dir / "data", reuse=resume)
    select = spec.stage(cfg.stage).examples
    train, val = select(splits.train), select(splits.val)
    if not train:
        raise ConfigError(f"data.source: {splits.source} has no examples for stage {cfg.stage}")
    print(f"data: {len(train)} train / {len(val)} validation examples from {splits.source}")
    return train, val


@dataclass
class Run:
    """Everything one training run holds; `state` (step, best validation) is saved with each checkpoint
    (`checkpoint.save_last`, which takes a `Run` as its `Resumable`)."""

    cfg: ResolvedTrainConfig
    run_dir: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    reference: PreTrainedModel | None
    """The frozen initial policy of the KL term (None without one)."""
    optimizer: Optimizer
    scheduler: LRScheduler
    stream: DataStream
    val_examples: list[StepExample] | list[TaskInstance]
    prompts: PromptCache
    generator: Generator
    reward: Reward | None
    """The reward of one completion; None for agent episodes, which the task's tests reward."""
    stage: StageSpec
    state: dict[str, Any] = field(default_factory=lambda: {"step": 0, "best_val": None, "best_step": None})
    episodes: swe_rlvr.EpisodeRunner | None = None
    """SWE RLVR: the runner that samples episodes (None for step-example stages)."""
    val_episodes: swe_rlvr.EpisodeRunner | None = None
    """SWE RLVR: the one that runs greedy validation episodes."""
    world: World = ONE_PROCESS
    """This process's rank among the training processes (`srl_agent.distributed`)."""


# ---------------------------------------------------------------------------------------------------
# the loop


def train_run(run: Run, last: Path | None) -> None:
    """Train `run` to `trainer.steps`, from checkpoints/last when given; then report."""
    cfg = run.cfg
    if last is not None:
        ckpt.restore(run, last)
    sync_weights(run)  # an engine starts from the model's files: give it the weights training starts from
    log: RunLog | NullLog = NullLog()
    if run.world.main:
        step = run.state["step"] if last is not None else -1
        log = RunLog(run.run_dir, step, cfg.trainer.tensorboard, cfg.trainer.wandb, cfg.trainer.wandb_project,
                     cfg.model_dump(mode="json"))  # fmt: skip
    if run.state["step"] == 0 and cfg.trainer.validate_at_start and run.val_examples:
        row = {"step": 0, **validate(run, 0)}
        log.write(row)
        print(summary_line(row), flush=True)
    with progress_bar(cfg.trainer.progress, cfg.trainer.steps, run.state["step"]) as advance:
        while run.state["step"] < cfg.trainer.steps:
            row = train_step(run)
            log.write(row)
            advance(row)
            if row["step"] == cfg.trainer.steps or row["step"] % max(cfg.trainer.save_every, 1) == 0:
                ckpt.save_last(run)
    log.close()
    if run.world.main:
        report(run, log.path)


def train_step(run: Run) -> dict[str, Any]:
    """One step (SFT or GRPO), the LR schedule, and validation when it is due: the step's metrics row."""
    cfg, started = run.cfg, time.perf_counter()
    step = run.state["step"] + 1
    row = grpo_step(run) if run.stage.rollouts else sft_step(run)
    run.scheduler.step()
    run.state["step"] = step
    row = {"step": step, "lr": run.optimizer.param_groups[0]["lr"], **row, **sync_weights(run)}
    due = step == cfg.trainer.steps or (cfg.trainer.val_every and step % cfg.trainer.val_every == 0)
    if run.val_examples and due:
        row.update(validate(run, step))
    row["seconds_total"] = time.perf_counter() - started
    return row


def report(run: Run, metrics: Path) -> None:
    cfg, run_dir = run.cfg, run.run_dir
    curves = plot_curves(metrics, run_dir / "curves.png", f"{cfg.task} {cfg.stage} ({cfg.model.name})")
    print(f"\nrun folder:  {run_dir}")
    print(f"metrics:     {metrics}")
    print(f"curves:      {curves if curves else '(nothing to plot)'}")
    print(f"checkpoint:  {run_dir / 'checkpoints' / 'last'} (step {run.state['step']})")
    if run.state["best_val"] is not None:
        best = run.state["best_val"]
        print(f"best:        {run_dir / 'checkpoints' / 'best'} (validation reward {best:.4f} "
              f"at step {run.state['best_step']})")  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# one training step


def grpo_step(run: Run) -> dict[str, Any]:
    """Roll out, filter and refill (dynamic sampling), then one PPO-clip update on the kept groups."""
    cfg, optimizer = run.cfg, run.optimizer
    with generation_weights(run):
        row, sequences, kept, rounds = episode_rollouts(run) if run.episodes else step_rollouts(run)
    if 0 < kept < cfg.trainer.batch_size:
        print(
            f"note: {kept}/{cfg.trainer.batch_size} prompts kept after {rounds} "
            "sampling rounds (grpo.max_sampling_rounds); training on the partial batch",
            file=sys.stderr,
        )
    started = time.perf_counter()
    run.generator.sleep()  # a GPU engine frees its memory while the trainer updates
    if run.world.sum(len(sequences)):  # on any rank: all ranks take part in the update
        row.update(policy_update(cfg, run.model, run.reference, optimizer, sequences, run.world))
    else:
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()  # no gradients: parameters stay, but the optimizer/scheduler step order stays normal
        row.update({"loss": None, "tokens": 0, "skipped_update": True})
        print(
            f"warning: no prompt passed the {cfg.grpo.filter} filter in {rounds} rounds; no update this step",
            file=sys.stderr,
        )
    row["seconds_training"] = time.perf_counter() - started
    return row


def step_rollouts(run: Run) -> tuple[dict[str, Any], list[Sequence], int, int]:
    """Completions of step examples (SRL, math RLVR): the metrics row, what to train on, how many
    prompts were kept, sampling rounds."""
    cfg = run.cfg
    assert run.reward is not None, "a stage of step examples has a reward"
    console = SamplingConsole(cfg.trainer.progress, cfg.grpo.group_size) if run.world.main else None
    collected = collect_groups(
        run.stream,
        cfg.trainer.batch_size,
        run.prompts,
        run.generator,
        run.reward,
        cfg.grpo,
        cfg.generation.max_new_tokens,
        cfg.generation.temperature,
        run.world,
        console,
    )
    merged = collected.everywhere(run.world)
    row: dict[str, Any] = {
        **step_stats(merged, cfg.grpo.filter_eps),
        "filter": cfg.grpo.filter,
        "seconds_generation": merged.seconds_generation,
        "seconds_reward": merged.seconds_reward,
    }
    return row, step_sequences(collected.kept), len(merged.kept), collected.rounds


def episode_rollouts(run: Run) -> tuple[dict[str, Any], list[Sequence], int, int]:
    """Agent episodes of tasks (SWE RLVR): the metrics row, what to train on, how many tasks were
    kept, sampling rounds. Names the tasks filtered and those whose episodes all failed to run."""
    cfg = run.cfg
    assert run.episodes is not None, "an episode stage has its runner"
    collected = run.episodes.collect(run.stream, cfg.trainer.batch_size, cfg.grpo, run.world)
    merged = collected.everywhere(run.world)
    row: dict[str, Any] = {**swe_rlvr.collected_stats(merged), "filter": cfg.grpo.filter}
    if row["infrastructure_failed_tasks"]:
        print(
            f"warning: every episode of {', '.join(row['infrastructure_failed_tasks'])} failed for "
            f"infrastructure reasons ({row['masked_reasons']}); they are left out, not scored 0",
            file=sys.stderr,
        )
    return row, episode_sequences(collected.kept), len(merged.kept), collected.rounds


def sft_step(run: Run) -> dict[str, Any]:
    """Next-token loss on `trainer.batch_size` expert steps wrapped in the output contract."""
    cfg, tokenizer, world = run.cfg, run.tokenizer, run.world
    examples = world.shard(run.stream.take(cfg.trainer.batch_size))  # every rank draws the same
    end = end_of_turn_id(tokenizer)
    sequences = [
        Sequence(
            run.prompts(ex),
            tokenizer(sft_completion(ex.target, cfg), add_special_tokens=False)["input_ids"] + [end],
        )
        for ex in examples
    ]
    started = time.perf_counter()
    stats = sft_update(cfg, run.model, run.optimizer, sequences, world)
    return {
        "reward_mean": None,
        "reward_std": None,
        "format_error_rate": None,
        "zero_std_fraction": None,
        "kept_prompts": cfg.trainer.batch_size,
        "sampled_prompts": cfg.trainer.batch_size,
        "loss": stats["loss"],
        "grad_norm": stats["grad_norm"],
        "tokens": stats["tokens"],
        "seconds_generation": 0.0,
        "seconds_reward": 0.0,
        "seconds_training": time.perf_counter() - started,
    }


def sft_completion(target: str, cfg: TrainConfig) -> str:
    """What the policy itself writes for the SFT target: the wrapped step minus the prompt's prefill."""
    text = sft_target(target, cfg.sft.think_text)
    if not text.startswith(cfg.prompt.prefill):
        raise ConfigError(
            f"prompt.prefill {cfg.prompt.prefill!r} is not how the SFT target starts ({text[:20]!r})"
        )
    return text[len(cfg.prompt.prefill) :]


@contextlib.contextmanager
def generation_weights(run: Run) -> Iterator[None]:
    """While the ranks generate: the generator awake and, when it samples from the policy itself
    (HF), a sharded model's full weights on each rank (an engine that owns its weights needs none)."""
    run.generator.wake()
    with contextlib.nullcontext() if run.generator.owns_weights else gathered(run.model):
        yield


def sync_weights(run: Run) -> dict[str, float]:
    """Hand the policy's current weights to the generator: the seconds it took when the generator holds
    its own copy (vLLM: in memory, a sharded model's tensors gathered on every rank together); nothing
    to time for one that samples from the policy itself (HF)."""
    started = time.perf_counter()
    run.generator.update_weights(run.model)
    return {"seconds_weight_sync": time.perf_counter() - started} if run.generator.owns_weights else {}


def validate(run: Run, step: int) -> dict[str, float]:
    """Held-out metrics (`val_*`); saves checkpoints/best when the step reward is the best so far."""
    world = run.world
    with generation_weights(run):
        if run.val_episodes is not None:  # agent episodes on rank 0 alone, its summary for every rank
            summary = run.val_episodes.validate(run.val_examples) if world.main else {}
            summary = world.gather(summary)[0]
        else:
            summary = validation(run.cfg, run.val_examples, run.prompts, run.generator, run.reward, world)
    best = run.state["best_val"]
    value = summary.get("val_reward_mean")  # None when no validation episode could be scored
    if value is not None and run.cfg.trainer.keep_best and (best is None or value > best):
        run.state["best_val"], run.state["best_step"] = summary["val_reward_mean"], step
        info = {"step": step, "val_reward_mean": run.state["best_val"]}
        ckpt.save_model(run, run.run_dir / "checkpoints" / "best", None, info)
    return summary


def validation(
    cfg: ResolvedTrainConfig,
    examples: list[StepExample],
    prompts: PromptCache,
    generator: Generator,
    reward: Reward,
    world: World = ONE_PROCESS,
) -> dict[str, float]:
    """Greedy held-out reward and format-error rate, as `val_*` metrics (empty without validation
    data); on several ranks each evaluates its share and the means are over all examples."""
    if not examples:
        return {}
    started = time.perf_counter()
    mine = world.shard(examples)
    rows = (
        evaluate_examples(
            mine,
            prompts,
            generator,
            reward,
            cfg.generation.max_new_tokens,
            cfg.generation.temperature,
            greedy=True,
        ).rows
        if mine
        else []
    )
    summary = summarize([r for part in world.gather(rows) for r in part])
    out = {f"val_{k}": v for k, v in summary.items()}
    out["seconds_validation"] = time.perf_counter() - started
    return out


if __name__ == "__main__":
    run_cli(main)
