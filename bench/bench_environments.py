"""Benchmark of repository environments on this machine, all in one run:

1. latency of a trivial command (`echo hi`) through the persistent shell vs docker-py `exec_run` of the
   same command in the same container (medians; the ratio is the point, the target is >= 50x),
2. environment start (container + shell) and the bare container start,
3. reset: warm (restore the repository in place) and fresh (new container),
4. throughput of N environments in parallel (pool of N threads), episodes of K commands + diff + reset.

    python bench/bench_environments.py [--config F] [commands=500 exec_runs=50 parallel='[1,2,4]']

Prints machine information and a table; `json_out=PATH` also writes the figures as JSON.
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
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from environments import docker_engine
from environments.config import EnvConfig
from environments.container import DockerEnvironment, start_container
from environments.images import build_task_image, ensure_base_image
from environments.pool import EnvironmentPool
from trajectories.config import Section, add_config_arguments, dump_config, resolve_config, run_cli

BENCH_IMAGE = "srl-agent-bench/repo:latest"


class BenchConfig(Section):
    environment: EnvConfig = Field(default_factory=EnvConfig)
    """The environments measured (limits, shell settings)."""
    commands: int = Field(500, ge=10)
    """Persistent-shell samples of the trivial command."""
    exec_runs: int = Field(50, ge=5)
    """docker-py exec_run samples of the same command (each ~80 ms)."""
    starts: int = Field(5, ge=1)
    """Environment starts (and bare container starts) measured."""
    resets: int = Field(10, ge=1)
    """Warm resets measured (fresh resets: a third of it, at least 3)."""
    parallel: list[int] = Field(default_factory=lambda: [1, 2, 4])
    """Pool sizes for the throughput runs."""
    episodes: int = Field(8, ge=1)
    """Episodes per pool size."""
    episode_commands: int = Field(20, ge=1)
    """Commands per episode (then a diff and a reset)."""
    json_out: str | None = None
    """Also write the figures as JSON to this path."""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    args = parser.parse_args()
    cfg = resolve_config(BenchConfig, args.config, args.overrides)
    if args.dry_run:
        print(dump_config(cfg))
        return 0

    client = docker_engine.connect()
    image = bench_image(cfg.environment, client)
    print(machine_info(client))
    results: dict[str, object] = {"machine": machine_info(client, as_dict=True)}

    with DockerEnvironment(image, cfg.environment, client=client) as env:
        shell_ms = median_ms(lambda: env.run("echo hi"), cfg.commands, warmup=20)
        container = env._require()
        exec_ms = median_ms(lambda: container.exec_run(["echo", "hi"]), cfg.exec_runs, warmup=3)
        assert env.run("echo hi").output == "hi\n" and container.exec_run(["echo", "hi"]).output == b"hi\n"
        warm_ms = median_ms(lambda: dirty_then_reset(env, fresh=False), cfg.resets, warmup=1)
        fresh_ms = median_ms(lambda: dirty_then_reset(env, fresh=True), max(3, cfg.resets // 3), warmup=0)
    start_ms = median_ms(lambda: DockerEnvironment(image, cfg.environment, client=client).start().close(),
                         cfg.starts, warmup=1)  # fmt: skip
    bare_ms = median_ms(lambda: start_container(client, image, cfg.environment).remove(force=True),
                        cfg.starts, warmup=1)  # fmt: skip
    results["latency"] = {
        "persistent_shell_ms": shell_ms, "exec_run_ms": exec_ms, "ratio": exec_ms / shell_ms,
        "shell_samples": cfg.commands, "exec_run_samples": cfg.exec_runs,
    }  # fmt: skip
    results["lifecycle"] = {
        "environment_start_ms": start_ms, "container_start_and_remove_ms": bare_ms,
        "warm_reset_ms": warm_ms, "fresh_reset_ms": fresh_ms,
    }  # fmt: skip
    print(f"\ntrivial command `echo hi` (median): persistent shell {shell_ms:.3f} ms ({cfg.commands} runs), "
          f"docker-py exec_run {exec_ms:.1f} ms ({cfg.exec_runs} runs): "
          f"{exec_ms / shell_ms:.0f}x faster")  # fmt: skip
    print(
        f"environment start (container + shell): {start_ms:.0f} ms; "
        f"bare container start+remove: {bare_ms:.0f} ms"
    )
    print(f"reset: warm {warm_ms:.0f} ms, fresh container {fresh_ms:.0f} ms (medians)")

    throughput = []
    print(
        f"\nparallel episodes ({cfg.episodes} per row, {cfg.episode_commands} commands + diff + reset each):"
    )
    for n in cfg.parallel:
        row = parallel_throughput(cfg, image, client, n)
        throughput.append(row)
        print(f"  N={n}: {row['episodes_per_s']:.2f} episodes/s, {row['commands_per_s']:.0f} commands/s "
              f"({row['seconds']:.1f} s incl. {n} container start(s))")  # fmt: skip
    results["parallel"] = throughput
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {cfg.json_out}")
    return 0


def median_ms(fn: Callable[[], object], n: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def dirty_then_reset(env: DockerEnvironment, fresh: bool) -> None:
    env.run("echo x >> README.md && touch untracked.txt && cd src")  # < 1 ms of the measured time
    env.reset(fresh=fresh)


def parallel_throughput(cfg: BenchConfig, image: str, client: object, n: int) -> dict[str, float]:
    def episode(env: DockerEnvironment, i: int) -> int:
        for k in range(cfg.episode_commands):
            env.run(f"echo {i}-{k} >> src/notes.txt && grep -c . src/notes.txt > /dev/null")
        return len(env.diff())

    started = time.perf_counter()
    with EnvironmentPool(cfg.environment, size=n, client=client) as pool:  # type: ignore[arg-type]
        sizes = pool.run_parallel(episode, [(image, i) for i in range(cfg.episodes)])
    seconds = time.perf_counter() - started
    assert all(size > 0 for size in sizes)
    return {"n": n, "seconds": seconds, "episodes_per_s": cfg.episodes / seconds,
            "commands_per_s": cfg.episodes * cfg.episode_commands / seconds}  # fmt: skip


def bench_image(cfg: EnvConfig, client: object) -> str:
    """A small repository image (built once, then cached by its inputs)."""
    import git

    base = ensure_base_image(cfg, client=client)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="srl-bench-") as tmp:
        repo = git.Repo.init(tmp)
        for i in range(20):
            path = Path(tmp, "src", f"mod{i}.py")
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(f"def f{j}(x):\n    return x + {j}\n\n" for j in range(50)))
        Path(tmp, "README.md").write_text("bench\n")
        repo.index.add(["README.md", *(f"src/mod{i}.py" for i in range(20))])
        actor = git.Actor("bench", "bench@example.invalid")
        date = "2024-01-01T00:00:00"
        sha = repo.index.commit(
            "bench", author=actor, committer=actor, author_date=date, commit_date=date
        ).hexsha
        return build_task_image(
            BENCH_IMAGE,
            base,
            tmp,
            sha,
            "true",
            network=False,
            client=client,  # type: ignore[arg-type]
        )


def machine_info(client: object, as_dict: bool = False) -> str | dict[str, object]:
    info = client.info()  # type: ignore[attr-defined]
    facts: dict[str, object] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "docker": info.get("ServerVersion"),
        "storage_driver": info.get("Driver"),
        "cgroup": f"v{info.get('CgroupVersion', '?')} ({info.get('CgroupDriver', '?')})",
        "load_average_1m": round(os.getloadavg()[0], 2),  # the machine may be shared: read figures with it
    }
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None)  # fmt: skip
    facts["cpu"] = model or facts["cpu"]
    if as_dict:
        return facts
    return "machine: " + ", ".join(f"{k}={v}" for k, v in facts.items())


if __name__ == "__main__":
    run_cli(main)
