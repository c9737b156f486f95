"""Does training move outcomes? SFT, SRL, RLVR and SRL-then-RLVR from one base, on held-out accuracy.

    python bench/bench_outcomes.py [--arms base,sft,srl,rlvr,srl+rlvr] [--steps 6] [--batch 4] [--k 0]

The paper's comparison (Table 1: SRL then RLVR > SRL > base > SFT at 7B) on the embedded default
(SmolLM2-135M) and the CPU, at a size this machine affords:
1. `../shared/data/math/gsm8k_test.first300.jsonl` is split by a fixed seed into 200 training and 100
   held-out problems (`--data` points elsewhere);
2. each arm trains from the same base with the same number of optimizer steps and the same number of
   examples per step (`--batch`: expert steps for SFT, kept prompts for SRL, problems for RLVR; `--group`
   rollouts each), through `python -m srl_agent.train`; `srl+rlvr` spends half its steps on each stage
   (`--stage srl+rlvr`, RLVR from the SRL stage's last checkpoint: the bench keeps no validation split);
3. each arm's final checkpoint, and the base model, is scored on the 100 held-out problems:
   greedy accuracy (and avg@k, pass@k with `--k`) through `python -m srl_agent.evaluate --benchmark`
   (RLVR prompt, last `\\boxed{}` or `####` answer, math-verify), and the held-out step similarity and
   format errors (the SRL reward, greedy) on the held-out problems' first `--step-examples` steps.
Accuracy is read two ways: strictly (the evaluation's verdicts: a `\\boxed{}` or `####` answer) and
leniently (the saved responses graded again with `math.lenient`'s fallbacks, the Qwen2.5-Math
toolkit's: the number after "the answer is", else the last number), since the 135M model rarely
boxes an answer. Both come with a 95% bootstrap interval over problems, and each arm's lenient
difference from the base with a paired bootstrap interval (the same resampled problems for both).

On a machine shared with other torch processes, `--threads 1`: two processes of two threads each
on two cores spin-wait on each other (a decode step of the 135M model at batch 50 took 5.4 s that
way and 0.6 s with one thread, the other processes still running).

Each arm is resumable and can be run alone (`--arms sft`): training resumes from the arm's
checkpoints/last, evaluation skips what its output folder holds; `--report` only prints the table of
what is done. Everything lands under `--out` (default `runs/bench-outcomes`): the split, one run
folder per arm, the evaluations, `summary.json` and `summary.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "math" / "gsm8k_test.first300.jsonl"
ARMS = ("base", "sft", "srl", "rlvr", "srl+rlvr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, any of " + ", ".join(ARMS))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-problems", type=int, default=200)
    parser.add_argument("--heldout-problems", type=int, default=100)
    parser.add_argument(
        "--steps", type=int, default=6, help="optimizer steps per arm (even: srl+rlvr halves)"
    )
    parser.add_argument("--batch", type=int, default=4, help="examples per optimizer step")
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt (SRL, RLVR)")
    parser.add_argument("--lr", type=float, default=1e-4, help="one rate for every arm")
    parser.add_argument("--rounds", type=int, default=1, help="grpo.max_sampling_rounds (refills per step)")
    parser.add_argument("--rlvr-tokens", type=int, default=128, help="RLVR rollout cap (whole solutions)")
    parser.add_argument("--eval-tokens", type=int, default=160, help="benchmark response cap")
    parser.add_argument("--eval-batch", type=int, default=50, help="responses per generate call")
    parser.add_argument("--k", type=int, default=0, help="samples per held-out problem for avg@k (0: greedy)")
    parser.add_argument("--step-examples", type=int, default=64, help="held-out steps scored by similarity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of each command (OMP_NUM_THREADS)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-outcomes"))
    parser.add_argument("--report", action="store_true", help="only print the table of finished arms")
    args = parser.parse_args()
    if args.threads is not None:  # the commands run as subprocesses and inherit it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or args.steps < 2 or args.steps % 2:
        parser.error(f"unknown arms {unknown}" if unknown else "--steps must be even and at least 2")

    args.out.mkdir(parents=True, exist_ok=True)
    train_file, heldout_file = split_problems(args)
    if not args.report:
        for arm in arms:
            run_arm(arm, args, train_file, heldout_file)
    summary = summarize(args, [a for a in ARMS if (args.out / a / "arm.json").is_file()])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    table = markdown(summary)
    (args.out / "summary.md").write_text(table, encoding="utf-8")
    print(table)


def split_problems(args: argparse.Namespace) -> tuple[Path, Path]:
    """The fixed-seed split of `--data` into training and held-out problems (written once, reused)."""
    folder = args.out / "data"
    train, heldout = folder / "train.jsonl", folder / "heldout.jsonl"
    if not train.is_file():
        rows = [line for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
        need = args.train_problems + args.heldout_problems
        if len(rows) < need:
            raise SystemExit(f"error: {args.data} has {len(rows)} problems, the split needs {need}")
        order = list(range(len(rows)))
        random.Random(args.seed).shuffle(order)
        folder.mkdir(parents=True, exist_ok=True)
        write_lines(heldout, [rows[i] for i in sorted(order[: args.heldout_problems])])
        write_lines(train, [rows[i] for i in sorted(order[args.heldout_problems : need])])
    return train, heldout


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def run_arm(arm: str, args: argparse.Namespace, train_file: Path, heldout_file: Path) -> None:
    """Train the arm (resuming), then evaluate its final checkpoint; `arm.json` records it."""
    folder = args.out / arm
    with arm_lock(arm, folder) as mine:
        if mine:
            _run_arm(arm, args, train_file, heldout_file, folder)


@contextmanager
def arm_lock(arm: str, folder: Path) -> Iterator[bool]:
    """True (and `folder/running.pid` held until the block ends) unless a live process holds the arm:
    arms may run side by side in several processes, never one twice."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "running.pid"
    if lock.is_file() and alive(int(lock.read_text() or 0)):
        print(f"skip {arm}: process {lock.read_text()} is running it", flush=True)
        yield False
        return
    lock.write_text(str(os.getpid()))
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return pid > 0


