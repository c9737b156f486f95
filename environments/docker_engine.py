"""The one module that imports docker-py: connecting to the engine and naming its errors.

Every other module of `environments` receives a client from `connect()` and catches engine errors as
`docker_engine.NotFound`, `docker_engine.APIError`, ... (resolved lazily, see `__getattr__`), so
`import environments.<anything>` works on a machine without docker-py or without an engine, and the
failure, when one comes, is one clear `EngineUnavailable` that says how to fix it.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_HINT = (
    "start it with `dockerd > /var/log/dockerd.log 2>&1 &` (as root) or `sudo systemctl start docker`; "
    "if it runs elsewhere, point DOCKER_HOST at it"
)
_ERROR_NAMES = frozenset({"APIError", "NotFound", "ImageNotFound", "DockerException", "BuildError"})


class EngineUnavailable(RuntimeError):
    """No Docker engine answers (or docker-py is missing); the message says where it looked and the fix."""


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect(timeout: float = 120.0) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (default: the local socket), checked with a ping.

    `timeout` bounds each API call in seconds (image imports and commits pass their own, longer ones).
    Raises EngineUnavailable with the address and the fix when the engine does not answer.
    """
    try:
        import docker
    except ImportError as e:
        raise EngineUnavailable(
            f"docker-py is not installed ({e}); install it with `pip install docker`"
        ) from None
    where = engine_address()
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as e:  # noqa: BLE001 - every failure here means the same thing to the caller
        raise EngineUnavailable(
            f"no Docker engine reachable at {where} ({type(e).__name__}: {_short(e)}); {START_HINT}"
        ) from None
    return client


@functools.cache
def shared_client() -> docker.DockerClient:
    """One client per process for callers that do not manage their own (it is thread-safe for API calls)."""
    return connect()


def low_level(client: docker.DockerClient) -> Any:
    """The low-level `APIClient` behind a client (exec sockets, raw imports)."""
    return client.api


def __getattr__(name: str) -> Any:
    # Engine error classes, resolved on first use so that importing this module never needs docker-py.
    if name in _ERROR_NAMES:
        import docker.errors

        return getattr(docker.errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else ""
