"""The one module that imports docker-py: connecting to the engine and naming its errors.

Every other module of `environments` receives a client from `connect()` and catches engine errors as
`docker_engine.NotFound`, `docker_engine.APIError`, ... (resolved lazily, see `__getattr__`), so
`import environments.<anything>` works on a machine without docker-py or without an engine, and the
failure, when one comes, is one clear `EngineUnavailable` that says how to fix it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker

    from environments.config import DockerHost

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_HINT = (
    "start it with `dockerd > /var/log/dockerd.log 2>&1 &` (as root) or `sudo systemctl start docker`; "
    "if it runs elsewhere, point DOCKER_HOST at it"
)
HOST_HINT = (
    "check that the engine runs there and listens on that address, and for tcp:// its TLS files; "
    "an engine that is down on purpose must leave environment.docker_hosts"
)
_ERROR_NAMES = frozenset({"APIError", "NotFound", "ImageNotFound", "DockerException", "BuildError"})


class EngineUnavailable(RuntimeError):
    """No Docker engine answers (or docker-py is missing); the message says where it looked and the fix."""


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect(host: DockerHost | None = None, timeout: float = 120.0) -> docker.DockerClient:
    """A client for `host` (default: the engine DOCKER_HOST names, else the local socket), pinged.

    `timeout` bounds each API call in seconds (image imports and commits pass their own, longer ones).
    An `ssh://` host is reached through paramiko (the `ssh` extra), which reads the host's user, port,
    key and ProxyCommand from ~/.ssh/config. Not docker-py's `use_ssh_client`, which shells out to the
    ssh binary: its connection breaks on every exec (a BrokenPipeError when the exec's stream closes,
    docker 7.2), and environments run everything through execs. Raises EngineUnavailable with the
    address and the fix when the engine does not answer.
    """
    try:
        import docker
    except ImportError as e:
        raise EngineUnavailable(
            f"docker-py is not installed ({e}); install it with `pip install docker`"
        ) from None
    where, hint = (engine_address(), START_HINT) if host is None else (host.url, HOST_HINT)
    try:
        client = docker.from_env(timeout=timeout) if host is None else _host_client(docker, host, timeout)
        client.ping()
    except Exception as e:  # noqa: BLE001 - every failure here means the same thing to the caller
        raise EngineUnavailable(
            f"no Docker engine reachable at {where} ({type(e).__name__}: {_short(e)}); {hint}"
        ) from None
    return client


def _host_client(docker: Any, host: DockerHost, timeout: float) -> docker.DockerClient:
    if host.url.startswith("ssh://") and importlib.util.find_spec("paramiko") is None:
        raise RuntimeError("ssh:// engines need paramiko: pip install 'srl-agent[ssh]' (or 'docker[ssh]')")
    settings = {"base_url": host.url, "tls": _tls_config(host), "timeout": timeout}
    if host.tls is None or host.tls.ca_cert is None:
        return docker.DockerClient(**settings)
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's CA (psf/requests#3829), so
    # where they are set the engine's own CA would be ignored and its certificate refused: these clients
    # do not read the environment. docker-py's automatic API version would ask before that can be set,
    # so a client of the oldest version asks first.
    from docker.constants import MINIMUM_DOCKER_API_VERSION

    probe = docker.DockerClient(version=MINIMUM_DOCKER_API_VERSION, **settings)
    probe.api.trust_env = False
    version = probe.version(api_version=False)["ApiVersion"]
    probe.close()
    client = docker.DockerClient(version=version, **settings)
    client.api.trust_env = False
    return client


def _tls_config(host: DockerHost) -> Any:
    import docker.tls

    if host.tls is None:
        return False
    tls = host.tls
    path = os.path.expanduser
    cert = (path(tls.client_cert), path(tls.client_key)) if tls.client_cert and tls.client_key else None
    ca = path(tls.ca_cert) if tls.ca_cert else None
    return docker.tls.TLSConfig(client_cert=cert, ca_cert=ca, verify=tls.verify)


@functools.cache
def shared_client() -> docker.DockerClient:
    """One client per process for callers that do not manage their own (it is thread-safe for API calls)."""
    return connect()


def engine_facts(client: docker.DockerClient | None = None) -> dict[str, Any]:
    """The engine's address and versions, for a run's manifest; an `error` when none answers."""
    try:
        version = (client or shared_client()).version()
    except Exception as e:  # noqa: BLE001 - EngineUnavailable or an API error: the manifest says which
        return {"address": engine_address(), "error": f"{type(e).__name__}: {_short(e)}"}
    return {"address": engine_address(), "version": version.get("Version"), "api_version": version.get("ApiVersion"),
            "os": version.get("Os"), "arch": version.get("Arch"), "kernel": version.get("KernelVersion")}  # fmt: skip


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
