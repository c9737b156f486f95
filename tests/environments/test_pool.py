"""The environment pool: parallel episodes, each starting clean, at most N containers, all removed."""

from __future__ import annotations

import threading
import time

import pytest
from envtest_support import fast_config, sample_image

from environments import docker_engine
from environments.container import DockerEnvironment
from environments.labels import OWNER_LABEL, owner_id
from environments.pool import EnvironmentPool


def our_containers() -> list[str]:
    client = docker_engine.connect()
    return [c.id for c in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner_id()}"})]


@pytest.mark.docker
def test_parallel_episodes_start_clean_and_share_at_most_n_containers() -> None:
    image = sample_image()
    seen_containers: set[str] = set()
    running = 0
    peak = 0
    lock = threading.Lock()

    def episode(env: DockerEnvironment, n: int) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            seen_containers.add(env.container_id)
        # Every episode must find the repository untouched by the previous one.
        dirty = env.run("git status --porcelain; ls /testbed/episode-* 2>/dev/null").output
        env.run(f"echo {n} > /testbed/episode-{n}; echo change >> calc/ops.py; sleep 0.3")
        patch = env.diff()
        with lock:
            running -= 1
        assert dirty == "", f"episode {n} started dirty: {dirty!r}"
        return patch

    with EnvironmentPool(fast_config(), size=2) as pool:
        patches = pool.run_parallel(episode, [(image, n) for n in range(6)])
        assert pool.started == 2
    assert len(patches) == 6
    for n, patch in enumerate(patches):
        assert f"+++ b/episode-{n}" in patch and patch.count("+change") == 1
    assert peak == 2 and len(seen_containers) == 2  # reused, not one container per episode
    assert our_containers() == []  # closing the pool removed them


@pytest.mark.docker
def test_acquire_waits_for_a_free_slot_and_switches_images() -> None:
    image = sample_image()
    base = fast_config().base_image
    with EnvironmentPool(fast_config(), size=1) as pool:
        with pool.acquire(image) as env:
            first = env.container_id
            waited = []

            def other() -> None:
                started = time.monotonic()
                with pool.acquire(base) as env2:
                    waited.append((time.monotonic() - started, env2.image, env2.base_commit))

            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.5)
            assert not waited  # the only slot is taken
        thread.join(timeout=60)
        assert waited and waited[0][0] >= 0.4 and waited[0][1:] == (base, None)
        with pool.acquire(image) as env:
            assert env.container_id != first  # the slot went to the base image in between
        assert pool.started == 1
