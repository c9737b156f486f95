"""Faults, for real: hangs, floods, fork bombs, network, deleted repositories, a dead engine, leaks.

After each fault the environment must still answer (or have been recycled, saying so), and nothing
outside the container may change.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from envtest_support import fast_config, sample_image

from environments import docker_engine
from environments.container import DockerEnvironment, reap_leaked
from environments.labels import MANAGED_LABEL, OWNER_LABEL, owner_id
from environments.shell import ContainerStopped


@pytest.fixture(scope="module")
def env():
    with DockerEnvironment(sample_image(), fast_config()) as environment:
        yield environment


@pytest.mark.docker
def test_hanging_command_times_out_and_the_shell_keeps_its_state(env: DockerEnvironment) -> None:
    env.run("cd /testbed/calc; export KEEP=yes")
    started = time.monotonic()
    result = env.run("echo before; sleep 10000", timeout=1)
    assert result.timed_out and result.output.startswith("before\n")
    assert time.monotonic() - started < 4
    assert result.note is None  # interrupted, not recycled
    after = env.run('pwd; echo "$KEEP"')
    assert (after.output, after.exit_code) == ("/testbed/calc\nyes\n", 0)
    assert env.run("pgrep -fx 'sleep 10000'").exit_code == 1  # the sleeper is gone


@pytest.mark.docker
def test_builtin_loop_that_ignores_kills_gets_a_new_shell(env: DockerEnvironment) -> None:
    env.run("cd /testbed/tests")
    result = env.run("while :; do :; done", timeout=1)
    assert result.timed_out and result.exit_code is None
    assert "shell was restarted" in (result.note or "")
    assert env.run("pwd").output == "/testbed/tests\n"


@pytest.mark.docker
def test_finite_flood_is_capped_with_a_marker(env: DockerEnvironment) -> None:
    result = env.run("yes | head -c 50000000; echo; echo END", timeout=60)
    assert result.truncated and not result.timed_out and result.exit_code == 0
    assert "bytes of output omitted" in result.output
    assert len(result.output) < env.cfg.output_cap + 200
    assert result.output.startswith("y\ny\n") and result.output.endswith("END\n")
    assert env.run("echo ok").output == "ok\n"


@pytest.mark.docker
def test_endless_flood_times_out_capped(env: DockerEnvironment) -> None:
    result = env.run("cat /dev/urandom | base64", timeout=2)
    assert result.timed_out and result.truncated
    assert len(result.output) < env.cfg.output_cap + 200
    assert env.run("echo ok").output == "ok\n"


@pytest.mark.docker
def test_fork_bomb_is_contained_and_killed_and_files_are_kept() -> None:
    with DockerEnvironment(sample_image(), fast_config(pids_limit=64)) as env:
        env.run("echo keep > /testbed/marker")
        bomb = env.run(":(){ :|:& };:", timeout=3)
        # The bomb backgrounds itself at once; the guard after it or around the next command sees refused
        # forks and kills it (or, if that command hangs in fork retries, the timeout recycles the shell).
        notes = [bomb.note or ""]
        for _ in range(5):
            if notes[-1]:
                break
            result = env.run("cat /testbed/marker && echo alive", timeout=5)
            notes.append(result.note or "")
            time.sleep(0.5)  # the bomb may not have reached the limit yet
        assert any("process limit" in n or "restarted" in n for n in notes), notes
        after = env.run("cat /testbed/marker; ls -d /proc/[0-9]* | wc -l")
        assert (after.exit_code, after.note) == (0, None), (notes, after)
        assert after.output.startswith("keep\n") and int(after.output.split()[1]) < 10, after  # bomb gone
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks


@pytest.mark.docker
def test_memory_hog_is_killed_by_the_limit_and_the_shell_lives() -> None:
    with DockerEnvironment(sample_image(), fast_config(memory="256m")) as env:
        hog = env.run("python3 -c 'x = b\"a\" * (600 * 1024 * 1024)'", timeout=30)
        assert hog.exit_code == 137 and "Killed" in hog.output
        assert env.run("echo alive").output == "alive\n"


@pytest.mark.docker
def test_no_network_by_default(env: DockerEnvironment) -> None:
    probe = "import urllib.request; urllib.request.urlopen('http://deb.debian.org', timeout=5)"
    result = env.run(f'python3 -c "{probe}"', timeout=20)
    assert result.exit_code != 0 and "urlopen error" in result.output
    interfaces = env.run("ls /sys/class/net").output.split()
    assert interfaces == ["lo"]


@pytest.mark.docker
def test_container_is_locked_down(env: DockerEnvironment) -> None:
    attrs = env._require().attrs
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["PidsLimit"] == env.cfg.pids_limit
    assert host["Memory"] == 2 * 1024**3
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not host["Privileged"]
    assert attrs["Config"]["Labels"][MANAGED_LABEL] == "1"
    assert attrs["Config"]["Labels"][OWNER_LABEL] == owner_id()
    assert env.run("mount -t tmpfs none /mnt").exit_code != 0  # no CAP_SYS_ADMIN


@pytest.mark.docker
def test_deleted_repository_is_restored_by_reset(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host file\n")
    with DockerEnvironment(sample_image(), fast_config()) as env:
        first = env.container_id
        env.run("cd / && rm -rf /testbed")
        assert env.run("ls /testbed").exit_code != 0
        env.reset()  # warm restore is impossible: a fresh container replaces it
        assert env.container_id != first
        assert (
            env.run("git status --porcelain && cat calc/ops.py | head -1").output
            == '"""Tiny arithmetic helpers."""\n'
        )
        assert env.diff() == ""
    assert outside.read_text() == "host file\n"


@pytest.mark.docker
def test_warm_reset_restores_files_and_keeps_the_container() -> None:
    with DockerEnvironment(sample_image(), fast_config()) as env:
        first = env.container_id
        env.run(
            "echo junk >> calc/ops.py; touch new.txt; mkdir -p d/e; git checkout -q -b other; "
            "git commit -qam wip; sleep 1000 &"
        )
        env.reset()
        assert env.container_id == first
        assert (
            env.run("git status --porcelain; ls calc.egg-info; pgrep -fx 'sleep 1000'; pwd").output
            == "PKG-INFO\n/testbed\n"
        )
        assert env.run("git rev-parse HEAD").output.strip() == env.base_commit


def test_unreachable_engine_gives_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(docker_engine.EngineUnavailable) as caught:
        docker_engine.connect(timeout=5)
    message = str(caught.value)
    assert (
        f"{tmp_path}/no-engine.sock" in message
        and "dockerd" in message
        and "systemctl start docker" in message
    )


@pytest.mark.docker
def test_reaper_removes_containers_of_dead_owners_only() -> None:
    client = docker_engine.connect()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead_owner = owner_id(child.pid)
    child.kill()
    child.wait()
    image = sample_image()
    made = {
        "dead": client.containers.create(image, "true", labels={MANAGED_LABEL: "1", OWNER_LABEL: dead_owner}),
        "alive": client.containers.create(
            image, "true", labels={MANAGED_LABEL: "1", OWNER_LABEL: owner_id()}
        ),
        "foreign": client.containers.create(image, "true", labels={MANAGED_LABEL: "1"}),
    }
    try:
        removed = reap_leaked(client)
        assert made["dead"].name in removed
        assert made["alive"].name not in removed and made["foreign"].name not in removed
        remaining = {c.id for c in client.containers.list(all=True)}
        assert made["dead"].id not in remaining and made["alive"].id in remaining
    finally:
        for container in made.values():
            try:
                container.remove(force=True)
            except docker_engine.NotFound:
                pass


@pytest.mark.docker
def test_the_reaper_takes_a_container_removed_while_it_lists_in_its_stride(monkeypatch) -> None:
    """Episodes start and end side by side: a container another process removes between the reaper's
    listing and its look at that container must not fail the environment being started."""
    client = docker_engine.connect()
    going = client.containers.create(
        sample_image(), "true", labels={MANAGED_LABEL: "1", OWNER_LABEL: owner_id()}
    )
    inspect = client.api.inspect_container

    def removed_first(resource_id, *args, **kwargs):
        if resource_id == going.id:
            going.remove(force=True)  # the other process is quicker
        return inspect(resource_id, *args, **kwargs)

    monkeypatch.setattr(client.api, "inspect_container", removed_first)
    try:
        assert going.name not in reap_leaked(client)
    finally:
        try:
            going.remove(force=True)
        except docker_engine.NotFound:
            pass


@pytest.mark.docker
def test_stopped_container_is_restarted_and_the_command_still_runs() -> None:
    with DockerEnvironment(sample_image(), fast_config()) as env:
        env.run("cd calc && echo changed >> ops.py")
        with pytest.raises(ContainerStopped):  # the keeper (PID 1) exits: the container stops
            env.run("kill -TERM 1; sleep 5")
        result = env.run("pwd; git status --short")
        assert (result.output, result.exit_code) == ("/testbed/calc\n M ops.py\n", 0)
        assert "restarted" in (result.note or "")
        with pytest.raises(ContainerStopped, match=r"\(exit status 0\)"):
            env.run("kill -TERM 1; sleep 5")
        env.reset()  # a stopped container cannot be restored in place: a fresh one replaces it
        assert env.run("git status --short; pwd").output == "/testbed\n"


@pytest.mark.docker
def test_a_container_killed_under_a_command_is_the_environment_dying_not_the_shell() -> None:
    with DockerEnvironment(sample_image(), fast_config()) as env:
        engine = docker_engine.connect()
        killer = threading.Timer(1.0, lambda: engine.containers.get(env.container_id).kill())
        killer.start()
        try:
            with pytest.raises(ContainerStopped, match=r"stopped while the command ran \(exit status 137\)"):
                env.run("sleep 30")
        finally:
            killer.join()
        assert env.run("echo back").output == "back\n"  # the next command restarts it, saying so
        # the agent's own `exit` is still its shell's doing: a note, and the container lives on
        left = env.run("exit 3")
        assert left.exit_code is None and "The shell exited" in (left.note or "")
