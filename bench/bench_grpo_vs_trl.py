"""One GRPO step of srl-agent against TRL's GRPOTrainer (the `bench` extra): seconds per step, peak memory.

    pip install -e '.[bench]'   # TRL, the baseline
    python bench/bench_grpo_vs_trl.py [--steps 3] [--group 8] [--max-new-tokens 64] [--threads 2]
        [--gradient-checkpointing] [--order srl,trl|trl,srl] [--only srl|trl] [--out runs/bench-grpo-vs-trl]

Both frameworks train the embedded default (SmolLM2-135M, float32, CPU) on the same prompts with the same
settings, each in a fresh child process (so neither's memory peak or threads mix with the other's):
- the prompts are srl-agent's own math SRL prompts (`PromptCache`, the math SRL stage, the bundled math
  steps): step k trains on the k-th example srl-agent's data stream draws with its seed. TRL gets each
  prompt as text, already chat-templated with the prefill; the bench checks that TRL's tokenization of
  it gives exactly srl-agent's prompt token ids (220-270 tokens);
- one step: 1 prompt x G rollouts x at most `--max-new-tokens` tokens (no stop string, no step-end rule:
  a rollout ends at the cap or at the end-of-turn token), temperature 1.0 from the full distribution
  (top_k 0, top_p 1), srl-agent's step similarity reward against the example's expert step (TRL calls the
  same `StepSimilarityReward`), group-normalised advantages, PPO clip 0.2, one PPO epoch, a token-mean
  loss over the whole batch (srl-agent `token_mean`, TRL `dapo`), KL 0, no filter, one forward/backward
  of all G sequences, AdamW at a constant `--lr`, gradient clipping at 1.0, no gradient checkpointing
  (srl-agent's default; TRL's default is on: `--gradient-checkpointing` turns it on for both).
  Left different on purpose, each framework's own: TRL's advantage divides by the sample std + 1e-4,
  srl-agent's by the population std + 1e-6 (the same direction, a few percent in scale); TRL's forward
  also computes the entropy; srl-agent's sampler also keeps its per-token log-probs.
- srl-agent runs `srl_agent.train.main` (what `python -m srl_agent.train --task math` runs) and its
  seconds per step are `seconds_total` of metrics.jsonl (rollouts, reward, update, scheduler; not model
  loading, logging or checkpointing). TRL's are timed by a callback from `on_step_begin` to `on_step_end`
  (generation, reward, loss, backward, optimizer; not setup or logging); its generation time is
  `_generate_and_score_completions` (generation, reward, advantages).
- CPU seconds per step (all threads of the process, `time.process_time`) go with the wall seconds, split
  the same way (srl-agent's generation: `rollouts.collect_groups`, sampling and reward): on a shared
  machine they change less with the other jobs' load (time spent waiting for a core is not counted).
- Memory: the peak RSS during the training steps (Linux VmHWM, reset at the start of each step and read
  at its end; the max over the steps), and the whole process's peak (`ru_maxrss`: loading and, for
  srl-agent, the final checkpoint too).

It prints per-step seconds (all steps, and the mean of steps 2..N: step 1 warms up), the split into
generation and training, CPU seconds, completion tokens, peak memory, and the ratios (TRL seconds /
srl-agent seconds: srl-agent's speed-up; srl-agent memory / TRL memory), then the machine (CPU, cores,
the load average while each framework ran, Python, torch, transformers, trl). The run folders and a
summary.json stay under `--out`; a run takes 10-15 minutes on 2 cores.

On a machine shared with other jobs the wall seconds follow their load: compare the CPU seconds, run
with `--threads 1` (with 2 threads and a load above the core count, OpenMP's threads spin waiting for
each other: srl-agent's generation took 97 s instead of 20 s), and swap `--order` to see the drift.
Measured so (AMD EPYC, 2 cores, `--threads 1`; torch 2.13, transformers 5.19, trl 1.16):
- before the shared prompt (each of the G rows ran the 232-token prompt in the update, and `generate`
  prefilled it G times), four runs, both orders, load 3-8 from other jobs: srl-agent 40-48 CPU s per
  step, TRL 59-64, 1.33-1.47x (wall 1.1-1.9x, following the load); peak RSS 7.2-7.5 GB against
  9.1-9.8 GB, 0.74-0.82x. With `--gradient-checkpointing`: 50 against 65 CPU s (1.30x), 4.66 against
  6.13 GB (0.76x);
- with it (one prefill per prompt in generation, one prompt pass per micro-batch in the update), load
  0.7-1.4: srl-agent 18.9 CPU s per step (generation 9.7, update 9.2), TRL 58.2 (14.3, 43.9): 3.08x
  (wall 3.42x); peak RSS 4.23 against 9.14 GB, 0.46x.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"srl": "srl-agent", "trl": "TRL"}


def srl_overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """srl-agent's config for the benchmark: the step described in the module docstring."""
    return [
        "model.name=smollm2-135m",
        "model.dtype=float32",
        f"run_dir={run_dir}",
        f"seed={args.seed}",
        f"trainer.steps={args.steps}",
        "trainer.batch_size=1",
        f"grpo.group_size={args.group}",
        f"trainer.micro_batch_size={args.group}",
        f"trainer.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
        f"generation.max_new_tokens={args.max_new_tokens}",
        "generation.stop=[]",
        "generation.stop_at_step_end=false",
        "generation.temperature=1.0",
        "generation.top_k=0",
        "generation.top_p=1.0",
        "grpo.max_sampling_rounds=1",
        "grpo.filter=none",
        "grpo.advantage=grpo",
        "grpo.loss_agg=token_mean",
        "grpo.clip_eps=0.2",
        "grpo.ppo_epochs=1",
        "grpo.kl_coef=0.0",
        f"optim.lr={args.lr}",
        "optim.schedule=constant",
        "optim.max_grad_norm=1.0",
        "trainer.validate_at_start=false",
        "trainer.val_every=0",
        "data.max_val_examples=0",
        f"trainer.save_every={args.steps}",
        "trainer.resume=false",
        "trainer.progress=false",
    ]