def _run_arm(arm: str, args: argparse.Namespace, train_file: Path, heldout_file: Path, folder: Path) -> None:
    record_path = folder / "arm.json"
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if arm == "base":
        model = args.model
    else:
        if "train_seconds" not in record:
            started = time.perf_counter()
            run(train_command(arm, args, train_file, folder / "run"))
            record["train_seconds"] = time.perf_counter() - started
            record["train"] = training_stats(folder / "run")
        model = str(final_checkpoint(folder / "run"))
    record["model"] = model
    if "benchmark" not in record:
        started = time.perf_counter()
        report = run_json(benchmark_command(model, args, heldout_file, folder / "eval"))
        record["benchmark"] = report["benchmarks"]["heldout"]
        record["benchmark_seconds"] = time.perf_counter() - started
    if "steps" not in record:
        record["steps"] = run_json(step_command(model, args, heldout_file))
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def train_command(arm: str, args: argparse.Namespace, data: Path, run_dir: Path) -> list[str]:
    stage_steps = args.steps // 2 if arm == "srl+rlvr" else args.steps
    rlvr = [f"generation.max_new_tokens={args.rlvr_tokens}"]
    command = [
        "srl_agent.train", "--task", "math", "--stage", arm,
        f"model.name={args.model}",
        f"data.source={data}",
        "data.build.validation_groups=0",  # the held-out problems are scored apart, after training
        f"run_dir={run_dir}",
        f"trainer.steps={stage_steps}",
        f"trainer.batch_size={args.batch}",
        f"trainer.save_every={stage_steps}",
        "trainer.progress=false",
        f"grpo.group_size={args.group}",
        f"grpo.max_sampling_rounds={args.rounds}",
        f"optim.lr={args.lr}",
        f"seed={args.seed}",
    ]  # fmt: skip
    if arm == "rlvr":
        command += rlvr
    if arm == "srl+rlvr":
        command.append(f"rlvr_overrides={json.dumps(rlvr)}")
    return command


