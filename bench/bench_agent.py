"""Agent episodes per minute on the bundled SWE tasks with the scripted (replay) policy, 1 and N workers,
and where an episode's time goes: the environment side of the cost of an evaluation or a rollout.

    python bench/bench_agent.py [--workers-list 1,2] [--rounds 5] [--warmup 1] [--no-harness]
                                [--no-evaluate] [--json]

Each round runs the 3 bundled tasks once, their expert trajectories replayed (`replay:environments/
tasks`) through the real agent loop (`srl_agent.agent.run_episode`) on a fresh `EnvironmentPool` of
`workers` containers, `workers` episodes at a time, as `srl_agent.eval.swe.evaluate_swe` runs them
(the same per-instance path: prepare the image, acquire an environment, run the episode, reset it and
grade the patch with the fast grader in it, release it, save the trajectory and the prediction), with
the config `python -m srl_agent.evaluate --task swe --instances --model replay:environments/tasks
--grader fast --workers N` resolves. The benchmark times each of those calls itself, so every phase is
measured without a hook in the library (the one difference: the replay policy, which holds no model,
is not made to take turns behind a lock). Rounds alternate the worker counts (1, N, 1, N, ...) so that
a varying load from other processes falls on both; each round writes into its own new folder of a
temporary directory, so nothing is resumed; `--warmup` untimed rounds per worker count come first.

Printed:
1. episodes per minute per worker count (3 / the round's wall time, pool creation to pool close;
   median and range over the rounds) and the ratio to the first worker count (the baseline, 1), next
   to its bound: a worker runs whole episodes, so 3 episodes on 2 workers gain at most 1.5x;
2. seconds per episode in each phase (means over every episode; thread time, so with N workers the
   phases of concurrent episodes overlap in wall time): generation (the replay policy renders a
   recorded action: ~0, a model's generation comes on top), tools (the commands in the environment),
   the rest of the agent loop (prompts, parsing), container start (pool acquire: it also removes the
   idle container of another image, since each task has its own image), the reset before grading,
   fast grading, release (the warm reset), the image check (`prepare_image`: cached, but it hashes
   the task's inputs), saving, and the pool's close per round shared out over its episodes;
3. one grading of the 3 patches by the official swebench harness (its import and its own containers
   included), timed once (`--no-harness` skips it);
4. one `evaluate_swe` call per worker count, end to end (policy load, ledger, report), as a check that
   the rounds measure what the evaluation command costs (`--no-evaluate` skips it);
5. the machine (cores, CPU, Docker engine) and its load average before and after: the machine may
   be shared, so read the figures with it.

Every episode must resolve its task (expert replays do); anything else is an error, since the figures
of broken episodes would mean nothing. Needs a running Docker engine and the bundled images (built on
first use). Writes nothing outside a temporary directory. The default run took 82 s on a 2-core
machine at a load average of 6.6.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from math import ceil
from pathlib import Path
from typing import Any

from environments import docker_engine
from environments.grading import grade_with_harness, harness_run_id, run_tests_in_env
from environments.pool import EnvironmentPool
from environments.tasks.bundled import TASKS_DIR
from environments.tasks.sources import load_task_source, prepare_image
from srl_agent.agent import run_episode, save_episode
from srl_agent.config import EvalConfig
from srl_agent.eval.swe import evaluate_swe
from srl_agent.policies import make_policy
from srl_agent.tasks import resolve
from trajectories.config import resolve_config

MODEL = f"replay:{TASKS_DIR}"
START_DOCKER = "nohup dockerd >/tmp/dockerd.log 2>&1 &"
# (key, label) in the order an episode goes through them
PHASES = (
    ("generation", "generation (replay policy)"),
    ("tools", "tools (commands in the environment)"),
    ("loop_other", "agent loop, other (prompts, parsing)"),
    ("acquire", "container start (pool acquire)"),
    ("reset_before_grading", "reset before grading"),
    ("grading", "grading, fast (in the container)"),
    ("release", "release (warm reset)"),
    ("prepare_image", "image check (prepare_image)"),
    ("save", "save (trajectory, prediction)"),
    ("pool_close", "pool close (per round / episodes)"),
)


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()
    try:
        client = docker_engine.connect()
    except docker_engine.EngineUnavailable as e:
        print(f"bench_agent needs a running Docker engine: {e}\n(as root: `{START_DOCKER}`)", file=sys.stderr)
        return 2
    configs = {n: eval_config(n) for n in args.workers_list}
    tasks, skipped = load_task_source(None)
    assert tasks and not skipped, f"the bundled tasks do not load: {skipped}"
    policy = make_policy(MODEL)
    note(f"preparing {len(tasks)} task images (built once, then cached)")
    for task in tasks:
        prepare_image(task, configs[args.workers_list[0]].environment)

    rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in args.workers_list}
    with tempfile.TemporaryDirectory(prefix="srl-bench-agent-") as tmp:
        for r in range(-args.warmup, args.rounds):
            for n in args.workers_list:
                out = Path(tmp, f"round{r}-workers{n}")
                result = run_round(configs[n], policy, tasks, out)
                note(f"{'warm-up' if r < 0 else f'round {r + 1}/{args.rounds}'}, workers={n}: "
                     f"{result['wall_s']:.1f} s")  # fmt: skip
                if r >= 0:
                    rounds[n].append(result)
        patches = rounds[args.workers_list[0]][-1]["patches"]
        harness = None if args.no_harness else time_harness(tasks, patches, Path(tmp, "harness"), args)
        e2e = {}
        if not args.no_evaluate:
            e2e = {n: time_evaluate(n, Path(tmp, f"evaluate-{n}")) for n in args.workers_list}

    results = {
        "machine": machine(client, load_before, os.getloadavg()),
        "setup": {
            "tasks": [t.instance_id for t in tasks],
            "model": MODEL,
            "grader": "fast",
            "rounds": args.rounds,
            "warmup_rounds": args.warmup,
            "reset": configs[args.workers_list[0]].environment.reset,
        },
        "workers": {str(n): summarize(rounds[n], len(tasks)) for n in args.workers_list},
        "harness": harness,
        "evaluate_swe": e2e,
    }
    base = results["workers"][str(args.workers_list[0])]["episodes_per_minute"]["median"]
    for row in results["workers"].values():
        row["ratio_to_baseline"] = row["episodes_per_minute"]["median"] / base
    print(json.dumps(results, indent=1) if args.json else report(results, args.workers_list))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers-list", type=worker_counts, default=[1, 2],
                        help="worker counts, comma-separated; the first is the baseline (default 1,2)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per worker count (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per worker count first")
    parser.add_argument("--no-harness", action="store_true", help="skip the harness grading")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the end-to-end evaluate_swe calls")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    return args


def worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct positive integers, comma-separated")
    return counts


def eval_config(workers: int, out: Path | None = None) -> EvalConfig:
    """The config `python -m srl_agent.evaluate --task swe --instances --model MODEL --grader fast
    --workers N` resolves (agent limits, prompt window, environment, test timeout)."""
    overrides = ["task=swe", f"model.name={MODEL}", "swe.instances=bundled", "grading.grader=fast",
                 f"environment.pool_size={workers}"] + ([f"swe.out={out}"] if out else [])  # fmt: skip
    return resolve(resolve_config(EvalConfig, None, overrides))


def run_round(cfg: EvalConfig, policy: Any, tasks: list[Any], out: Path) -> dict[str, Any]:
    """Every task once on a new pool of `cfg.environment.pool_size`, that many at a time; wall time and phases."""
    (out / "trajectories").mkdir(parents=True)
    started = time.perf_counter()
    pool = EnvironmentPool(cfg.environment)
    try:
        with ThreadPoolExecutor(
            max_workers=cfg.environment.pool_size, thread_name_prefix="episode"
        ) as executor:
            episodes = list(executor.map(lambda task: one_episode(cfg, policy, pool, task, out), tasks))
    finally:
        clock = time.perf_counter()
        pool.close()
        close_s = time.perf_counter() - clock
    wall_s = time.perf_counter() - started
    failed = {e["instance_id"]: e["status"] for e in episodes if e["status"] != "resolved"}
    if failed:
        raise RuntimeError(f"expert replays that did not resolve their task: {failed}; nothing to measure")
    for e in episodes:
        e["seconds"]["pool_close"] = close_s / len(episodes)
    return {
        "wall_s": wall_s,
        "episodes": episodes,
        "patches": {e["instance_id"]: e.pop("patch") for e in episodes},
    }


def one_episode(cfg: EvalConfig, policy: Any, pool: EnvironmentPool, task: Any, out: Path) -> dict[str, Any]:
    """The per-instance path of `evaluate_swe` (`eval.swe.Runner.instance`), each call timed."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase], clock = now - clock, now

    image = prepare_image(task, cfg.environment)
    lap("prepare_image")
    env = pool.get(image)
    lap("acquire")
    try:
        episode = run_episode(
            policy, env, task.problem_statement, task.instance_id, cfg.agent, cfg.data.build
        )
        lap("episode")
        seconds["generation"] = sum(t.generation_seconds for t in episode.turns)
        seconds["tools"] = sum(t.environment_seconds for t in episode.turns)
        seconds["loop_other"] = seconds.pop("episode") - seconds["generation"] - seconds["tools"]
        env.reset()
        lap("reset_before_grading")
        grade = run_tests_in_env(env, task, episode.patch, timeout=cfg.grading.test_timeout)
        lap("grading")
    finally:
        pool.release(env)
        lap("release")
    save_episode(episode, out / "trajectories" / f"{task.instance_id}.jsonl")
    with (out / "predictions.jsonl").open("a", encoding="utf-8") as f:
        row = {"instance_id": task.instance_id, "model_name_or_path": MODEL, "model_patch": episode.patch}
        f.write(json.dumps(row) + "\n")
    lap("save")
    return {
        "instance_id": task.instance_id,
        "status": grade.status,
        "tool_calls": sum(t.step is not None for t in episode.turns),
        "seconds": seconds,
        "patch": episode.patch or "",
    }