def reset_peak() -> None:
    """Reset this process's VmHWM (peak RSS) to its current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_gb() -> float:
    """VmHWM: this process's peak RSS since the last `reset_peak`, in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no VmHWM in /proc/self/status")


def process_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def worker_srl(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """srl-agent's training loop, as `python -m srl_agent.train --task math` runs it."""
    from srl_agent import train
    from srl_agent.runlog import read_metrics

    run_dir = out / "srl"
    step_peaks: list[float] = []
    cpu: list[float] = []
    generation_cpu: list[float] = []
    train_step, collect_groups = train.train_step, train.collect_groups

    def measured_collect(*a: Any, **k: Any) -> Any:  # the step's rollouts and rewards, with their CPU time
        started = time.process_time()
        collected = collect_groups(*a, **k)
        generation_cpu.append(time.process_time() - started)
        return collected

    def measured_step(run: Any) -> dict[str, Any]:  # the same step, with its memory peak and CPU time
        reset_peak()
        started = time.process_time()
        row = train_step(run)
        cpu.append(time.process_time() - started)
        step_peaks.append(peak_rss_gb())
        return row

    train.train_step, train.collect_groups = measured_step, measured_collect
    assert train.main(["--task", "math", *srl_overrides(args, run_dir)]) == 0
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "seconds_total" in r]
    return {
        "seconds": [r["seconds_total"] for r in rows],
        "cpu_seconds": cpu,
        "generation_cpu_seconds": generation_cpu,
        "generation": [r["seconds_generation"] + r["seconds_reward"] for r in rows],
        "completion_tokens": [r["completion_tokens_mean"] for r in rows],
        "reward_mean": [r["reward_mean"] for r in rows],
        "step_peak_gb": step_peaks,
        "process_peak_gb": process_peak_gb(),
    }


def step_prompts(
    args: argparse.Namespace, work_dir: Path, tokenizer: Any
) -> tuple[list[Any], list[str], Any]:
    """The examples srl-agent trains on at steps 1..N, their prompts as chat-templated text (with the
    prefill), and the reward; checks that the text tokenizes to srl-agent's prompt ids."""
    from srl_agent import train
    from srl_agent.data import DataStream, load_splits
    from srl_agent.prompts import PromptCache, messages
    from srl_agent.tasks import MATH

    _, [cfg] = train.parse_args(["--task", "math", *srl_overrides(args, work_dir)])
    stage = MATH.stage("srl")
    splits = load_splits("math", MATH.data_source(cfg.data.source), cfg.data, work_dir / "data")
    examples = DataStream(splits.train, cfg.seed).take(args.steps)
    cache = PromptCache(tokenizer, stage.system_prompt, stage.user_turn, cfg.prompt)
    texts = []
    for ex in examples:
        chat = messages(ex, cache.system, stage.user_turn, cfg.prompt.omitted_steps_note)
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        texts.append(text + cfg.prompt.prefill)
        if tokenizer(texts[-1])["input_ids"] != cache(ex):  # what TRL's `_tokenize_prompts` does
            raise SystemExit(f"{ex.example_id}: TRL would tokenize the prompt differently from srl-agent")
    return examples, texts, stage.reward(cfg.reward, cfg.prompt.prefill)


