"""An SRL step on 1 and on 2 ranks (torchrun, FSDP2, gloo on the CPU or NCCL on GPUs): seconds, memory.

    python bench/bench_distributed.py [--model smollm2-135m] [--steps 3] [--batch-size 2] [--group 8]
        [--max-new-tokens 64] [--threads 1] [--out runs/bench-distributed]

Both runs are `python -m srl_agent.train --task math` (the math demo's SRL stage, the bundled steps)
with the same seed, batch and G; the 2-rank run goes through `torchrun --standalone --nproc-per-node 2`,
so each rank samples and trains on half the prompts (`srl_agent/distributed.py`). `grpo.filter=none`
keeps every group, so both runs update on the whole batch every step.

Printed: seconds per step (mean of steps 2..N; step 1 warms up), split into generation and update,
the peak RSS of each process (VmHWM), the ratios 1 rank / 2 ranks, the machine and its load average.
On this 2-core machine the two ranks share the cores the single process has to itself (`--threads 1`
gives each process one OpenMP thread, so the single process uses one core and the ranks one each): the
figure is a correctness run of the multi-process path more than a measurement of its speed-up, which
needs one device per rank. On a GPU machine run it with `--threads` left alone and `--device cuda`.

Measured so (AMD EPYC, 2 cores, load 1.4-1.7; defaults: SmolLM2-135M, 2 prompts x G=8 x 64 tokens,
3 steps): 1 rank 40.9 s a step (generation 23.5, update 17.4), 2 ranks 37.5 s (14.4, 21.9): 1.09x,
with generation 1.63x faster (each rank samples one prompt on its own core) and the update 0.79x (the
all-gathers and reduce-scatters of FSDP2 over gloo, on cores the ranks share). Peak RSS 4.55 GB for
the one process, 4.03 GB per rank (7.94 GB together). Both trained 16 sequences a step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="prompts per step, all ranks together")
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads per process (0: leave)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    train = [
        "-m", "srl_agent.train", "--task", "math", f"model.name={args.model}", f"model.device={args.device}",
        f"trainer.steps={args.steps}", f"trainer.batch_size={args.batch_size}", f"grpo.group_size={args.group}",
        f"generation.max_new_tokens={args.max_new_tokens}", "grpo.filter=none", "trainer.val_every=0",
        "trainer.validate_at_start=false", "trainer.progress=false", "trainer.save_every=1000",
        "data.max_val_examples=0",  # the step alone: no validation at the last step
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    launchers = {
        1: [sys.executable],
        2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"],
    }
    results = {}
    for ranks, launch in launchers.items():
        run_dir = out / f"ranks{ranks}"
        print(f"running {ranks} rank(s) ...", flush=True)
        peaks = run(launch, [*train, f"run_dir={run_dir}"], env)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("step", 0) >= 1 and "seconds_total" in r][1:] or rows[-1:]
        results[ranks] = {
            "seconds_step": statistics.fmean(r["seconds_total"] for r in rows),
            "seconds_generation": statistics.fmean(r["seconds_generation"] for r in rows),
            "seconds_update": statistics.fmean(r["seconds_training"] for r in rows),
            "sequences": rows[-1]["sequences"],
            "peak_gb_per_process": max(peaks) / 2**20,
            "peak_gb_all": sum(peaks) / 2**20,
            "processes": len(peaks),
        }
    one, two = results[1], results[2]
    print(
        f"\nSRL step, {args.model}, {args.batch_size} prompts x G={args.group} x <= {args.max_new_tokens} tokens"
    )
    print(f"{'':28} {'1 rank':>9} {'2 ranks':>9} {'ratio':>7}")
    for key in ("seconds_step", "seconds_generation", "seconds_update", "peak_gb_per_process", "peak_gb_all"):
        print(f"{key:28} {one[key]:9.2f} {two[key]:9.2f} {one[key] / two[key]:6.2f}x")
    print(f"sequences trained per step: {one['sequences']} and {two['sequences']}")
    print("ratio: 1 rank / 2 ranks (above 1: two ranks are faster, or use less memory)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}, OMP threads per process "
          f"{args.threads or 'default'}; python {platform.python_version()}")  # fmt: skip
    (out / "summary.json").write_text(json.dumps(results, indent=2))


def run(launch: list[str], argv: list[str], env: dict[str, str]) -> list[int]:
    """Run one training; the peak RSS (kB) of each of its training processes."""
    code = (
        "import runpy, sys, atexit, re\n"
        "def peak():\n"
        "    text = open('/proc/self/status').read()\n"
        "    print('PEAK_KB', re.search(r'VmHWM:\\s+(\\d+)', text).group(1), flush=True)\n"
        "atexit.register(peak)\n"
        "sys.argv = ['srl_agent.train', *sys.argv[1:]]\n"
        "runpy.run_module('srl_agent.train', run_name='__main__')\n"
    )
    script = Path(tempfile.mkdtemp()) / "train_with_peak.py"
    script.write_text(code)
    command = [*launch, str(script), *argv[2:]]  # argv[:2] is "-m srl_agent.train"
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_KB")]


if __name__ == "__main__":
    main()
