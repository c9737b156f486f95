"""The Docker labels srl-agent writes on containers and images: the one definition of every name.

Containers (sandboxes from `container.start_container` and short-lived build containers from
`images`): `MANAGED_LABEL=1` and `OWNER_LABEL=<owner_id()>`, so that `container.reap_leaked()` can
remove those whose owner process is gone; build containers add `ROLE_LABEL=build`, and containers of
the Ray backend `RAY_NODE_LABEL=<the Ray node's id>` (never on a build container, so no image carries it).

Images (`images.ensure_base_image`, `images.build_task_image`): `INPUTS_LABEL` (the hash of the
build's inputs; an image is rebuilt only when it changes), and on task images `BASE_COMMIT_LABEL` and
`WORKDIR_LABEL` (which commit of the repository, and where). An image is committed from a build
container, whose labels it would inherit: the `CONTAINER_LABELS` are blanked on every image, so that
containers started from it (by us or by the swebench harness) are not taken for leaked ones.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

MANAGED_LABEL = "srl-agent.managed"
OWNER_LABEL = "srl-agent.owner"
ROLE_LABEL = "srl-agent.role"
RAY_NODE_LABEL = "srl-agent.ray_node"
CONTAINER_LABELS = (MANAGED_LABEL, OWNER_LABEL, ROLE_LABEL)
INPUTS_LABEL = "srl-agent.inputs"
BASE_COMMIT_LABEL = "srl-agent.base_commit"
WORKDIR_LABEL = "srl-agent.workdir"


def owner_id(pid: int | None = None) -> str:
    """`host:pid:start-time` of a process (default: this one); start time makes reused pids distinct."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start_time(pid)}"


def process_start_time(pid: int) -> str:
    """Boot id + the process's start time in clock ticks; '' when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return f"{_boot_id()}.{stat.rsplit(')', 1)[1].split()[19]}"


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "?"