def benchmark_command(model: str, args: argparse.Namespace, heldout: Path, out: Path) -> list[str]:
    return [
        "srl_agent.evaluate", "--task", "math", "--benchmark", str(heldout), "--model", model,
        "--out", str(out), "--k", str(args.k), "--json",
        f"math.max_new_tokens={args.eval_tokens}", f"generation.batch_size={args.eval_batch}",
        f"seed={args.seed}",
    ]  # fmt: skip


def step_command(model: str, args: argparse.Namespace, heldout: Path) -> list[str]:
    """The SRL step reward (greedy) on the held-out problems' first steps, as training validates."""
    return [
        "srl_agent.evaluate", "--task", "math", "--model", model,
        f"data.source={heldout}", "data.build.validation_groups=0", "eval.split=train",
        f"data.max_train_examples={args.step_examples}", f"generation.batch_size={args.eval_batch}",
        f"seed={args.seed}",
    ]  # fmt: skip


def run(command: list[str]) -> str:
    """The command's stdout; its lines are shown as they come (a training step's line, an evaluation's
    progress), except JSON objects, which are the result the caller reads."""
    print("+ python -m " + " ".join(command), flush=True)
    lines = []
    with subprocess.Popen(
        [sys.executable, "-m", *command], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as proc:
        for line in proc.stdout or ():
            lines.append(line)
            if not line.startswith("{"):
                print("  " + line, end="", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: `python -m {' '.join(command)}` exited with {proc.returncode}")
    return "".join(lines)


def run_json(command: list[str]) -> dict[str, Any]:
    """The JSON object a command prints as its last line."""
    return json.loads(run(command).strip().splitlines()[-1])


def final_checkpoint(run_dir: Path) -> Path:
    """The arm's last checkpoint (for srl+rlvr, its RLVR stage's)."""
    stage = run_dir / "rlvr" if (run_dir / "rlvr").is_dir() else run_dir
    return stage / "checkpoints" / "last"


def training_stats(run_dir: Path) -> dict[str, Any]:
    """Per stage of the arm: steps trained, updates skipped (no group passed the filter), sampled and
    kept prompts, mean train reward and format errors over its steps."""
    from srl_agent.runlog import read_metrics

    stages = [run_dir / "srl", run_dir / "rlvr"] if (run_dir / "srl").is_dir() else [run_dir]
    stats = {}
    for stage in stages:
        rows = [r for r in read_metrics(stage / "metrics.jsonl") if r.get("step", 0) > 0]
        rewards = [r["reward_mean"] for r in rows if r.get("reward_mean") is not None]
        errors = [r["format_error_rate"] for r in rows if r.get("format_error_rate") is not None]
        stats[stage.name if stage != run_dir else "run"] = {
            "steps": len(rows),
            "skipped_updates": sum(bool(r.get("skipped_update")) for r in rows),
            "sampled_prompts": sum(r.get("sampled_prompts") or 0 for r in rows),
            "kept_prompts": sum(r.get("kept_prompts") or 0 for r in rows),
            "train_reward_mean": sum(rewards) / len(rewards) if rewards else None,
            "train_format_error_rate": sum(errors) / len(errors) if errors else None,
        }
    return stats


# ---------------------------------------------------------------------------------------------------
# the table


def summarize(args: argparse.Namespace, arms: list[str]) -> dict[str, Any]:
    """Per arm: greedy accuracy read strictly (`\\boxed{}`/`####`, the evaluation's own verdicts) and
    leniently (the saved responses graded again with `math.lenient`'s fallbacks), each with a 95%
    bootstrap interval over problems, and the lenient difference from the base, paired."""
    from srl_agent.eval.math_grading import Checker

    records = {a: json.loads((args.out / a / "arm.json").read_text()) for a in arms}
    with Checker(lenient=True) as checker:
        graded = {a: greedy_correct(args.out / a / "eval", checker) for a in arms}
    n = len(next(iter(graded.values()))[0]) if graded else 0
    rng = random.Random(args.seed)
    draws = [[rng.randrange(n) for _ in range(n)] for _ in range(2000)]
    rows = []
    for arm in arms:
        r, (strict, lenient) = records[arm], graded[arm]
        bench = r["benchmark"]
        row = {
            "arm": arm,
            "strict_accuracy": mean(strict),
            "strict_ci95": bootstrap(lambda idx, c=strict: mean([c[i] for i in idx]), draws),
            "lenient_accuracy": mean(lenient),
            "lenient_ci95": bootstrap(lambda idx, c=lenient: mean([c[i] for i in idx]), draws),
            "avg@k": bench.get("avg@k") if args.k else None,
            "pass@k": bench.get("pass@k") if args.k else None,
            "no_answer_rate": answerless_rate(bench, n),
            "cut_at_cap": bench.get("cut_at_max_new_tokens", {}).get("greedy"),
            "step_reward": r["steps"].get("reward_mean"),
            "step_format_error_rate": r["steps"].get("format_error_rate"),
            "train_seconds": r.get("train_seconds"),
            "train": r.get("train"),
        }
        if arm != "base" and "base" in graded:
            b = graded["base"][1]
            row["lenient_diff_vs_base"] = mean(lenient) - mean(b)
            row["lenient_diff_ci95"] = bootstrap(
                lambda idx, c=lenient, b=b: mean([c[i] - b[i] for i in idx]), draws
            )
        rows.append(row)
    return {
        "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "arms": rows,
    }


def greedy_correct(eval_dir: Path, lenient: Any) -> tuple[list[float], list[float]]:
    """1.0/0.0 per held-out problem for the greedy response, in problem order: the evaluation's
    strict verdict, and the lenient checker's."""
    rows = [json.loads(line) for line in (eval_dir / "heldout.jsonl").read_text().splitlines() if line]
    strict = [1.0 if row["greedy_verdict"] == "correct" else 0.0 for row in rows]
    loose = [1.0 if lenient.check(row["answer"], row["greedy"]).correct else 0.0 for row in rows]
    return strict, loose


def answerless_rate(bench: dict[str, Any], problems: int) -> float | None:
    verdicts = bench.get("verdicts", {}).get("greedy", {})
    return verdicts.get("no_answer", 0) / problems if problems else None


def bootstrap(statistic: Any, draws: list[list[int]]) -> list[float]:
    """The 2.5th and 97.5th percentiles of `statistic` over resampled problem indices."""
    values = sorted(statistic(idx) for idx in draws)
    return [values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, load {load:.1f}"


def markdown(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    lines = [
        (
            f"# Outcomes after training ({s['model']}, {s['steps']} optimizer steps x {s['batch']} "
            f"examples, lr {s['lr']}, G {s['group']})"
        ),
        "",
        (
            f"Machine: {summary['machine']}. Held-out: {s['heldout_problems']} GSM8K problems, greedy, "
            f"{s['eval_tokens']} tokens; step similarity on {s['step_examples']} held-out steps."
        ),
        "",
        (
            "| arm | strict acc | lenient acc | 95% CI | lenient vs base | 95% CI (paired) | no boxed/#### "
            "| cut at cap | step sim | step fmt err | train s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["arms"]:
        diff = f"{r['lenient_diff_vs_base']:+.3f}" if "lenient_diff_vs_base" in r else ""
        dci = "[{:+.3f}, {:+.3f}]".format(*r["lenient_diff_ci95"]) if "lenient_diff_ci95" in r else ""
        train = f"{r['train_seconds']:.0f}" if r["train_seconds"] is not None else ""
        ci = "[{:.3f}, {:.3f}]".format(*r["lenient_ci95"])
        lines.append(
            f"| {r['arm']} | {r['strict_accuracy']:.3f} | {r['lenient_accuracy']:.3f} | {ci} | {diff} | {dci} "
            f"| {fmt(r['no_answer_rate'])} | {r['cut_at_cap']} | {fmt(r['step_reward'])} "
            f"| {fmt(r['step_format_error_rate'])} | {train} |"
        )
    if s["k"]:
        lines += ["", f"avg@{s['k']} / pass@{s['k']}: "
                  + ", ".join(f"{r['arm']} {fmt(r['avg@k'])} / {fmt(r['pass@k'])}" for r in summary["arms"])]  # fmt: skip
    return "\n".join(lines) + "\n"


def fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
