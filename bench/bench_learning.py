"""Does SRL move the embedded default? Held-out step reward before and after SRL, and after SFT.

    python bench/bench_learning.py [--steps 20] [--batch 4] [--group 4] [--out runs/bench-learning]

On the embedded default (SmolLM2-135M, CPU) and the bundled math steps, it runs
1. a short SRL run (`--stage srl`), validating on the held-out steps before training and at the end,
2. SFT with the same budget: the same number of optimizer steps on the same number of expert steps per
   step, same data, same prompts, same validation,
and prints held-out step reward (greedy, the SRL reward: similarity in [0, 1], -1 for a broken format)
and format-error rate before and after each. Both runs go through `python -m srl_agent.train`; their
run folders (metrics, curves, checkpoints) stay under `--out`. The default run (20 steps, 22 held-out
steps validated every 5) took 55 min of SRL and 3.4 min of SFT on a shared 2-core machine;
`--steps 4 --val-examples 8` gives a rough reading in a fraction of that. The held-out set is
`--val-problems` whole problems (all their steps), never trained on; validation also runs every
`--val-every` steps so the summary shows the curve, not just its ends.

Each stage has its own learning rate (`--lr-srl`, `--lr-sft`); both default to 1e-4, the rate at which
the 135M model moves within this budget (the paper's 5e-7 is for 7B models and 500+ steps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

from srl_agent import train
from srl_agent.runlog import read_metrics


def run_stage(stage: str, args: argparse.Namespace, out: Path) -> tuple[dict, dict, float, list[dict]]:
    """Train one stage; return (validation before, validation after, seconds, every validation row)."""
    run_dir = out / stage
    lr = args.lr_srl if stage == "srl" else args.lr_sft
    overrides = [
        f"model.name={args.model}",
        f"run_dir={run_dir}",
        f"trainer.steps={args.steps}",
        f"trainer.batch_size={args.batch}",
        f"grpo.group_size={args.group}",
        f"optim.lr={lr}",
        f"data.build.validation_groups={args.val_problems}",
        f"data.max_val_examples={args.val_examples}",
        f"trainer.val_every={args.val_every}",
        f"trainer.save_every={args.steps}",
        "trainer.progress=false",
        f"seed={args.seed}",
    ]
    if args.max_new_tokens is not None:
        overrides.append(f"generation.max_new_tokens={args.max_new_tokens}")
    if args.prefill is not None:  # JSON quoting keeps newlines through the YAML override parser
        overrides.append(f"prompt.prefill={json.dumps(args.prefill)}")
    started = time.perf_counter()
    assert train.main(["--task", "math", "--stage", stage, *overrides]) == 0
    seconds = time.perf_counter() - started
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "val_reward_mean" in r]
    return rows[0], rows[-1], seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4, help="prompts per step (kept prompts for SRL)")
    parser.add_argument("--group", type=int, default=4, help="SRL rollouts per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the config's")
    parser.add_argument("--val-problems", type=int, default=10, help="held-out problems (of 42)")
    parser.add_argument("--val-examples", type=int, default=24, help="held-out steps validated")
    parser.add_argument("--val-every", type=int, default=5, help="0: validate only before and after")
    parser.add_argument("--lr-srl", type=float, default=1e-4)
    parser.add_argument("--lr-sft", type=float, default=1e-4)
    parser.add_argument("--prefill", default=None, help="assistant-turn prefill (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-learning"))
    args = parser.parse_args()

    results = {stage: run_stage(stage, args, args.out) for stage in ("srl", "sft")}
    before = results["srl"][0]
    print(
        f"\nheld-out math steps ({before['val_examples']} examples, greedy), {args.model}, "
        f"{args.steps} steps x {args.batch} prompts"
    )
    print(f"{'':<14} {'step reward':>12} {'x before':>9} {'format errors':>14} {'minutes':>8}")
    print(
        f"{'before':<14} {before['val_reward_mean']:>12.4f} {1:>9.2f} "
        f"{before['val_format_error_rate']:>14.3f} {'':>8}"
    )
    for stage, (_, after, seconds, _) in results.items():
        ratio = (
            after["val_reward_mean"] / before["val_reward_mean"] if before["val_reward_mean"] else math.nan
        )
        print(
            f"{'after ' + stage.upper():<14} {after['val_reward_mean']:>12.4f} {ratio:>9.2f} "
            f"{after['val_format_error_rate']:>14.3f} {seconds / 60:>8.1f}"
        )
    for stage, (*_, rows) in results.items():
        curve = ", ".join(f"{r['step']}: {r['val_reward_mean']:.3f}" for r in rows)
        print(f"{stage.upper()} held-out reward by step: {curve}")
    summary = {
        stage: {"before": r[0], "after": r[1], "seconds": r[2], "validation": r[3]}
        for stage, r in results.items()
    }
    (args.out / "summary.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, **summary}, indent=2, default=str) + "\n"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average at the end {os.getloadavg()[0]:.1f}; runs in {args.out}"
    )


if __name__ == "__main__":
    main()
