"""Images: the base image (built offline or taken from a registry) and per-task images.

- `ensure_base_image(cfg)`: the image every task builds on: Debian with bash, git, patch, procps,
  python3, pip, venv and python3-pytest (from Debian, so tests run without PyPI). With
  `cfg.registry_image` set it is pulled (or found locally) and relabelled; otherwise, as when no
  registry is reachable, it is built offline: `debootstrap --variant=minbase` from a Debian mirror over
  plain HTTP into `cfg.cache_dir` (never the repository), then imported (about 75 s + 10 s once; the
  tree is kept, so a re-import takes about 10 s).
- `build_task_image(tag, base, repo, commit, setup_script)`: the base plus the repository at `commit` in
  /testbed (a git checkout whose HEAD is that commit) and whatever `setup_script` installs. The setup
  runs in a container with network and, when given, the host CA bundle mounted read-only and named in
  SSL_CERT_FILE / PIP_CERT / REQUESTS_CA_BUNDLE / GIT_SSL_CAINFO, so pip and git work behind TLS
  interception; the bundle is a mount, so it never becomes part of the image.

`copy_image(source, target, tag)` moves an image from one engine to another (images are per engine):
the environment pool seeds an engine that lacks an image from one that has it.

Both are cached: an image carries the hash of its inputs in the label `srl-agent.inputs` and is rebuilt
only when that hash changes (or `rebuild=True`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from environments import docker_engine
from environments.config import EnvConfig
from environments.labels import (
    BASE_COMMIT_LABEL,
    CONTAINER_LABELS,
    INPUTS_LABEL,
    MANAGED_LABEL,
    OWNER_LABEL,
    ROLE_LABEL,
    WORKDIR_LABEL,
    owner_id,
)

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

# Bump when the way an image is made changes, to invalidate the cached ones.
BASE_RECIPE = 1
TASK_RECIPE = 2
BASE_PACKAGES = (
    "bash", "ca-certificates", "git", "patch", "procps", "less",
    "python3", "python3-pip", "python3-venv", "python3-pytest", "python-is-python3",
)  # fmt: skip
IMAGE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "PIP_BREAK_SYSTEM_PACKAGES=1",  # Debian marks its python as externally managed (PEP 668)
    "PIP_ROOT_USER_ACTION=ignore",
    "PYTHONDONTWRITEBYTECODE=1",  # no __pycache__ in repositories, so never in a patch
)
CA_MOUNT = "/run/srl-agent/ca-bundle.crt"
CA_ENV_NAMES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
KEEPER = ["sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 86400 & wait $!; done']


class ImageBuildError(RuntimeError):
    """An image could not be built; the message names the step and ends with the last lines of its log."""


def ensure_base_image(
    cfg: EnvConfig | None = None, *, client: docker.DockerClient | None = None, rebuild: bool = False
) -> str:
    """The base image's tag (`cfg.base_image`), building or pulling it only when its inputs changed."""
    cfg = cfg or EnvConfig()
    client = client or docker_engine.shared_client()
    if cfg.registry_image:
        inputs = _hash({"recipe": BASE_RECIPE, "registry_image": cfg.registry_image, "env": IMAGE_ENV})
    else:
        inputs = _hash(_offline_inputs(cfg))
    if not rebuild and image_label(client, cfg.base_image, INPUTS_LABEL) == inputs:
        return cfg.base_image
    if cfg.registry_image:
        try:
            _base_from_registry(client, cfg, inputs)
            return cfg.base_image
        except docker_engine.APIError as e:
            log.warning(
                "cannot use registry image %s (%s); building the base image offline", cfg.registry_image, e
            )
            inputs = _hash(_offline_inputs(cfg))
            if not rebuild and image_label(client, cfg.base_image, INPUTS_LABEL) == inputs:
                return cfg.base_image  # the offline build from an earlier fallback is current
    _base_offline(client, cfg, inputs)
    return cfg.base_image