def worker_trl(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """TRL's GRPOTrainer on the same model, prompts, reward and settings; each step timed by a callback."""
    import datasets
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from srl_agent.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    examples, texts, reward = step_prompts(args, out / "trl", tokenizer)
    by_id = {ex.example_id: ex for ex in examples}

    def step_similarity(completions: list[str], example_id: list[str], **kwargs: Any) -> list[float]:
        return [reward(c, by_id[i]).reward for c, i in zip(completions, example_id, strict=True)]

    figures: dict[str, list[float]] = {
        "seconds": [],
        "cpu_seconds": [],
        "generation": [],
        "generation_cpu_seconds": [],
        "step_peak_gb": [],
    }
    logs_seen: list[dict[str, Any]] = []

    class StepTimer(TrainerCallback):
        started = cpu_started = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            reset_peak()
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            figures["seconds"].append(time.perf_counter() - self.started)
            figures["cpu_seconds"].append(time.process_time() - self.cpu_started)
            figures["step_peak_gb"].append(peak_rss_gb())

        def on_log(self, *a: Any, logs: dict[str, Any] | None = None, **k: Any) -> None:
            if logs and "completions/mean_length" in logs:
                logs_seen.append(dict(logs))

    config = GRPOConfig(
        output_dir=str(out / "trl" / "output"),
        use_cpu=True,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        max_steps=args.steps,
        per_device_train_batch_size=args.group,  # completions per device batch: 1 prompt x G
        num_generations=args.group,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",  # srl-agent's torch.optim.AdamW
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        shuffle_dataset=False,  # step k trains on prompt k, as srl-agent's stream draws them
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    dataset = datasets.Dataset.from_list(
        [{"prompt": t, "example_id": ex.example_id} for ex, t in zip(examples, texts, strict=True)]
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=step_similarity,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    trainer.remove_callback(PrinterCallback)  # its dict per step; the figures are printed at the end
    generate = trainer._generate_and_score_completions

    def timed_generate(inputs: Any) -> Any:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = generate(inputs)
        figures["generation"].append(time.perf_counter() - started)
        figures["generation_cpu_seconds"].append(time.process_time() - cpu_started)
        return result

    trainer._generate_and_score_completions = timed_generate
    trainer.train()
    return {
        **figures,
        "completion_tokens": [r["completions/mean_length"] for r in logs_seen],
        "reward_mean": [r.get("reward") for r in logs_seen],
        "process_peak_gb": process_peak_gb(),
    }


def run_worker(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    """One framework's run in a fresh child process; its figures plus the load average around it."""
    result = args.out / f"{framework}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", framework, "--out", str(args.out)]
    command += ["--threads", str(args.threads)]
    load_before = os.getloadavg()
    print(f"running {FRAMEWORKS[framework]} ({args.steps} steps) ...", flush=True)
    proc = subprocess.Popen(command, env=env, cwd=REPO)
    loads = []  # the 1-minute load average every 10 s while it runs (it counts this run's threads too)
    while True:
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            loads.append(os.getloadavg()[0])
    if proc.returncode != 0:
        raise SystemExit(f"{FRAMEWORKS[framework]} failed (exit {proc.returncode}); its output is above")
    return {
        **json.loads(result.read_text()),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "load_during": [min(loads, default=0.0), statistics.fmean(loads or [0.0]), max(loads, default=0.0)],
    }


def mean_after_first(values: list[float]) -> float:
    return statistics.fmean(values[1:] if len(values) > 1 else values)


def versions() -> str:
    import importlib.metadata as md

    found = []
    for name in ("torch", "transformers", "trl"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            found.append(f"{name} absent")
    return ", ".join(found)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    later = f"steps 2-{args.steps}" if args.steps > 2 else "step 2" if args.steps == 2 else "step 1"
    print(
        f"\nGRPO step, SmolLM2-135M float32 on the CPU ({args.threads} threads): 1 prompt x {args.group} "
        f"rollouts x <= {args.max_new_tokens} tokens, srl-agent's math SRL prompts, {args.steps} steps, "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}"
    )
    header = f"{'':<34}" + "".join(f"{FRAMEWORKS[n]:>12}" for n in names)
    print(header + (f"{'ratio':>9}" if len(names) == 2 else ""))

    def line(label: str, values: list[float], ratio: float | None, fmt: str = ".1f") -> None:
        cells = "".join(f"{v:>12{fmt}}" for v in values)
        print(f"{label:<34}{cells}" + (f"{ratio:>8.2f}x" if ratio is not None else ""))

    def both(key: str, reduce: Any) -> list[float]:
        return [reduce(results[n][key]) for n in names]

    pair = len(names) == 2 and names == ["srl", "trl"]
    step = both("seconds", mean_after_first)
    line(f"seconds per step ({later})", step, step[1] / step[0] if pair else None)
    for k in range(args.steps):
        values = [results[n]["seconds"][k] for n in names]
        line(f"  step {k + 1}", values, values[1] / values[0] if pair else None)
    gen = both("generation", mean_after_first)
    line(f"  generation + reward ({later})", gen, gen[1] / gen[0] if pair else None)
    rest = [s - g for s, g in zip(step, gen, strict=True)]
    line(f"  update ({later})", rest, rest[1] / rest[0] if pair else None)
    cpu = both("cpu_seconds", mean_after_first)
    line(f"CPU seconds per step ({later})", cpu, cpu[1] / cpu[0] if pair else None)
    gen_cpu = both("generation_cpu_seconds", mean_after_first)
    line(f"  generation + reward ({later})", gen_cpu, gen_cpu[1] / gen_cpu[0] if pair else None)
    rest_cpu = [s - g for s, g in zip(cpu, gen_cpu, strict=True)]
    line(f"  update ({later})", rest_cpu, rest_cpu[1] / rest_cpu[0] if pair else None)
    line("completion tokens per rollout", both("completion_tokens", statistics.fmean), None)
    peak = both("step_peak_gb", max)
    line("peak RSS in the steps (GB)", peak, peak[0] / peak[1] if pair else None, ".2f")
    whole = both("process_peak_gb", float)
    line("peak RSS of the process (GB)", whole, whole[0] / whole[1] if pair else None, ".2f")
    if pair:
        print("ratios: TRL seconds / srl-agent seconds (srl-agent's speed-up); srl-agent GB / TRL GB")
    for n in names:
        before, after = results[n]["load_before"], results[n]["load_after"]
        low, mean, high = results[n]["load_during"]
        print(f"load average during {FRAMEWORKS[n]} (1 min, every 10 s): mean {mean:.2f}, min {low:.2f}, "
              f"max {high:.2f}; 1/5/15 min before {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f}, "
              f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f}")  # fmt: skip
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, {versions()}; "
        f"runs in {args.out}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--group", type=int, default=8, help="rollouts per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count()
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="both recompute activations in the backward pass (TRL's default; srl-agent's is off)",
    )
    parser.add_argument("--only", choices=sorted(FRAMEWORKS), default=None, help="run one framework")
    parser.add_argument(
        "--order", choices=["srl,trl", "trl,srl"], default="srl,trl", help="which runs first (load drifts)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-grpo-vs-trl"))
    parser.add_argument("--worker", choices=sorted(FRAMEWORKS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        work = {"srl": worker_srl, "trl": worker_trl}[args.worker]
        figures = work(args, args.out)
        (args.out / f"{args.worker}.json").write_text(json.dumps(figures, indent=2) + "\n")
        return
    if args.only != "srl" and importlib.util.find_spec("trl") is None:
        raise SystemExit("TRL is the baseline: pip install -e '.[bench]' (or --only srl)")
    args.out.mkdir(parents=True, exist_ok=True)
    order = args.order.split(",") if args.only is None else [args.only]
    results = {n: run_worker(n, args) for n in order}
    results = {n: results[n] for n in FRAMEWORKS if n in results}  # srl-agent's column first
    report(args, results)
    summary = {"args": vars(args) | {"out": str(args.out)}, "machine": cpu_model(), "results": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
