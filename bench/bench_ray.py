"""Benchmark of the Ray backend (`environment.backend: ray`) against the local pool, on this machine:

1. the Ray hop per tool call: the median of `env.run("true")` (and of `env.diff()`) in an environment of
   the local pool and in one of the Ray pool, same image; the difference is what the hop adds (target:
   at most 2 ms);
2. episodes per minute with the replay policy (the expert trajectories of the bundled tasks through the
   agent loop, `srl_agent.agent.run_episode`, graded by the fast grader in the episode's container, as
   evaluation runs them: `episodes.run_graded`), `pool_size` at a time, local pool vs Ray pool; a first
   round starts the environments (and the Ray slots) and is timed apart from the `rounds` after it;
3. the overhead per episode: the mean episode's seconds (acquire to release) on Ray minus local, and
   the start of a new environment (a Ray slot: an actor placed on a node, then the container).

Without `ray_address` it starts Ray's test cluster here (`ray.cluster_utils.Cluster`): a head node
holding no environment and `nodes` nodes of `units` environments each, all on this machine's engine.

    python bench/bench_ray.py [--config F] [calls=300 rounds=3 nodes=2 units=2 ray_address=HOST:PORT]

Prints a table; `json_out=PATH` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import Field

from environments.config import EnvConfig, GradingConfig
from environments.episodes import Acted, run_graded
from environments.pool import open_pool
from environments.protocol import Environment, Pool
from environments.tasks import bundled
from environments.tasks.sources import prepare_image
from srl_agent.agent import run_episode
from srl_agent.policies import ReplayPolicy
from trajectories.config import Section, add_config_arguments, dump_config, resolve_config, run_cli


class BenchRayConfig(Section):
    environment: EnvConfig = Field(default_factory=EnvConfig)
    """The environments measured; `backend` and `ray.address` are set per run."""
    calls: int = Field(300, ge=10)
    """Samples of each timed tool call, per backend."""
    rounds: int = Field(3, ge=1)
    """Timed rounds of episodes (each: every bundled task once), after the first round."""
    nodes: int = Field(2, ge=1)
    """Nodes of the test cluster that hold environments (without `ray_address`)."""
    units: int = Field(2, ge=1)
    """Environments each test-cluster node holds; `pool_size` is nodes x units."""
    ray_address: str | None = None
    """An existing cluster to measure instead of a test cluster here (its nodes' `srl_env` units)."""
    json_out: str | None = None
    """Also write the figures as JSON to this path."""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, example="rounds=5")
    args = parser.parse_args()
    cfg = resolve_config(BenchRayConfig, args.config, args.overrides)
    if args.dry_run:
        print(dump_config(cfg))
        return 0
    import ray

    cluster = None
    address = cfg.ray_address
    if address is None:
        from ray.cluster_utils import Cluster

        small = {"num_cpus": 1, "object_store_memory": 100 << 20}
        cluster = Cluster(initialize_head=True, head_node_args=small)
        for _ in range(cfg.nodes):
            cluster.add_node(resources={cfg.environment.ray.resource: cfg.units}, **small)
        address = cluster.address
    ray.init(address=address, logging_level="WARNING")
    try:
        figures = measure(cfg, address)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    print_table(figures)
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def measure(cfg: BenchRayConfig, address: str) -> dict[str, Any]:
    size = cfg.nodes * cfg.units
    local_cfg = cfg.environment.model_copy(update={"backend": "docker", "pool_size": size})
    ray_cfg = cfg.environment.model_copy(update={"backend": "ray", "pool_size": size})
    ray_cfg.ray = ray_cfg.ray.model_copy(update={"address": address})
    tasks = bundled.load_tasks()
    for task in tasks:
        prepare_image(task, local_cfg)
    figures: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "pool_size": size,
        "tasks": [t.instance_id for t in tasks],
    }
    for name, env_cfg in (("local", local_cfg), ("ray", ray_cfg)):
        with open_pool(env_cfg) as pool:
            figures[name] = {
                **tool_calls(pool, tasks[0].image, cfg.calls),
                **episodes(pool, tasks, env_cfg, cfg.rounds),
            }
    local, remote = figures["local"], figures["ray"]
    figures["added"] = {
        "run_ms": remote["run_ms"] - local["run_ms"],
        "diff_ms": remote["diff_ms"] - local["diff_ms"],
        "episode_s": remote["episode_s"] - local["episode_s"],
        "start_s": remote["start_s"] - local["start_s"],
    }
    return figures


