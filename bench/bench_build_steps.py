"""Benchmark: build SRL step examples from 5,000 SWE-smith-sized trajectories (~134k steps), streaming.

    python bench/bench_build_steps.py [--trajectories 5000] [--baseline 500] [--no-naive] [--keep DIR]

The corpus is synthesized from the real SWE-smith SFT rows in ../shared/data/swesmith/ft_xml_example.jsonl
(or $SRL_SHARED_DATA): every synthetic row keeps a real system prompt and task, and its steps are
real (assistant XML call, observation) pairs drawn with a fixed seed, 12 to 42 per row (mean 27, as in
the paper's 5,000 trajectories -> 134k steps); the last step is a real `submit`. Rows are written as
JSON lines with `messages` as a list, the SFT export's shape.

Measured, each run in a fresh child process so peak memory (ru_maxrss) is its own:
1. streaming build of a `--baseline`-row corpus (the baseline),
2. streaming build of all rows: the time should grow with the corpus, the peak memory should not,
3. a naive build that first loads every trajectory into a list, then builds (what streaming avoids).
On a shared machine the wall time also shows the others' load; the CPU seconds do not.
Prints the machine (cores, CPU model, load) and the figures with their ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRL_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = SHARED / "swesmith" / "ft_xml_example.jsonl"


def synthesize(path: Path, n: int, seed: int = 0) -> int:
    """Write `n` SWE-smith-shaped rows to `path`; returns the number of steps written."""
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    pairs, submits = [], []
    for r in rows:
        m = r["messages"]
        for i in range(2, len(m) - 1, 2):
            (submits if "<function=submit>" in m[i]["content"] else pairs).append((m[i], m[i + 1]))
    rng = random.Random(seed)
    total = 0
    with path.open("w", encoding="utf-8") as f:
        for k in range(n):
            base = rows[k % len(rows)]
            steps = rng.randint(12, 42)
            messages = base["messages"][:2]
            for a, o in rng.sample(pairs, steps - 1):
                messages += [a, o]
            messages.append(rng.choice(submits)[0])
            f.write(
                json.dumps({"messages": messages, "instance_id": f"{base['instance_id']}.syn{k:05d}"}) + "\n"
            )
            total += steps
    return total


def child(mode: str, source: str, out: str) -> None:
    """Run one build in this process (`stream` or `naive`) and print its figures as JSON."""
    from trajectories.build import BuildConfig, GroupSplitter, build, examples_for
    from trajectories.record import JsonlWriter, step_example_lines
    from trajectories.sources import read_source

    cfg = BuildConfig(validation_groups=30)  # the paper holds out 30 trajectories
    started = time.perf_counter()
    if mode == "stream":
        examples = build(source, "swe", out, cfg).examples
    else:
        items = read_source(source).items  # everything in memory first
        with (
            JsonlWriter(Path(out) / "train.jsonl") as train,
            JsonlWriter(Path(out) / "validation.jsonl") as val,
        ):
            splitter = GroupSplitter(cfg, {"train": train, "validation": val})
            for item in items:
                _, key, exs = examples_for(item, "swe", cfg)
                splitter.add(key, step_example_lines(exs))
            splitter.flush()
        examples = {"train": train.count, "validation": val.count}
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "examples": examples}))


def run_child(mode: str, source: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(source), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} build of {source} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {model}, {platform.python_implementation()} {platform.python_version()}, load avg {load}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=5000)
    parser.add_argument("--baseline", type=int, default=500)
    parser.add_argument("--no-naive", action="store_true", help="skip the load-everything-first comparison")
    parser.add_argument("--keep", type=Path, default=None, help="keep the corpus and outputs in this folder")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if not SAMPLE.is_file():
        print(f"error: the SWE-smith sample is not at {SAMPLE} (set SRL_SHARED_DATA)", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench_build_steps_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus, small = work / "corpus.jsonl", work / "corpus_small.jsonl"
        t0 = time.perf_counter()
        steps = synthesize(corpus, args.trajectories)
        small_steps = synthesize(small, args.baseline)
        size_mb = corpus.stat().st_size / 2**20
        print(
            f"corpus: {args.trajectories} trajectories, {steps} steps, {size_mb:.0f} MiB "
            f"(synthesized in {time.perf_counter() - t0:.1f}s); baseline: {args.baseline} trajectories, {small_steps} steps"
        )
        results = {"baseline: stream": run_child("stream", small, work / "out_small")}
        results["full: stream"] = run_child("stream", corpus, work / "out_full")
        if not args.no_naive:
            results["full naive (load all, then build)"] = run_child("naive", corpus, work / "out_naive")
        base = results["baseline: stream"]
        for name, r in results.items():
            n = sum(r["examples"].values())
            print(
                f"{name:36s} {r['seconds']:6.1f} s wall {r['cpu_seconds']:6.1f} s CPU  {n / r['seconds']:6.0f} examples/s"
                f"  peak RSS {r['peak_rss_mb']:5.0f} MiB"
                f"  (time x{r['seconds'] / base['seconds']:.1f}, memory x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} vs baseline)"
                f"  examples {r['examples']}"
            )
        out_mb = sum(p.stat().st_size for p in (work / "out_full").glob("*.jsonl")) / 2**20
        print(f"output: {out_mb:.0f} MiB of step-example JSONL; machine load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
