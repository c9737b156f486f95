"""`diagnose()`: can this machine run repository environments? Each check says what it saw and the fix.

Checks, in order (a failed one skips those that depend on it): docker-py is importable, the engine
answers, the base image is present and current, a sandboxed container starts and runs a command
through the persistent shell. `python -m environments doctor` prints them and exits non-zero when one
fails.

With `environment.docker_hosts` every engine is checked, each check's name ending with its URL. An
engine without the base image passes when another engine has it (the pool copies it on first use;
its container check then waits for that copy and is left out).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from environments import docker_engine
from environments.config import EnvConfig

if TYPE_CHECKING:
    import docker


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def diagnose(cfg: EnvConfig | None = None) -> list[Check]:
    cfg = cfg or EnvConfig()
    checks: list[Check] = []
    try:
        import docker

        checks.append(Check("docker-py installed", True, f"docker {docker.__version__}"))
    except ImportError as e:
        return [Check("docker-py installed", False, str(e), "pip install docker")]

    reachable: list[tuple[str, docker.DockerClient]] = []  # (name suffix, client) of each engine
    for host in cfg.docker_hosts or [None]:
        suffix, where = ("", docker_engine.engine_address()) if host is None else (f" ({host.url})", host.url)
        try:
            client = docker_engine.connect(host, timeout=30)
            version = client.version().get("Version", "?")
            checks.append(Check("engine reachable" + suffix, True, f"Docker {version} at {where}"))
            reachable.append((suffix, client))
        except docker_engine.EngineUnavailable as e:
            fix = docker_engine.START_HINT if host is None else docker_engine.HOST_HINT
            checks.append(Check("engine reachable" + suffix, False, str(e), fix))
            names = ["base image present" + suffix, "container runs a command" + suffix]
            checks += _skipped(names, "engine unreachable")

    from environments.images import image_exists

    with_base = {suffix for suffix, client in reachable if image_exists(client, cfg.base_image)}
    for suffix, client in reachable:
        if suffix not in with_base and with_base:
            detail = f"{cfg.base_image} not here; the pool copies it from another engine on first use"
            checks.append(Check("base image present" + suffix, True, detail))
            continue
        checks.append(_check_base_image(client, cfg, suffix))
        if not checks[-1].ok:
            checks += _skipped(["container runs a command" + suffix], "no base image")
            continue
        checks.append(_check_container(client, cfg, suffix))
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"       fix: {check.fix}")
    return "\n".join(lines)


def _check_base_image(client: docker.DockerClient, cfg: EnvConfig, suffix: str = "") -> Check:
    from environments.images import image_exists

    if image_exists(client, cfg.base_image):
        return Check("base image present" + suffix, True, cfg.base_image)
    return Check(
        "base image present" + suffix, False, f"{cfg.base_image} not found",
        "python -m environments build  (builds it offline with debootstrap, about 90 s)",
    )  # fmt: skip


def _check_container(client: docker.DockerClient, cfg: EnvConfig, suffix: str = "") -> Check:
    from environments.container import DockerEnvironment

    started = time.monotonic()
    try:
        with DockerEnvironment(cfg.base_image, cfg, client=client).start() as env:
            boot = time.monotonic() - started
            result = env.run("echo srl-ok && python3 --version && git --version", timeout=30)
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        return Check(
            "container runs a command" + suffix,
            False,
            f"{type(e).__name__}: {e}",
            "check `docker run --rm " + cfg.base_image + " true` and the engine's log",
        )
    if result.exit_code != 0 or "srl-ok" not in result.output:
        return Check(
            "container runs a command" + suffix,
            False,
            f"exit {result.exit_code}: {result.output[-300:]}",
            "python -m environments build  (rebuild the base image)",
        )
    versions = ", ".join(result.output.split("\n")[1:3])
    return Check("container runs a command" + suffix, True, f"started in {boot:.2f} s; {versions}")


def _skipped(names: list[str], why: str) -> list[Check]:
    return [Check(name, False, f"skipped: {why}") for name in names]