def tool_calls(pool: Pool, image: str, calls: int) -> dict[str, float]:
    """Median milliseconds of `run("true")` and of `diff()` in one environment of `pool`, and the
    seconds its start took (a new environment: on Ray a new slot, placed, then its container)."""
    started = time.perf_counter()
    with pool.acquire(image) as env:
        start = time.perf_counter() - started
        env.run("true")  # the shell is warm
        run = _median_ms(lambda: env.run("true"), calls)
        diff = _median_ms(env.diff, max(calls // 5, 10))
    return {"run_ms": run, "diff_ms": diff, "start_s": start}


def episodes(pool: Pool, tasks: list[bundled.Task], env_cfg: EnvConfig, rounds: int) -> dict[str, Any]:
    """Replayed, graded episodes of every task, `rounds` + 1 times: the first round starts the pool's
    environments, the rest are timed as episodes per minute."""
    policy = ReplayPolicy.from_path(bundled.TASKS_DIR)
    grading = GradingConfig(grader="fast")
    seconds: list[float] = []

    def one(task: bundled.Task) -> str:
        def act(env: Environment) -> Acted:
            episode = run_episode(policy, env, task.problem_statement, task.instance_id)
            return Acted(episode, episode.patch, episode.detail if episode.infrastructure_error else None)

        began = time.perf_counter()
        done = run_graded(task, act, pool, grading, env_cfg=env_cfg, work_dir="/tmp/srl-bench-ray")
        seconds.append(time.perf_counter() - began)
        return done.masked or (done.grade.status if done.grade else "ungraded")

    with ThreadPoolExecutor(max_workers=pool.size) as executor:
        began = time.perf_counter()
        first = list(executor.map(one, tasks * pool.size))
        first_s = time.perf_counter() - began
        seconds.clear()
        began = time.perf_counter()
        timed = list(executor.map(one, tasks * rounds))
        wall = time.perf_counter() - began
    outcomes = first + timed
    return {
        "episodes": len(timed),
        "episodes_per_minute": 60 * len(timed) / wall,
        "episode_s": statistics.fmean(seconds),
        "first_round_s": first_s,
        "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
    }


def _median_ms(fn: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def print_table(f: dict[str, Any]) -> None:
    print(f"machine: {f['machine']}; pool_size {f['pool_size']}; tasks {', '.join(f['tasks'])}")
    rows = [
        ("run('true'), median ms", "run_ms", ".2f"),
        ("diff(), median ms", "diff_ms", ".2f"),
        ("new environment, s", "start_s", ".2f"),
        ("episode (acquire..release), mean s", "episode_s", ".2f"),
    ]
    print(f"| {'':38} | {'local':>8} | {'ray':>8} | {'added':>8} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for label, key, fmt in rows:
        local, remote, added = f["local"][key], f["ray"][key], f["added"][key]
        print(f"| {label:38} | {local:>8{fmt}} | {remote:>8{fmt}} | {added:>+8{fmt}} |")
    local, remote = f["local"], f["ray"]
    print(
        f"| {'episodes per minute':38} | {local['episodes_per_minute']:>8.1f} | "
        f"{remote['episodes_per_minute']:>8.1f} | {remote['episodes_per_minute'] - local['episodes_per_minute']:>+8.1f} |"
    )
    print(
        f"outcomes: local {local['outcomes']}, ray {remote['outcomes']} ({local['episodes']} timed episodes each)"
    )


if __name__ == "__main__":
    run_cli(main)
