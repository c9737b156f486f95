"""Configuration of repository environments: images, container limits, the shell, the pool.

Defaults live here and only here. A training or evaluation config embeds `EnvConfig` as its
`environment` section; `python -m environments` reads it on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from trajectories.config import Section

HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ENGINE_SCHEMES = ("unix", "tcp", "ssh")
RAY_RESOURCE = "srl_env"


class HostTLS(Section):
    """TLS of a `tcp://` engine, as `docker --tlsverify --tlscacert ... --tlscert ... --tlskey ...`."""

    ca_cert: str | None = None
    """CA certificate that signed the engine's certificate (null: the system's CAs)."""
    client_cert: str | None = None
    """This client's certificate; with `client_key`, for engines that require client authentication."""
    client_key: str | None = None
    """The key of `client_cert`."""
    verify: bool = True
    """Check the engine's certificate; off only for a test engine with a self-signed certificate."""

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> HostTLS:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        return self


class DockerHost(Section):
    """One Docker engine of the environment pool and how many containers it may run at once."""

    url: str
    """docker-py base URL: `unix:///path/docker.sock`, `tcp://host:2376` (with `tls`) or `ssh://user@host`
    (through paramiko, the `ssh` extra; user, port, key and ProxyCommand from ~/.ssh/config apply)."""
    capacity: int = Field(ge=1)
    """Most environments (containers) the pool keeps on this engine at once."""
    tls: HostTLS | None = None
    """TLS for a `tcp://` engine; null: plain TCP (an engine that listens without TLS)."""

    @field_validator("url")
    @classmethod
    def _docker_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ENGINE_SCHEMES:
            raise ValueError(f"{url!r} is not a Docker engine URL: use unix://, tcp:// or ssh://")
        if (parts.path if parts.scheme == "unix" else parts.hostname) in ("", None):
            raise ValueError(f"{url!r} names no {'socket path' if parts.scheme == 'unix' else 'host'}")
        return url

    @model_validator(mode="after")
    def _tls_over_tcp(self) -> DockerHost:
        if self.tls is not None and not self.url.startswith("tcp://"):
            raise ValueError(f"{self.url}: tls applies to tcp:// engines only")
        return self


