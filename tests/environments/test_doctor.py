"""`diagnose()`: all green on a working machine; a dead engine is reported with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from environments.config import EnvConfig
from environments.doctor import diagnose, format_checks


@pytest.mark.docker
def test_all_checks_pass_with_an_engine_and_a_base_image() -> None:
    from environments.images import ensure_base_image

    ensure_base_image(EnvConfig())
    checks = diagnose(EnvConfig())
    assert [c.name for c in checks] == [
        "docker-py installed", "engine reachable", "base image present", "container runs a command",
    ]  # fmt: skip
    assert all(c.ok for c in checks), format_checks(checks)
    assert "Python 3" in checks[-1].detail


def test_dead_engine_fails_with_the_fix_and_skips_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/gone.sock")
    checks = diagnose(EnvConfig())
    by_name = {c.name: c for c in checks}
    assert not by_name["engine reachable"].ok
    assert "dockerd" in by_name["engine reachable"].fix
    assert by_name["container runs a command"].detail == "skipped: engine unreachable"
    report = format_checks(checks)
    assert "[FAIL] engine reachable" in report and "fix: start it with" in report


@pytest.mark.docker
def test_missing_base_image_points_at_the_build_command() -> None:
    checks = diagnose(EnvConfig(base_image="srl-agent-test/never-built:none"))
    image_check = next(c for c in checks if c.name == "base image present")
    assert not image_check.ok and "python -m environments build" in image_check.fix
    assert checks[-1].detail == "skipped: no base image"