def time_harness(tasks: list[Any], patches: dict[str, str], work_dir: Path, args: argparse.Namespace) -> dict:
    """One grading of `patches` by the official swebench harness (its own containers, its import)."""
    workers = max(args.workers_list)
    note(f"grading {len(patches)} patches with the swebench harness (max_workers={workers})")
    started = time.perf_counter()
    grades = grade_with_harness(
        [t.instance() for t in tasks], patches, harness_run_id("bench-agent"),
        work_dir=work_dir, max_workers=workers,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    failed = {iid: g.status for iid, g in grades.items() if not g.resolved}
    if failed:
        raise RuntimeError(f"the harness did not resolve the expert patches: {failed}")
    return {"seconds": seconds, "per_instance_s": seconds / len(patches), "max_workers": workers}


def time_evaluate(workers: int, out: Path) -> dict[str, float]:
    """One `evaluate_swe` call, end to end, on a new output folder."""
    started = time.perf_counter()
    report = evaluate_swe(eval_config(workers, out), progress=False)
    seconds = time.perf_counter() - started
    if report["resolved"] != report["total"]:
        raise RuntimeError(f"evaluate_swe with {workers} workers: {report['instances']}")
    return {"seconds": seconds, "episodes_per_minute": 60 * report["total"] / seconds}


def summarize(rounds: list[dict[str, Any]], per_round: int) -> dict[str, Any]:
    rates = [60 * per_round / r["wall_s"] for r in rounds]
    episodes = [e for r in rounds for e in r["episodes"]]
    phases = {key: statistics.fmean(e["seconds"][key] for e in episodes) for key, _ in PHASES}
    return {
        "episodes_per_minute": {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "rounds": rates,
        },
        "round_wall_s_median": statistics.median(r["wall_s"] for r in rounds),
        "episodes": len(episodes),
        "tool_calls_per_episode": statistics.fmean(e["tool_calls"] for e in episodes),
        "seconds_per_episode": {**phases, "total": sum(phases.values())},
    }


def report(results: dict[str, Any], workers: list[int]) -> str:
    m, setup, rows = results["machine"], results["setup"], results["workers"]
    tasks, base = len(setup["tasks"]), workers[0]
    lines = ["machine: " + ", ".join(f"{k}={v}" for k, v in m.items() if not k.startswith("load"))]
    before, after = fmt_load(m["load_average_before"]), fmt_load(m["load_average_after"])
    lines.append(f"load average (1, 5, 15 min): before {before}, after {after}")
    lines.append(f"tasks: {', '.join(setup['tasks'])}; {setup['model']}, fast grader, {setup['reset']} reset")
    lines.append(f"{setup['rounds']} timed rounds per worker count, interleaved, after {setup['warmup_rounds']} "
                 "warm-up")  # fmt: skip
    lines += ["", f"episodes per minute ({tasks} a round, pool start to pool close; median [min-max]):"]
    for n in workers:
        rate, wall = rows[str(n)]["episodes_per_minute"], rows[str(n)]["round_wall_s_median"]
        ratio = "baseline"
        if n != base:  # a worker runs whole episodes: 3 on 2 workers take 2 episode times, not 1.5
            ideal = ceil(tasks / base) / ceil(tasks / n)
            ratio = f"{rows[str(n)]['ratio_to_baseline']:.2f}x the baseline (at most {ideal:.2f}x)"
        lines.append(f"  workers={n}: {rate['median']:5.1f} [{rate['min']:.1f}-{rate['max']:.1f}] "
                     f"(round {wall:.1f} s)  {ratio}")  # fmt: skip
    calls = rows[str(base)]["tool_calls_per_episode"]
    lines += ["", f"seconds per episode ({calls:.1f} tool calls each), mean over the rounds' episodes;"]
    lines.append("thread time: with N workers the phases of concurrent episodes overlap in wall time")
    width = max(len(label) for _, label in PHASES) + 2
    lines.append("".ljust(width) + "".join(f"{f'workers={n}':>18}" for n in workers))
    for key, label in [*PHASES, ("total", "episode total")]:
        cells = []
        for n in workers:
            per = rows[str(n)]["seconds_per_episode"]
            cells.append(f"{per[key]:8.3f} s {100 * per[key] / per['total']:5.1f}%")
        lines.append(label.ljust(width) + "".join(f"{c:>18}" for c in cells))
    if results["harness"]:
        h, per = results["harness"], rows[str(base)]["seconds_per_episode"]
        fast = per["grading"] + per["reset_before_grading"]
        lines.append("")
        lines.append(f"swebench harness, the {tasks} patches once (max_workers={h['max_workers']}, its import "
                     f"included): {h['seconds']:.1f} s, {h['per_instance_s']:.2f} s of wall time an instance;")  # fmt: skip
        lines.append(f"  the fast grader: {fast:.2f} s an instance, its reset included (workers={base})")
    if results["evaluate_swe"]:
        lines += ["", "evaluate_swe end to end, one call each (policy load, ledger, report included):"]
        for n, row in results["evaluate_swe"].items():
            lines.append(
                f"  workers={n}: {row['episodes_per_minute']:5.1f} episodes/min ({row['seconds']:.1f} s)"
            )
    return "\n".join(lines)


def machine(client: Any, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict[str, Any]:
    info = client.info()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())  # fmt: skip
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "docker": info.get("ServerVersion"),
        "storage_driver": info.get("Driver"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def fmt_load(load: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
