"""Train a policy with SRL (default), RLVR or SFT: `python -m srl_agent.train --task {swe,math}`.

Reads top to bottom: resolve the config, make the run folder, load data and model (resuming from
checkpoints/last when there is one), then per training step: sample prompts, roll out G completions
each, score them, refill until the batch of kept prompts is full (dynamic sampling), compute advantages,
update with a PPO-clip loss over micro-batches, log, validate, checkpoint. It ends by plotting the curves
and printing where the run folder, curves and checkpoints are.

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
import dataclasses
import gc
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from srl_agent.config import OptimConfig, TrainConfig
from srl_agent.distributed import ONE_PROCESS, World
from srl_agent.tasks import TASKS, StageSpec, resolve, task_spec
from trajectories.config import (
    ConfigError,
    add_config_arguments,
    dump_config,
    explain_config,
    resolve_config,
    run_cli,
)

# Keys that may change between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = {
    "trainer.steps",
    "trainer.progress",
    "trainer.tensorboard",
    "trainer.wandb",
    "trainer.gradient_checkpointing",  # memory for compute; the update is the same
    "generation.share_prefill",  # the same completions, faster
}


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


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[TrainConfig]]:
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

    def stage(name: str, extra: list[str]) -> TrainConfig:
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
    from srl_agent import checkpoint as ckpt

    for name in ("best", "last"):
        found = ckpt.find_checkpoint(run_dir / "checkpoints" / name)
        if found is not None:
            return found
    raise ConfigError(f"{run_dir}: the stage left no checkpoint to start the next stage from")


def train_stage(cfg: TrainConfig) -> None:
    """Train one resolved stage to `trainer.steps` in its run folder (resuming checkpoints/last), on
    this process or, launched by torchrun, on all its ranks (`srl_agent.distributed`)."""
    from srl_agent.distributed import init_world

    world = init_world()
    with contextlib.ExitStack() as closing:  # SWE RLVR's environments: removed however the run ends
        if not world.main:  # one rank reports; the others' stdout would repeat it
            devnull = closing.enter_context(open(os.devnull, "w"))
            closing.enter_context(contextlib.redirect_stdout(devnull))
        run, last = setup_run(cfg, world, closing)
        train_run(run, last)


def setup_run(cfg: TrainConfig, world: World, closing: contextlib.ExitStack) -> tuple[Run, Path | None]:
    """The run folder, data, model, optimizer and generator of a stage, and checkpoints/last if the
    run resumes. Rank 0 makes the folder and writes the data split; the others wait and read it."""
    import torch

    from srl_agent import checkpoint as ckpt
    from srl_agent import swe_rlvr
    from srl_agent.data import DataStream
    from srl_agent.distributed import shard_model
    from srl_agent.generation import make_generator
    from srl_agent.models import load_policy, load_reference
    from srl_agent.prompts import PromptCache

    stage = task_spec(cfg.task).stage(cfg.stage)
    run_dir = prepare_run_dir(cfg) if world.main else Path(cfg.run_dir.format(task=cfg.task, stage=cfg.stage))
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
    prompts = PromptCache(tokenizer, stage.system_prompt, stage.user_turn, cfg.prompt)
    generator = make_generator(model, tokenizer, cfg.generation, cfg.model.dtype, cfg.prompt.prefill)
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
        prompts=prompts,
        generator=generator,
        reward=stage.reward(cfg.reward, cfg.prompt.prefill) if stage.reward else None,
        stage=stage,
        world=world,
    )
    if stage.episodes:
        run.episodes, run.val_episodes = swe_rlvr.make_runners(
            cfg, run_dir, model, generator, prompts, closing
        )
    return run, last


def train_run(run: Run, last: Path | None) -> None:
    """Train `run` to `trainer.steps`, from checkpoints/last when given; then report."""
    from srl_agent.runlog import RunLog, summary_line

    cfg, val_examples = run.cfg, run.val_examples
    if last is not None:
        restore(run, last)
    sync_weights(run)  # an engine starts from the model's files: give it the weights training starts from
    log = (
        RunLog(
            run.run_dir,
            run.state["step"] if last is not None else -1,
            cfg.trainer.tensorboard,
            cfg.trainer.wandb,
            cfg.trainer.wandb_project,
            cfg.model_dump(mode="json"),
        )
        if run.world.main
        else NullLog()
    )

    if run.state["step"] == 0 and cfg.trainer.validate_at_start and val_examples:
        row = {"step": 0, **validate(run, 0)}
        log.write(row)
        print(summary_line(row), flush=True)
    with progress_bar(cfg.trainer.progress, cfg.trainer.steps, run.state["step"]) as advance:
        while run.state["step"] < cfg.trainer.steps:
            row = train_step(run)
            log.write(row)
            advance(row)
            if row["step"] == cfg.trainer.steps or row["step"] % max(cfg.trainer.save_every, 1) == 0:
                save_last(run)
    log.close()
    if run.world.main:
        report(run, log.path)


@dataclass
class Run:
    """Everything one training run holds; `state` (step, best validation) is saved with each checkpoint."""

    cfg: TrainConfig
    run_dir: Path
    model: Any
    tokenizer: Any
    reference: Any
    optimizer: Any
    scheduler: Any
    stream: Any
    val_examples: list[Any]
    prompts: Any
    generator: Any
    reward: Any
    stage: StageSpec
    state: dict[str, Any] = field(default_factory=lambda: {"step": 0, "best_val": None, "best_step": None})
    episodes: Any = None
    """SWE RLVR: the `swe_rlvr.EpisodeRunner` that samples episodes (None for step-example stages)."""
    val_episodes: Any = None
    """SWE RLVR: the one that runs greedy validation episodes."""
    world: World = ONE_PROCESS
    """This process's rank among the training processes (`srl_agent.distributed`)."""


