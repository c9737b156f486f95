"""Validated tasks per hour from the task factory (`make-tasks`), 1 and N workers, and where the time goes.

    python bench/bench_factory.py [--source pypi:toolz==1.0.0] [--tasks 40] [--workers-list 1,2] [--json]

For each worker count, one fresh `make_tasks` run (its own output folder in a temporary directory, so
nothing is resumed) makes `--tasks` tasks from SOURCE: the repository fetched and its image built (the
image is cached by its inputs, so only the first run pays the install), the clean suite run twice, bug
candidates checked in `workers` warm containers until `--tasks` are kept, then each task's bug commit,
problem statement, image and recorded expert. Printed per worker count:
1. validated tasks per hour: kept candidates over the candidate phase's wall time (what the
   validation costs), and tasks over the whole run (experts and images included), with the ratio to
   the first worker count (the baseline, 1);
2. the seconds of each phase (install, reference runs, candidates, tasks) and per candidate;
3. the yield (kept over candidates tried) and the drop reasons;
4. the machine (cores, CPU, Docker engine) and its load average before and after: the machine may be
   shared, so read the figures with it.
Needs a running Docker engine and, for a `pypi:` source, PyPI. The default run (toolz, whose suite runs
in about 1 s) took about 4 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from environments import docker_engine
from environments.config import EnvConfig
from environments.factory.make_tasks import MakeTasksConfig, make_tasks


def run(source: str, tasks: int, workers: int, work: Path) -> dict[str, Any]:
    cfg = MakeTasksConfig(source=source, out=str(work / f"w{workers}"), max_tasks=tasks)
    report = make_tasks(cfg, EnvConfig(pool_size=workers), progress=False)
    if report["failure"] or report["tasks"] < tasks:
        raise SystemExit(f"{source}: the run made {report['tasks']} of {tasks} tasks ({report['failure']})")
    seconds = report["seconds"]
    return {
        "workers": workers,
        "kept_per_hour_validation": 3600 * report["kept"] / seconds["candidates"],
        "tasks_per_hour": 3600 * report["tasks"] / seconds["total"],
        "seconds": seconds,
        "seconds_per_candidate": seconds["candidates"] / max(report["candidates"], 1),
        "candidates": report["candidates"],
        "kept": report["kept"],
        "yield": report["yield"],
        "dropped": report["dropped"],
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    engine = docker_engine.shared_client().version().get("Version")
    return {"cores": os.cpu_count(), "cpu": cpu, "docker": engine, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="pypi:toolz==1.0.0")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--workers-list", default="1,2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers_list.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-factory-") as tmp:
        results = [run(args.source, args.tasks, w, Path(tmp)) for w in counts]
    out = {"source": args.source, "tasks": args.tasks, "runs": results, "machine": machine(),
           "load_before": load_before, "load_after": os.getloadavg()}  # fmt: skip
    if args.json:
        print(json.dumps(out))
        return 0
    base = results[0]
    print(f"{args.source}: {args.tasks} tasks per run")
    for r in results:
        s = r["seconds"]
        print(
            f"  {r['workers']} worker(s): {r['kept_per_hour_validation']:.0f} validated/h in validation "
            f"({r['kept_per_hour_validation'] / base['kept_per_hour_validation']:.2f}x), "
            f"{r['tasks_per_hour']:.0f} tasks/h end to end ({r['tasks_per_hour'] / base['tasks_per_hour']:.2f}x); "
            f"install {s['install']:.0f} s, reference {s['reference']:.1f} s, candidates {s['candidates']:.0f} s "
            f"({r['seconds_per_candidate']:.2f} s each), tasks {s['tasks']:.0f} s; "
            f"yield {r['yield']:.0%} ({r['kept']}/{r['candidates']}), dropped {r['dropped']}"
        )
    m = out["machine"]
    print(f"machine: {m['cores']} cores, {m['cpu']}, Docker {m['docker']}, Python {m['python']}; "
          f"load {load_before[0]:.1f} -> {out['load_after'][0]:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