def build_task_image(
    tag: str,
    base: str,
    repo: str | Path,
    commit: str,
    setup_script: str = "",
    *,
    ca_bundle: str | Path | None = "auto",
    network: bool = True,
    workdir: str = "/testbed",
    client: docker.DockerClient | None = None,
    timeout: float = 1800.0,
    rebuild: bool = False,
) -> str:
    """Build (or reuse) image `tag`: `base` + `repo` at `commit` in `workdir` + `setup_script` run there.

    `repo` is a local git repository (any commit-ish resolvable in it). `setup_script` is bash, run with
    `set -e` in `workdir`, with network when `network` (for pip/apt) and the CA bundle mounted ("auto":
    the host's, when it exists; None: none). The image's HEAD is `commit`, its labels carry the commit
    and the hash of the inputs. Raises ImageBuildError with the log tail when the setup fails.
    """
    import git

    client = client or docker_engine.shared_client()
    base_id = client.images.get(base).id
    repository = git.Repo(repo)
    try:
        sha = repository.commit(commit).hexsha
    except (ValueError, git.BadName) as e:
        raise ImageBuildError(f"{repo}: commit {commit!r} not found ({e})") from None
    inputs = _hash(
        {"recipe": TASK_RECIPE, "base": base_id, "commit": sha, "setup": setup_script, "workdir": workdir}
    )
    if not rebuild and image_label(client, tag, INPUTS_LABEL) == inputs:
        return tag
    ca = _resolve_ca(ca_bundle)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="srl-task-") as tmp:
        checkout = Path(tmp) / "repo"
        clone = git.Repo.clone_from(str(Path(repo).resolve()), checkout, no_checkout=True)
        clone.git.checkout(sha, detach=True)
        clone.delete_remote(clone.remote("origin"))  # no host paths inside the image
        archive = _tar_directory(checkout, workdir.strip("/"))
    container = _setup_container(client, base, network=network, ca=ca)
    try:
        container.put_archive("/", archive)
        script = f"set -e\ncd {workdir}\ngit config --global --add safe.directory '*'\n{setup_script}\n"
        code, tail = _exec_logged(client, container, script, timeout=timeout, env=_ca_env(ca))
        if code != 0:
            raise ImageBuildError(f"{tag}: setup script exited with {code}; last output:\n{tail}")
        repo_name, version = split_tag(tag)
        container.commit(
            repository=repo_name,
            tag=version,
            # The setup container's own labels would be merged into the image's: blank them, so that
            # containers made from the image (by us or by the swebench harness) are not taken for leaks.
            conf={
                "Labels": {
                    INPUTS_LABEL: inputs,
                    BASE_COMMIT_LABEL: sha,
                    WORKDIR_LABEL: workdir,
                    **{name: "" for name in CONTAINER_LABELS},
                },
                "WorkingDir": workdir,
                "Cmd": ["/bin/bash"],
            },
        )
    finally:
        container.remove(force=True)
    log.info("built %s (%s at %s) in %.1f s", tag, Path(repo).name, sha[:12], time.monotonic() - started)
    return tag


def image_label(client: docker.DockerClient, tag: str, label: str) -> str | None:
    """The value of `label` on image `tag`, or None when the image or the label is absent."""
    try:
        image = client.images.get(tag)
    except docker_engine.ImageNotFound:
        return None
    return (image.labels or {}).get(label)


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker_engine.ImageNotFound:
        return False
    return True


def image_facts(names: Sequence[str], client: docker.DockerClient | None = None) -> dict[str, dict[str, Any]]:
    """What the engine says each image is, for a run's manifest: its id (the content hash of its
    config), repo digests (a registry's name for it; none for images built here), creation time and
    labels. An image the engine lacks, or an engine that cannot answer, is a row with an `error`."""
    try:
        client = client or docker_engine.shared_client()
    except docker_engine.EngineUnavailable as e:
        return {name: {"error": f"no Docker engine: {e}"} for name in dict.fromkeys(names)}
    facts: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(names):
        try:
            image = client.images.get(name)
        except docker_engine.ImageNotFound:
            facts[name] = {"error": "not on the engine"}
            continue
        facts[name] = {"id": image.id, "repo_digests": image.attrs.get("RepoDigests") or [],
                       "created": image.attrs.get("Created"), "labels": image.labels or {}}  # fmt: skip
    return facts


def copy_image(source: docker.DockerClient, target: docker.DockerClient, tag: str) -> None:
    """Copy image `tag` from engine `source` to engine `target`, streamed (`docker save | docker load`).

    The image keeps its id, tag and labels, so its input hash still says whether it is current; layers
    the target already has are not stored twice. About 10 s for the 300 MB base image between two local
    engines; over a network, its size over the link's speed.
    """
    started = time.monotonic()
    target.images.load(source.images.get(tag).save(named=tag))
    log.info("copied %s to another engine in %.1f s", tag, time.monotonic() - started)


def split_tag(tag: str) -> tuple[str, str]:
    """`registry:5000/name:v1` -> (`registry:5000/name`, `v1`); no tag means `latest`."""
    name, sep, version = tag.rpartition(":")
    if not sep or "/" in version:
        return tag, "latest"
    return name, version


def _offline_inputs(cfg: EnvConfig) -> dict[str, Any]:
    return {
        "recipe": BASE_RECIPE,
        "suite": cfg.debian_suite,
        "mirror": cfg.debian_mirror,
        "packages": sorted(BASE_PACKAGES),
        "env": IMAGE_ENV,
    }