class NullLog:
    """The metrics log of a rank other than 0: rank 0 writes the one log."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


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


def generation_weights(run: Run) -> contextlib.AbstractContextManager:
    """While a sharded model's ranks generate: its full weights on each rank when the generator
    samples from the policy itself (HF); nothing when it holds its own copy (a vLLM engine)."""
    from srl_agent.distributed import gathered

    return contextlib.nullcontext() if hasattr(run.generator, "update_weights") else gathered(run.model)


def sync_weights(run: Run) -> dict[str, float]:
    """Hand the policy's current weights to a generator that holds its own copy (vLLM), in memory;
    the HF generator samples from the policy itself and needs nothing."""
    update = getattr(run.generator, "update_weights", None)
    if update is None:
        return {}
    started = time.perf_counter()
    update(run.model)  # a sharded model's tensors are gathered one at a time, on every rank together
    return {"seconds_weight_sync": time.perf_counter() - started}


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
        save_model(run, run.run_dir / "checkpoints" / "best", None, info)
    return summary


def save_last(run: Run) -> None:
    """checkpoints/last: model, optimizer, scheduler, data position, RNG states and run state."""
    from srl_agent.checkpoint import rng_state
    from srl_agent.distributed import full_optimizer_state

    trainer_state = {
        "optimizer": full_optimizer_state(run.model, run.optimizer),
        "scheduler": run.scheduler.state_dict(),
        "data": run.stream.state(),
        "rng": rng_state(),
        "rng_ranks": run.world.gather(rng_state()),
        "state": dict(run.state),
    }
    info = {"step": run.state["step"], **run.stream.state(), "best_val": run.state["best_val"]}
    if run.world.size > 1:
        info["world_size"] = run.world.size
    save_model(run, run.run_dir / "checkpoints" / "last", trainer_state, info)


def save_model(run: Run, folder: Path, trainer_state: dict[str, Any] | None, info: dict[str, Any]) -> None:
    """A checkpoint of the whole model (gathered from the ranks of a sharded one), written by rank 0;
    every rank calls it (the gathering is a collective)."""
    from srl_agent.checkpoint import save_checkpoint
    from srl_agent.distributed import full_model_state

    weights = full_model_state(run.model)
    if run.world.main:
        save_checkpoint(folder, run.model, run.tokenizer, trainer_state, info, weights)
    run.world.barrier()  # no rank reads the folder before it is complete


def restore(run: Run, last: Path) -> None:
    """Continue exactly where checkpoints/last stopped (the model weights were loaded from it already)."""
    from srl_agent.checkpoint import load_trainer_state, set_rng_state
    from srl_agent.distributed import load_optimizer_state

    saved = load_trainer_state(last)
    load_optimizer_state(run.model, run.optimizer, saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.stream.restore(saved["data"])
    ranks = saved.get("rng_ranks", [saved["rng"]])
    if len(ranks) == run.world.size:  # the same ranks: each goes on with its own random numbers
        set_rng_state(ranks[run.world.rank])
    else:  # another world size: rank 0's state, each rank's sampling seeded apart
        set_rng_state(saved["rng"])
        if run.world.rank:
            import torch

            torch.manual_seed(int(torch.randint(2**31, ())) + run.world.rank)
    run.state = saved["state"]
    print(f"resuming from {last} at step {run.state['step']}")


def report(run: Run, metrics: Path) -> None:
    from srl_agent.runlog import plot_curves

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
# setup


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Create the run folder and save the resolved config; refuse to resume a run with another config."""
    run_dir = Path(cfg.run_dir.format(task=cfg.task, stage=cfg.stage))
    saved = run_dir / "config.yaml"
    has_checkpoint = (run_dir / "checkpoints" / "last").exists() or (
        run_dir / "checkpoints" / "last.old"
    ).exists()
    if has_checkpoint and not cfg.trainer.resume:
        shutil.rmtree(run_dir / "checkpoints")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    elif has_checkpoint and saved.is_file():
        before = _flatten(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
        now = _flatten(cfg.model_dump(mode="json"))
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        changed = [k for k in changed if k not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(
                f"{run_dir} holds a run with a different config ({', '.join(changed)}); "
                "use another run_dir, or trainer.resume=false to start it over"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(dump_config(cfg), encoding="utf-8")
    return run_dir


def load_examples(cfg: TrainConfig, run_dir: Path, resume: bool) -> tuple[list[Any], list[Any]]:
    """Train and validation step examples (whole problems only, for RLVR)."""
    from srl_agent.data import load_splits

    spec = task_spec(cfg.task)
    source = spec.data_source(cfg.data.source)
    splits = load_splits(cfg.task, source, cfg.data, run_dir / "data", reuse=resume)
    select = spec.stage(cfg.stage).examples
    train, val = select(splits.train), select(splits.val)
    if not train:
        raise ConfigError(f"data.source: {splits.source} has no examples for stage {cfg.stage}")
    print(f"data: {len(train)} train / {len(val)} validation examples from {splits.source}")
    return train, val


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def make_optimizer(model: Any, cfg: OptimConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW and transformers' LR schedule for `cfg.schedule` (stepped once per training step)."""
    import torch
    from transformers import get_scheduler

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
    if hasattr(run.generator, "sleep"):  # a GPU engine frees its memory while the trainer updates
        run.generator.sleep()
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
    from srl_agent.rollouts import collect_groups
    from srl_agent.runlog import SamplingConsole

    cfg = run.cfg
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
    merged = everywhere(collected, run.world)
    row: dict[str, Any] = {
        **merged.stats(cfg.grpo.filter_eps),
        "filter": cfg.grpo.filter,
        "seconds_generation": merged.seconds_generation,
        "seconds_reward": merged.seconds_reward,
    }
    sequences = [
        Sequence(g.prompt, c.token_ids, a, c.logprobs)
        for g in collected.kept
        for c, a, scored in zip(g.completions, g.advantages, g.scores, strict=True)
        if scored.masked is None  # no reward could be computed: nothing to learn from it
    ]
    return row, sequences, len(merged.kept), collected.rounds


def episode_rollouts(run: Run) -> tuple[dict[str, Any], list[Sequence], int, int]:
    """Agent episodes of tasks (SWE RLVR): the metrics row, what to train on, how many tasks were
    kept, sampling rounds. Names the tasks filtered and those whose episodes all failed to run."""
    cfg = run.cfg
    collected = run.episodes.collect(run.stream, cfg.trainer.batch_size, cfg.grpo, run.world)
    merged = everywhere(collected, run.world)
    row: dict[str, Any] = {**merged.stats(), "filter": cfg.grpo.filter}
    if row["infrastructure_failed_tasks"]:
        print(
            f"warning: every episode of {', '.join(row['infrastructure_failed_tasks'])} failed for "
            f"infrastructure reasons ({row['masked_reasons']}); they are left out, not scored 0",
            file=sys.stderr,
        )
    return row, episode_sequences(collected.kept), len(merged.kept), collected.rounds


def everywhere(collected: Any, world: World) -> Any:
    """One step's collected groups of all ranks, for its metrics (this rank's alone on one process):
    the groups of every rank, the rounds (the same on all), the seconds of the slowest rank."""
    if world.size == 1:
        return collected
    parts = world.gather(collected)
    merged = dataclasses.replace(
        collected,
        kept=[g for p in parts for g in p.kept],
        sampled=[g for p in parts for g in p.sampled],
    )
    for name in ("seconds_generation", "seconds_reward", "seconds_rollouts"):
        if hasattr(merged, name):
            setattr(merged, name, max(getattr(p, name) for p in parts))
    if hasattr(merged, "batch_sizes"):
        merged.batch_sizes = [b for p in parts for b in p.batch_sizes]
    return merged


def episode_sequences(groups: list[Any]) -> list[Sequence]:
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


@dataclass
class Sequence:
    """One rollout to train on: prompt and completion token ids, its advantage, the sampler's
    per-token log-probabilities (None when the generator reports none)."""

    prompt: list[int]
    completion: list[int]
    advantage: float
    sampler_logprobs: list[float] | None = None


def policy_update(
    cfg: TrainConfig,
    model: Any,
    reference: Any,
    optimizer: Any,
    sequences: list[Sequence],
    world: World = ONE_PROCESS,
) -> dict[str, Any]:
    """PPO-clip (+ optional KL) over micro-batches with gradient accumulation, `grpo.ppo_epochs` times.

    With one epoch the old log-probs are the current ones detached (the policy has not moved since it
    generated), which saves a forward pass; with more, they are computed once before the first update.
    The first pass also measures how far the trainer's log-probs are from the sampler's
    (`logprob_gap_mean`/`_max`: ~0 for the same weights and numerics, larger with another engine or dtype).

    On several ranks, `sequences` are this rank's: the loss is normalised by the counts of all ranks
    and the gradients summed over them, so the update is the one of all sequences on one process.
    """
    import torch

    from srl_agent import grpo
    from srl_agent.distributed import full_norm
    from srl_agent.logprobs import completion_logprobs, pack

    pad, device, temp = model.config.pad_token_id or 0, model.device, cfg.generation.temperature
    micro = micro_batches(sequences, cfg.trainer.micro_batch_size, cfg.trainer.micro_batch_tokens)
    # a group's rollouts share their prompt: run it once per micro-batch (the KV cache that needs is
    # what gradient checkpointing drops, so a checkpointed model keeps the plain layout); on several
    # ranks every micro-batch takes the same layout, so that the ranks' passes pair up
    share = not getattr(model, "is_gradient_checkpointing", False) and ("always" if world.size > 1 else True)
    batches = [pack([s.prompt for s in m], [s.completion for s in m], pad, device, share) for m in micro]
    advantages = [torch.tensor([s.advantage for s in m], dtype=torch.float32, device=device) for m in micro]
    sampler = [sampler_logprobs(m, b["mask"]) for m, b in zip(micro, batches, strict=True)]
    for _ in range(int(world.max(len(micro))) - len(micro)):  # every rank runs as many passes
        batches.append(empty_batch(pad, device, share))
        advantages.append(torch.zeros(1, device=device))
        sampler.append(None)
    total_tokens = world.sum(sum(len(s.completion) for s in sequences))
    total_sequences = world.sum(len(sequences))
    old: list[torch.Tensor | None] = [None] * len(batches)
    if cfg.grpo.ppo_epochs > 1:
        with torch.no_grad():
            old = [completion_logprobs(model, b, temp, cfg.model.dtype) for b in batches]
    aggregate = grpo.LOSS_AGG[cfg.grpo.loss_agg]
    stats = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0}
    gaps: list[tuple[float, float, float]] = []
    for epoch in range(cfg.grpo.ppo_epochs):
        optimizer.zero_grad(set_to_none=True)
        for batch, adv, old_logp, sampled in zip(batches, advantages, old, sampler, strict=True):
            logp = completion_logprobs(model, batch, temp, cfg.model.dtype)
            if epoch == 0 and sampled is not None:
                gaps.append(grpo.logprob_gap(logp.detach(), sampled, batch["mask"]))
            per_token, clipped = grpo.ppo_clip_loss(
                logp,
                logp.detach() if old_logp is None else old_logp,
                adv,
                batch["mask"],
                cfg.grpo.clip_eps,
                cfg.grpo.clip_eps_high,
            )
            if reference is not None:
                with torch.no_grad():
                    ref_logp = completion_logprobs(reference, batch, temp, cfg.model.dtype)
                kl = grpo.KL_ESTIMATORS[cfg.grpo.kl_estimator](logp, ref_logp)
                per_token = per_token + cfg.grpo.kl_coef * kl
                stats["kl"] += (kl * batch["mask"]).sum().item() / total_tokens / cfg.grpo.ppo_epochs
            loss = aggregate(per_token, batch["mask"], total_tokens, total_sequences)
            # a sharded model's gradients are averaged over the ranks: times W makes them the sum
            (loss * world.size).backward()
            stats["loss"] += loss.item() / cfg.grpo.ppo_epochs
            stats["clip_fraction"] += float(clipped.sum()) / total_tokens / cfg.grpo.ppo_epochs
        stats["grad_norm"] = full_norm(
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        )
        optimizer.step()
    stats = {k: v if k == "grad_norm" else world.sum(v) for k, v in stats.items()}
    gap_tokens = world.sum(sum(g[2] for g in gaps))
    if gap_tokens:
        stats["logprob_gap_mean"] = world.sum(sum(g[0] for g in gaps)) / gap_tokens
        stats["logprob_gap_max"] = world.max(max((g[1] for g in gaps), default=0.0))
    return {**stats, "tokens": int(total_tokens), "sequences": int(total_sequences)}


def empty_batch(pad: int, device: Any, share_prompts: Any = False) -> dict[str, Any]:
    """A micro-batch that trains on nothing (its mask is 0), in the layout `share_prompts` gives: a
    rank with fewer micro-batches than another runs these, because every forward of a sharded model
    is a collective."""
    from srl_agent.logprobs import pack

    batch = pack([[pad]], [[pad]], pad, device, share_prompts)
    batch["mask"].zero_()
    return batch


def micro_batches(sequences: list[Sequence], size: int, tokens: Any = None) -> list[list[Sequence]]:
    """`sequences` in micro-batches of at most `size`; with a `tokens` cap, sorted by length and cut
    so that no micro-batch pads past `tokens` (a longer sequence goes alone). The gradient is the sum
    over micro-batches, so neither changes the update, only its memory."""
    if not isinstance(tokens, int):
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


def sampler_logprobs(micro: list[Sequence], mask: Any) -> Any:
    """The sampler's log-probs of a micro-batch laid out like its completion `mask` [N, T] (None
    when some rollout has none)."""
    import torch

    if any(s.sampler_logprobs is None for s in micro):
        return None
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for i, s in enumerate(micro):
        if s.sampler_logprobs:
            out[i, : len(s.sampler_logprobs)] = torch.tensor(s.sampler_logprobs, dtype=torch.float32)
    return out


def sft_step(run: Run) -> dict[str, Any]:
    """Next-token loss on `trainer.batch_size` expert steps wrapped in the output contract."""
    import torch

    from srl_agent import grpo
    from srl_agent.distributed import full_norm
    from srl_agent.generation.hf import end_of_turn_id
    from srl_agent.logprobs import completion_logprobs, pack

    cfg, model, tokenizer, optimizer, prompts = run.cfg, run.model, run.tokenizer, run.optimizer, run.prompts
    world, pad = run.world, model.config.pad_token_id or 0
    examples = world.shard(run.stream.take(cfg.trainer.batch_size))  # every rank draws the same
    end = end_of_turn_id(tokenizer)
    targets = [
        tokenizer(sft_completion(ex.target, cfg), add_special_tokens=False)["input_ids"] + [end]
        for ex in examples
    ]
    pairs = [(prompts(ex), t) for ex, t in zip(examples, targets, strict=True)]
    total_tokens = world.sum(sum(len(t) for t in targets))
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    size = cfg.trainer.micro_batch_size
    batches = [
        pack([p for p, _ in pairs[i : i + size]], [t for _, t in pairs[i : i + size]], pad, model.device)
        for i in range(0, len(pairs), size)
    ]
    for _ in range(int(world.max(len(batches))) - len(batches)):  # every rank runs as many passes
        batches.append(empty_batch(pad, model.device))
    for batch in batches:
        logp = completion_logprobs(model, batch, 1.0, cfg.model.dtype)
        loss = grpo.token_mean(
            grpo.sft_token_loss(logp, batch["mask"]), batch["mask"], total_tokens, cfg.trainer.batch_size
        )
        (loss * world.size).backward()  # the sum over ranks of a sharded model's gradients
        loss_sum += loss.item()
    grad_norm = full_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm))
    optimizer.step()
    loss_sum = world.sum(loss_sum)
    return {
        "reward_mean": None,
        "reward_std": None,
        "format_error_rate": None,
        "zero_std_fraction": None,
        "kept_prompts": cfg.trainer.batch_size,
        "sampled_prompts": cfg.trainer.batch_size,
        "loss": loss_sum,
        "grad_norm": grad_norm,
        "tokens": int(total_tokens),
        "seconds_generation": 0.0,
        "seconds_reward": 0.0,
        "seconds_training": time.perf_counter() - started,
    }


def sft_completion(target: str, cfg: TrainConfig) -> str:
    """What the policy itself writes for the SFT target: the wrapped step minus the prompt's prefill."""
    from srl_agent.prompts import sft_target

    text = sft_target(target, cfg.sft.think_text)
    if not text.startswith(cfg.prompt.prefill):
        raise ConfigError(
            f"prompt.prefill {cfg.prompt.prefill!r} is not how the SFT target starts ({text[:20]!r})"
        )
    return text[len(cfg.prompt.prefill) :]


def validation(
    cfg: TrainConfig,
    examples: list[Any],
    prompts: Any,
    generator: Any,
    reward: Any,
    world: World = ONE_PROCESS,
) -> dict[str, float]:
    """Greedy held-out reward and format-error rate, as `val_*` metrics (empty without validation
    data); on several ranks each evaluates its share and the means are over all examples."""
    from srl_agent.rollouts import evaluate_examples, summarize

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


def progress_bar(enabled: bool, total: int, done: int) -> Any:
    """A context manager yielding `advance(row)`: a rich progress bar, or plain lines when disabled."""
    from contextlib import contextmanager

    from srl_agent.runlog import summary_line

    @contextmanager
    def bar() -> Any:
        if not enabled:
            yield lambda row: print(summary_line(row), flush=True)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        ) as progress:
            task = progress.add_task("train", total=total, completed=done)

            def advance(row: dict[str, Any]) -> None:
                progress.console.print(summary_line(row))
                progress.update(task, completed=row["step"])

            yield advance

    return bar()


if __name__ == "__main__":
    run_cli(main)
