"""Configuration of repository environments: images, container limits, the shell, the pool.

Defaults live here and only here. A training or evaluation config embeds `EnvConfig` as its
`environment` section; `python -m environments` reads it on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from trajectories.config import Section

HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


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
    """Most environments an `EnvironmentPool` keeps started at once."""

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