def _base_from_registry(client: docker.DockerClient, cfg: EnvConfig, inputs: str) -> None:
    assert cfg.registry_image
    if not image_exists(client, cfg.registry_image):
        log.info("pulling %s", cfg.registry_image)
        client.images.pull(cfg.registry_image)
    container = client.containers.create(cfg.registry_image, command=["true"], labels=build_labels())
    try:
        repo_name, version = split_tag(cfg.base_image)
        container.commit(
            repository=repo_name,
            tag=version,
            changes=[f"LABEL {INPUTS_LABEL}={inputs}", *(f'LABEL {name}=""' for name in CONTAINER_LABELS)],
        )
    finally:
        container.remove(force=True)


def _base_offline(client: docker.DockerClient, cfg: EnvConfig, inputs: str) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "building the base image offline needs debootstrap (`apt-get install -y debootstrap`), "
            "or set environment.registry_image to an image to pull"
        )
    cache = cfg.resolved_cache_dir()
    root = cache / "rootfs" / f"{cfg.debian_suite}-{inputs[:12]}"
    done = root.with_name(root.name + ".complete")
    if not done.exists():
        _debootstrap(cfg, root, cache / "debs")
        done.touch()
    started = time.monotonic()
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    try:
        changes = [f"ENV {item}" for item in IMAGE_ENV] + [
            'CMD ["/bin/bash"]',
            f"LABEL {INPUTS_LABEL}={inputs}",
        ]
        repo_name, version = split_tag(cfg.base_image)
        docker_engine.low_level(client).import_image(
            src=tar.stdout, repository=repo_name, tag=version, changes=changes, stream_src=True
        )
    finally:
        tar.stdout.close()
        if tar.wait() != 0:
            raise ImageBuildError(f"tar of {root} failed with exit status {tar.returncode}")
    log.info("imported %s from %s in %.1f s", cfg.base_image, root, time.monotonic() - started)


def _debootstrap(cfg: EnvConfig, root: Path, debs: Path) -> None:
    if root.exists():
        shutil.rmtree(root)  # a half-made tree from an interrupted run
    root.parent.mkdir(parents=True, exist_ok=True)
    debs.mkdir(parents=True, exist_ok=True)
    command = [
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        f"--cache-dir={debs}", cfg.debian_suite, str(root), cfg.debian_mirror,
    ]  # fmt: skip
    log.info("running %s (about a minute)", " ".join(command))
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise ImageBuildError(f"debootstrap failed with exit status {result.returncode}:\n{tail}")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root / junk).glob("*"):
            if path.is_file():
                path.unlink()
    log.info("debootstrap finished in %.1f s", time.monotonic() - started)


def build_labels() -> dict[str, str]:
    """Labels of a short-lived build container: managed and owned, so a crash mid-build is reaped too."""
    return {MANAGED_LABEL: "1", OWNER_LABEL: owner_id(), ROLE_LABEL: "build"}


def _resolve_ca(ca_bundle: str | Path | None) -> Path | None:
    if ca_bundle is None:
        return None
    return EnvConfig(ca_bundle=str(ca_bundle)).resolved_ca_bundle()


def _ca_env(ca: Path | None) -> dict[str, str]:
    return {name: CA_MOUNT for name in CA_ENV_NAMES} if ca else {}


def _setup_container(client: docker.DockerClient, base: str, *, network: bool, ca: Path | None) -> Any:
    # A bind mount given as `mounts` (not `volumes`, which would also declare a VOLUME that the commit
    # copies into the image): only an empty mount point remains in the image.
    mounts = [{"Type": "bind", "Source": str(ca), "Target": CA_MOUNT, "ReadOnly": True}] if ca else []
    return client.containers.run(
        base, command=KEEPER, detach=True, network_mode="bridge" if network else "none",
        mounts=mounts, labels=build_labels(),
    )  # fmt: skip


def _exec_logged(
    client: docker.DockerClient, container: Any, script: str, *, timeout: float, env: dict[str, str]
) -> tuple[int, str]:
    """Run `script` with bash in the container, logging its output; (exit status, last 40 lines)."""
    api = docker_engine.low_level(client)
    command = ["timeout", "--signal=KILL", str(int(timeout)), "bash", "-c", script]
    exec_id = api.exec_create(container.id, command, environment=env)["Id"]
    lines: list[str] = []
    pending = ""
    for chunk in api.exec_start(exec_id, stream=True):
        pending += chunk.decode("utf-8", errors="replace")
        *complete, pending = pending.split("\n")
        for line in complete:
            log.debug("setup: %s", line)
        lines = (lines + complete)[-40:]
    lines = (lines + [pending])[-40:] if pending else lines
    code = api.exec_inspect(exec_id)["ExitCode"]
    if code == 137:
        lines.append(f"(killed: the setup script ran past {timeout:.0f} s)")
    return int(code), "\n".join(lines)


def _tar_directory(directory: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=arcname, filter=_root_owned)
    return buffer.getvalue()


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _hash(inputs: dict[str, Any] | Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
