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
    base_image: str = "srl-agent/base:bookworm"  # the offline-built (or registry) image tasks build on
    registry_image: str | None = None  # e.g. a Debian/Python image to pull instead of building offline
    debian_mirror: str = "http://deb.debian.org/debian"  # plain HTTP: works without the CA bundle
    debian_suite: str = "bookworm"
    # "auto" = the host's bundle when it exists; a path; or null for none. Passed into image builds so
    # pip and git work behind TLS interception; never baked into the image.
    ca_bundle: str | None = "auto"
    cache_dir: str = "~/.cache/srl-agent"  # debootstrap trees and .deb cache; never inside the repository
    build_timeout: float = Field(1800.0, gt=0)  # seconds for one task image's setup script

    # Containers
    memory: str = "2g"  # docker memory limit (swap is capped at the same value)
    cpus: float = Field(1.0, gt=0)
    pids_limit: int = Field(256, ge=16)  # contains fork bombs
    network: bool = False  # containers see no network unless a task needs it
    workdir: str = "/testbed"

    # Shell
    command_timeout: float = Field(60.0, gt=0)  # seconds before a command is interrupted
    output_cap: int = Field(100_000, ge=1_000)  # bytes of one command's output kept (head + tail)
    interrupt_grace: float = Field(3.0, gt=0)  # seconds to let an interrupted command settle before recycling

    # Episodes and the pool
    reset: Literal["warm", "fresh"] = "warm"  # warm = restore the repository in the same container
    pool_size: int = Field(2, ge=1)

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