class RayCluster(Section):
    """The Ray cluster of `environment.backend: ray` (`environments.ray_pool`)."""

    address: str = "auto"
    """Where the cluster is: "auto" (RAY_ADDRESS, else the cluster `ray start` runs on this machine),
    `host:port` of its head node (what `ray start --head` prints) or `ray://host:10001` (Ray Client)."""
    resource: str = RAY_RESOURCE
    """The custom Ray resource by which a node says how many environments it holds at once (`ray start
    --resources '{"srl_env": 8}'`); a node without it (a GPU node that trains) holds none."""
    start_timeout: float = Field(300.0, gt=0)
    """Seconds a new environment may wait for a node to take it before the pool gives up."""

    @field_validator("address")
    @classmethod
    def _ray_address(cls, address: str) -> str:
        if address == "auto":
            return address
        parts = urlsplit(address if "://" in address else f"gcs://{address}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("gcs", "ray") or not parts.hostname or port is None or parts.path:
            raise ValueError(
                f"{address!r} is not a Ray cluster address: use auto, host:port (the head's, as `ray start"
                " --head` prints it) or ray://host:port"
            )
        return address

    @field_validator("resource")
    @classmethod
    def _resource_name(cls, name: str) -> str:
        if not name or name in ("CPU", "GPU", "memory", "object_store_memory") or name.startswith("node:"):
            raise ValueError(f"{name!r} is not a custom Ray resource name (like {RAY_RESOURCE!r})")
        return name


class EnvConfig(Section):
    # Images
    base_image: str = "srl-agent/base:bookworm"
    """The image tasks build on: built offline with debootstrap, or from `registry_image`."""
    registry_image: str | None = None
    """An image to pull and use as the base instead of building offline (e.g. a Debian/Python image)."""
    debian_mirror: str = "http://deb.debian.org/debian"
    """Mirror for the offline build; plain HTTP, so it works without the CA bundle."""
    debian_suite: str = "bookworm"
    """Debian release of the offline-built base image."""
    ca_bundle: str | None = "auto"
    """CA bundle mounted into builds, never into images: "auto" (the host's, if any), a path, or null."""
    cache_dir: str = "~/.cache/srl-agent"
    """Debootstrap trees and the .deb cache (SRL_AGENT_CACHE overrides it); never inside the repository."""
    build_timeout: float = Field(1800.0, gt=0)
    """Seconds one task image's setup script may run."""

    # Containers
    memory: str = "2g"
    """Docker memory limit of a container; swap is capped at the same value."""
    cpus: float = Field(1.0, gt=0)
    """CPUs a container may use."""
    pids_limit: int = Field(256, ge=16)
    """Most processes in a container (contains fork bombs)."""
    network: bool = False
    """Whether containers see a network; off unless a task needs it."""
    workdir: str = "/testbed"
    """Where the repository is in the container: the shell starts there and `diff` reads it."""
    hide_history: bool = True
    """Leave only the base commit and its ancestors in the repository's git history (no later commits,
    other refs, reflogs or unreachable objects), so the agent cannot read the fix from it."""

    # Shell
    command_timeout: float = Field(60.0, gt=0)
    """Seconds before a command is interrupted (when the caller gives no timeout)."""
    output_cap: int = Field(100_000, ge=1_000)
    """Bytes of one command's output kept (head + tail)."""
    interrupt_grace: float = Field(3.0, gt=0)
    """Seconds an interrupted command is given to stop before the shell is recycled."""

    # Episodes and the pool
    reset: Literal["warm", "fresh"] = "warm"
    """Between episodes: warm restores the repository in the same container; fresh starts a new one."""
    pool_size: int = Field(2, ge=1)
    """Most environments an `EnvironmentPool` keeps started at once (on the default engine): the
    episodes of evaluation and SWE RLVR and the replays of check-experts that run at once (their
    `--workers` flags set it); with `docker_hosts`, their capacities together instead; with `backend:
    ray`, fewer while the cluster's nodes offer fewer `ray.resource` units."""
    docker_hosts: list[DockerHost] = Field(default_factory=list)
    """Engines the pool spreads environments over, each with its capacity; empty: the one engine
    DOCKER_HOST names (default: the local socket) with `pool_size` as its capacity."""
    backend: Literal["docker", "ray"] = "docker"
    """Where the pool's environments run: `docker`, on this process's engines (`docker_hosts`, else the
    default one); `ray`, on the nodes of a Ray cluster (`ray`), each in its own local engine."""
    ray: RayCluster = Field(default_factory=RayCluster)
    """The cluster of `backend: ray`; the `ray` extra."""
    engine_retry: float = Field(30.0, gt=0)
    """Seconds before an engine that stopped answering is pinged again (doubled after each failed
    ping, up to 10 minutes); it rejoins the pool when it answers."""

    @model_validator(mode="after")
    def _one_backend(self) -> EnvConfig:
        if self.backend == "ray" and self.docker_hosts:
            raise ValueError(
                "docker_hosts and backend: ray both place environments: with ray each node uses its own"
                " engine; leave docker_hosts empty"
            )
        return self

    def resolved_ca_bundle(self) -> Path | None:
        """The CA bundle file to pass into builds, or None. A given path that does not exist is an error."""
        if self.ca_bundle is None:
            return None
        if self.ca_bundle == "auto":
            return Path(HOST_CA_BUNDLE) if os.path.isfile(HOST_CA_BUNDLE) else None
        path = Path(self.ca_bundle).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"environment.ca_bundle: no such file {path}")
        return path

    def resolved_cache_dir(self) -> Path:
        return Path(os.environ.get("SRL_AGENT_CACHE", self.cache_dir)).expanduser()


class GradingConfig(Section):
    """How a patch is graded (`environments.grader`): the `grading` section, one for evaluation, SWE
    RLVR, replay and check-experts, so that they cannot disagree about the same patch."""

    grader: Literal["auto", "fast", "harness"] = "auto"
    """`fast`: the task's tests in the episode's own container, reset first (tasks whose test command
    and log parser are known: bundled and generated tasks, SWE-smith rows with a profile);
    `harness`: the official swebench harness (a container of its own, about 15 s a patch); `auto`:
    fast where the task allows it, else the harness."""
    test_timeout: int = Field(600, gt=0)
    """Seconds the tests of one patch may run; past it the grading failed (infrastructure: no verdict)."""
