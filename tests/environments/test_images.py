"""Images: the offline base image has what tasks and the harness need; task images are exact and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
from envtest_support import TEST_IMAGE, sample_image, sample_repo

from environments import docker_engine
from environments.config import HOST_CA_BUNDLE, EnvConfig
from environments.images import ImageBuildError, build_task_image, ensure_base_image, image_label, split_tag
from environments.labels import BASE_COMMIT_LABEL, CONTAINER_LABELS, INPUTS_LABEL, ROLE_LABEL
from trajectories.config import ConfigError, resolve_config


def test_split_tag() -> None:
    assert split_tag("srl-agent/base:bookworm") == ("srl-agent/base", "bookworm")
    assert split_tag("swebench/sweb.eval.x86_64.a__b-1") == ("swebench/sweb.eval.x86_64.a__b-1", "latest")
    assert split_tag("localhost:5000/x/y") == ("localhost:5000/x/y", "latest")
    assert split_tag("localhost:5000/x/y:v2") == ("localhost:5000/x/y", "v2")


def test_config_ca_bundle_and_types(tmp_path: Path) -> None:
    assert EnvConfig(ca_bundle=None).resolved_ca_bundle() is None
    auto = EnvConfig().resolved_ca_bundle()
    assert auto == (Path(HOST_CA_BUNDLE) if Path(HOST_CA_BUNDLE).is_file() else None)
    with pytest.raises(FileNotFoundError, match="environment.ca_bundle: no such file"):
        EnvConfig(ca_bundle=str(tmp_path / "none.crt")).resolved_ca_bundle()
    with pytest.raises(ConfigError, match="pids_limit"):
        resolve_config(EnvConfig, overrides=["pids_limit=2"])
    with pytest.raises(ConfigError, match="memroy"):
        resolve_config(EnvConfig, overrides=["memroy=1g"])


@pytest.mark.docker
def test_base_image_has_the_tools_tasks_and_the_harness_need() -> None:
    client = docker_engine.connect()
    tag = ensure_base_image(EnvConfig(), client=client)
    image = client.images.get(tag)
    assert image.labels[INPUTS_LABEL]
    script = (
        "set -e; bash --version | head -1; git --version; patch --version | head -1; python --version; "
        "python3 -m pytest --version; python3 -m pip --version; ps --version; test -s /etc/ssl/certs/ca-certificates.crt"
    )
    out = client.containers.run(tag, ["bash", "-c", script], remove=True, network_mode="none").decode()
    for tool in ("GNU bash", "git version", "GNU patch", "Python 3", "pytest", "pip", "procps"):
        assert tool in out
    assert ensure_base_image(EnvConfig(), client=client) == tag  # cached: same inputs, no rebuild
    assert client.images.get(tag).id == image.id


@pytest.mark.docker
def test_task_image_holds_the_repository_at_the_commit() -> None:
    client = docker_engine.connect()
    tag = sample_image()
    _, sha = sample_repo()
    assert image_label(client, tag, BASE_COMMIT_LABEL) == sha
    script = "pwd && git rev-parse HEAD && git status --porcelain && git remote && cat calc.egg-info/PKG-INFO"
    out = client.containers.run(tag, ["bash", "-c", script], remove=True, network_mode="none").decode()
    assert out == f"/testbed\n{sha}\nbuilt\n"  # workdir, HEAD at the commit, clean, no host remote, setup ran


@pytest.mark.docker
def test_task_images_are_cached_by_their_inputs() -> None:
    client = docker_engine.connect()
    first = client.images.get(sample_image()).id
    repo, sha = sample_repo()
    base = EnvConfig().base_image
    setup = "mkdir -p calc.egg-info && echo built > calc.egg-info/PKG-INFO && python3 -m pytest -q tests"
    assert build_task_image(TEST_IMAGE, base, repo, sha, setup, network=False, client=client) == TEST_IMAGE
    assert client.images.get(TEST_IMAGE).id == first  # same inputs: reused
    other = "srl-agent-test/calc-other:latest"
    try:
        build_task_image(other, base, repo, "HEAD~1", "true", network=False, client=client)
        assert client.images.get(other).id != first
        assert image_label(client, other, BASE_COMMIT_LABEL) != sha
    finally:
        client.images.remove(other, force=True)


@pytest.mark.docker
def test_failing_setup_and_unknown_commit_are_clear_errors() -> None:
    client = docker_engine.connect()
    repo, sha = sample_repo()
    base = EnvConfig().base_image
    with pytest.raises(ImageBuildError, match=r"setup script exited with 3; last output:\nabout to fail"):
        build_task_image("srl-agent-test/broken", base, repo, sha, "echo about to fail; exit 3",
                         network=False, client=client)  # fmt: skip
    with pytest.raises(ImageBuildError, match="commit 'no-such-ref' not found"):
        build_task_image("srl-agent-test/broken", base, repo, "no-such-ref", "", client=client)
    leftovers = client.containers.list(all=True, filters={"label": f"{ROLE_LABEL}=build"})
    assert leftovers == []  # the setup container is removed even when the build fails


@pytest.mark.docker
def test_ca_bundle_reaches_the_setup_but_not_the_image(tmp_path: Path) -> None:
    client = docker_engine.connect()
    repo, sha = sample_repo()
    bundle = tmp_path / "corp-ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nfake corporate root\n-----END CERTIFICATE-----\n")
    tag = "srl-agent-test/calc-ca:latest"
    setup = (
        'cat "$SSL_CERT_FILE" > /testbed/seen.txt && echo "$PIP_CERT $GIT_SSL_CAINFO" >> /testbed/seen.txt'
    )
    try:
        build_task_image(tag, EnvConfig().base_image, repo, sha, setup, ca_bundle=bundle, network=False,
                         client=client, rebuild=True)  # fmt: skip
        script = "cat /testbed/seen.txt; wc -c < /run/srl-agent/ca-bundle.crt"
        out = client.containers.run(tag, ["bash", "-c", script], remove=True, network_mode="none").decode()
        lines = out.splitlines()
        assert "fake corporate root" in out
        assert lines[-2] == "/run/srl-agent/ca-bundle.crt /run/srl-agent/ca-bundle.crt"
        assert lines[-1] == "0"  # only the empty mount point is left in the image
        assert client.images.get(tag).attrs["Config"]["Volumes"] in (None, {})
    finally:
        client.images.remove(tag, force=True)


@pytest.mark.docker
def test_registry_image_is_used_when_available() -> None:
    client = docker_engine.connect()
    base = ensure_base_image(EnvConfig(), client=client)  # stands in for an image a registry gave us
    cfg = EnvConfig(registry_image=base, base_image="srl-agent-test/from-registry:latest")
    try:
        assert ensure_base_image(cfg, client=client) == cfg.base_image
        made = client.images.get(cfg.base_image)
        assert made.labels[INPUTS_LABEL] and all(made.labels.get(name) == "" for name in CONTAINER_LABELS)
        assert ensure_base_image(cfg, client=client) == cfg.base_image
        assert client.images.get(cfg.base_image).id == made.id  # cached
    finally:
        client.images.remove(cfg.base_image, force=True)


@pytest.mark.slow
@pytest.mark.docker
def test_unreachable_registry_falls_back_to_the_offline_build() -> None:
    client = docker_engine.connect()
    cfg = EnvConfig(
        registry_image="srl-agent-test/not-in-any-registry:1", base_image="srl-agent-test/fallback:latest"
    )
    try:
        assert ensure_base_image(cfg, client=client) == cfg.base_image
        out = client.containers.run(cfg.base_image, ["git", "--version"], remove=True, network_mode="none")
        assert out.startswith(b"git version")
    finally:
        client.images.remove(cfg.base_image, force=True)
