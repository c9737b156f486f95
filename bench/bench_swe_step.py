"""One SRL step of the SWE demo before and after prefill sharing: the whole step, not generation alone.

    python bench/bench_swe_step.py [--group 4] [--max-new-tokens 64] [--batch-size 1]
        [--no-checkpointing] [--order before,after|after,before] [--out runs/bench-swe-step]

Each variant is `python -m srl_agent.train --task swe --config configs/swe_demo.yaml` for one step, in a
fresh child process, from the same seed (so the same step examples, the same prompts):
- before: `generation.share_prefill=false`, `generate` prefills each of the G copies of a prompt;
- after: the default, one prefill per prompt, its KV cache repeated G times.
The policy update is the same in both. `configs/swe_demo.yaml` turns gradient checkpointing on (its
2k-token prompts), which keeps the plain update layout; `--no-checkpointing` turns it off in both
variants, and then the update also runs each prompt once for its G rollouts (`logprobs.pack`'s shared
layout), so "after" shares the prompt in generation and in the update.
`grpo.filter=none`: the untrained SmolLM2-135M writes no valid tool call (every reward -1), which the
demo's filter would drop, leaving no update to time.

Printed per variant: the step's seconds (`seconds_total` in metrics.jsonl), split into generation and
training, CPU seconds of the child, its peak RSS, the completion tokens; then the ratios before / after
and the machine with its load average (read wall seconds with it: the machine may be shared).

Measured so (AMD EPYC, 2 cores, OMP_NUM_THREADS=1, SmolLM2-135M, G=4, 1 prompt, <= 64 tokens):
- `--no-checkpointing`, load 1.0-1.6: before 71.5 s a step (generation 44.1, update 27.4), after
  46.5 s (19.0, 27.5): 1.54x the step, 2.33x generation, 1.40x CPU seconds; peak RSS 5.01 / 5.06 GB.
  (The update shares the prompt in both variants: only generation differs.)
- the demo's gradient checkpointing on, load 5-7 from other jobs: generation 58.5 -> 34.7 s (1.69x);
  the recomputed update over G full 2k-token rows took 226-321 s, swinging with the load, which
  buries the saving in the step (CPU seconds 379 -> 363); peak RSS 4.36 / 4.39 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"before": ["generation.share_prefill=false"], "after": ["generation.share_prefill=true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1, help="prompts per step")
    parser.add_argument("--no-checkpointing", action="store_true", help="gradient checkpointing off")
    parser.add_argument("--order", default="before,after")
    parser.add_argument("--out", default=None, help="keep the run folders here (default: a temp dir)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-swe-step-"))
    common = [
        "--task", "swe", "--config", str(ROOT / "configs" / "swe_demo.yaml"),
        "trainer.steps=1", f"trainer.batch_size={args.batch_size}", f"grpo.group_size={args.group}",
        f"generation.max_new_tokens={args.max_new_tokens}", "grpo.filter=none", "trainer.progress=false",
        "data.max_val_examples=0", "trainer.validate_at_start=false",  # the step alone, no validation
        f"trainer.gradient_checkpointing={'false' if args.no_checkpointing else 'true'}",
    ]  # fmt: skip
    results = {}
    for name in args.order.split(","):
        results[name] = run(name, common + VARIANTS[name] + [f"run_dir={out / name}"], out / name)
    print(f"\nSWE demo SRL step, G={args.group}, {args.batch_size} prompt(s), <= {args.max_new_tokens} "
          f"tokens, gradient checkpointing {'off' if args.no_checkpointing else 'on'}")  # fmt: skip
    print(
        f"{'variant':8} {'step s':>8} {'gen s':>8} {'train s':>8} {'cpu s':>8} {'peak GB':>8} {'tokens':>7}"
    )
    for name, r in results.items():
        print(f"{name:8} {r['seconds_total']:8.1f} {r['seconds_generation']:8.1f} "
              f"{r['seconds_training']:8.1f} {r['cpu_seconds']:8.1f} {r['peak_gb']:8.2f} "
              f"{r['completion_tokens']:7}")  # fmt: skip
    before, after = results["before"], results["after"]
    for key in ("seconds_total", "seconds_generation", "cpu_seconds"):
        print(f"speed-up ({key}, before / after): {before[key] / after[key]:.2f}x")
    print(f"memory (after / before): {after['peak_gb'] / before['peak_gb']:.2f}x")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; python {platform.python_version()}")  # fmt: skip
    (out / "summary.json").write_text(json.dumps(results, indent=2))


def run(name: str, argv: list[str], run_dir: Path) -> dict:
    """One child `srl_agent.train` run: its metrics row plus CPU seconds and peak RSS."""
    print(f"running {name} ...", flush=True)
    started = time.perf_counter()
    code = (
        "import resource, sys, time, json\n"
        "from srl_agent.train import main\n"
        "cpu = time.process_time(); rc = main(sys.argv[1:])\n"
        "print('BENCH ' + json.dumps({'cpu': time.process_time() - cpu, "
        "'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    measured = json.loads(proc.stdout.rsplit("BENCH ", 1)[1].splitlines()[0])
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "seconds_total": row["seconds_total"],
        "seconds_generation": row["seconds_generation"],
        "seconds_training": row["seconds_training"],
        "completion_tokens": row.get("tokens", 0),  # the trained (completion) tokens
        "cpu_seconds": measured["cpu"],
        "peak_gb": measured["rss"] / 2**20,
        "wall_seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":
    main()
