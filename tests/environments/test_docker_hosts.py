"""The environment pool over two Docker engines on this machine: the main one and a second `dockerd`
(own socket, data root, exec root, pidfile, no bridge, own network namespace) that the session fixture
starts and stops.

Episodes spread over both within their capacities and the task image is copied to the engine that
lacks it; when the second engine is stopped mid-run its episodes end as environment errors (what the
trainer masks) while the rest complete on the first, and once restarted it rejoins the rotation.
The second engine needs root, `dockerd` and `unshare`: without them the tests skip (fail under
SRL_REQUIRE_DOCKER=1, as the docker tier does).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from envtest_support import fast_config, sample_image

from environments import docker_engine
from environments.config import DockerHost, EnvConfig
from environments.container import DockerEnvironment
from environments.doctor import diagnose
from environments.images import image_exists
from environments.labels import OWNER_LABEL, owner_id
from environments.pool import EnvironmentPool
from srl_agent.agent import run_episode
from srl_agent.protocols import Turn
from srl_agent.rewards import THINK_CLOSE, THINK_OPEN
from trajectories.actions import render_action
from trajectories.config import ConfigError, resolve_config
from trajectories.record import ToolCall

REPO = Path(__file__).resolve().parents[2]


class Dockerd:
    """A second Docker engine in its own folder: socket, data root, exec root and pidfile there, no
    default bridge and no iptables rules (its containers run with network "none"); `extra` flags (more
    listeners, TLS) go to dockerd.

    It runs in a network namespace of its own (`unshare --net`): a dockerd started with `--bridge none`
    deletes the interface `docker0`, which in the host's namespace is the main engine's bridge (every
    container on the default network of the main engine would then fail to start)."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root, self.extra = root, extra
        self.url = f"unix://{root}/docker.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        dockerd = [
            "dockerd", "--host", self.url, "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
            "--bridge", "none", "--iptables=false", *self.extra,
        ]  # fmt: skip
        # a new network namespace has its loopback down; `exec` keeps the pid, so stop() stops dockerd
        command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *dockerd]
        with open(self.root / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                docker_engine.connect(DockerHost(url=self.url, capacity=1), timeout=2).close()
                return
            except docker_engine.EngineUnavailable:
                time.sleep(0.2)
        self.stop()
        tail = (self.root / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError("the second dockerd did not come up:\n" + "\n".join(tail))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _unavailable(reason: str) -> None:
    if os.environ.get("SRL_REQUIRE_DOCKER") == "1":
        pytest.fail(f"SRL_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def second_engine() -> Iterator[Dockerd]:
    if any(shutil.which(tool) is None for tool in ("dockerd", "unshare", "ip")):
        _unavailable("starting a second engine needs the dockerd, unshare and ip binaries")
    if os.geteuid() != 0:
        _unavailable("a second dockerd needs root")
    root = Path(tempfile.mkdtemp(prefix="srl-dockerd2-", dir="/tmp"))  # short: a socket path is <108 bytes
    engine = Dockerd(root)
    try:
        engine.start()
    except RuntimeError as e:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(str(e))
    main_bridge = Path("/sys/class/net/docker0").exists()
    yield engine
    engine.stop()
    # The data root holds unpacked image layers, tens of thousands of files: removing them takes 5-25 s
    # on a busy disk, which the session need not wait for.
    subprocess.Popen(["rm", "-rf", str(root)], start_new_session=True)
    assert Path("/sys/class/net/docker0").exists() == main_bridge, "the second engine removed docker0"


def two_engines(second: Dockerd, first_capacity: int, second_capacity: int, **changes: object) -> EnvConfig:
    hosts = [
        {"url": docker_engine.engine_address(), "capacity": first_capacity},
        {"url": second.url, "capacity": second_capacity},
    ]
    return fast_config(docker_hosts=hosts, **changes)


def ours(url: str) -> list[str]:
    client = docker_engine.connect(DockerHost(url=url, capacity=1), timeout=10)
    return [
        c.name for c in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner_id()}"})
    ]


@pytest.mark.docker
def test_episodes_spread_over_both_engines_within_capacity_and_the_image_is_copied(second_engine) -> None:
    image = sample_image()  # built on the first engine only
    first = docker_engine.engine_address()
    running: dict[str, int] = {first: 0, second_engine.url: 0}
    peak = dict(running)
    lock = threading.Lock()

    with EnvironmentPool(two_engines(second_engine, 2, 1)) as pool:
        assert pool.size == 3

        def episode(env: DockerEnvironment, n: int) -> tuple[str, str]:
            where = pool.engine_of(env)
            with lock:
                running[where] += 1
                peak[where] = max(peak[where], running[where])
            dirty = env.run("git status --porcelain").output
            env.run(f"echo {n} > /testbed/episode-{n}; sleep 0.5")
            patch = env.diff()
            with lock:
                running[where] -= 1
            assert dirty == "", f"episode {n} started dirty on {where}: {dirty!r}"
            return where, patch

        results = pool.run_parallel(episode, [(image, n) for n in range(9)])
    assert [f"+++ b/episode-{n}" in patch for n, (_, patch) in enumerate(results)] == [True] * 9
    assert {where for where, _ in results} == {first, second_engine.url}
    assert peak == {first: 2, second_engine.url: 1}
    copy = docker_engine.connect(DockerHost(url=second_engine.url, capacity=1)).images.get(image)
    assert copy.id == docker_engine.shared_client().images.get(image).id  # the same image, not a rebuild
    assert ours(first) == [] and ours(second_engine.url) == []


@pytest.mark.docker
def test_prepare_runs_once_per_engine_with_the_base_image_already_there(second_engine) -> None:
    """A task's `prepare` (its image build) runs on each engine the first time that engine gets the
    image, after the pool has copied the base image there (bundled builds start from it)."""
    image, base = sample_image(), fast_config().base_image
    calls: list[tuple[str, bool, bool]] = []  # (engine's data root, base present, image present)

    def prepare(client) -> None:
        calls.append(
            (client.info()["DockerRootDir"], image_exists(client, base), image_exists(client, image))
        )

    with EnvironmentPool(two_engines(second_engine, 1, 1)) as pool:
        for _ in range(2):
            with pool.acquire(image, prepare=prepare) as a, pool.acquire(image, prepare=prepare) as b:
                assert {pool.engine_of(a), pool.engine_of(b)} == {
                    docker_engine.engine_address(),
                    second_engine.url,
                }
    roots = sorted(root for root, _, _ in calls)
    assert roots == sorted(
        [docker_engine.shared_client().info()["DockerRootDir"], str(second_engine.root / "data")]
    )
    assert all(has_base and has_image for _, has_base, has_image in calls)


class Sleeper:
    """A policy that runs `sleep` `turns` times, then submits."""

    def __init__(self, turns: int, seconds: float) -> None:
        self.turns, self.seconds = turns, seconds

    def act(self, example) -> Turn:
        call = ToolCall("bash", {"command": f"sleep {self.seconds}"})
        if example.step_index >= self.turns:
            call = ToolCall("submit")
        return Turn(f"{THINK_OPEN}\nwaiting\n{THINK_CLOSE}\n{render_action(call)}")


@pytest.mark.docker
def test_a_stopped_engine_masks_its_episodes_leaves_the_rotation_and_rejoins(second_engine) -> None:
    image = sample_image()
    first, second = docker_engine.engine_address(), second_engine.url
    started: list[str] = []  # the engine of every episode that began
    began = threading.Condition()
    pool = EnvironmentPool(two_engines(second_engine, 2, 2, engine_retry=0.5))

    ended: dict[str, float] = {}  # when each episode on the second engine ended

    def episode(n: int) -> tuple[str | None, str]:
        """(the engine it ran on, its exit status), or (None, the error) when the pool raised: as the
        trainer does, an exception from the pool would be a masked episode too."""
        try:
            with pool.acquire(image) as env:
                where = pool.engine_of(env)
                with began:
                    started.append(where)
                    began.notify_all()
                result = run_episode(Sleeper(4, 0.5), env, "wait, then submit", f"wait-{n}")
                ended[f"wait-{n}"] = time.monotonic()
                return where, result.exit_status
        except Exception as e:  # noqa: BLE001 - the finding
            return None, f"{type(e).__name__}: {e}"

    try:
        with ThreadPoolExecutor(max_workers=4) as executor:
            futures = [executor.submit(episode, n) for n in range(8)]
            with began:  # two episodes run on each engine (the second copies the image first)
                assert began.wait_for(lambda: started.count(second) == 2, timeout=120)
            stopped = time.monotonic()
            second_engine.stop()
            results = [f.result(timeout=300) for f in futures]
        finished = time.monotonic() - stopped
        masked_after = (
            max(ended[f"wait-{n}"] for n, (where, _) in enumerate(results) if where == second) - stopped
        )
        on_second = [status for where, status in results if where == second]
        assert on_second == ["environment_error"] * 2, results  # masked, not scored
        assert [status for where, status in results if where != second] == ["submitted"] * 6, results
        assert not pool.engines[1].up

        second_engine.start()
        back = time.monotonic()
        # With the first engine's two slots taken, a third environment can only come from the second.
        with pool.acquire(image) as a, pool.acquire(image) as b:
            assert {pool.engine_of(a), pool.engine_of(b)} == {first}
            with pool.acquire(image) as c:
                rejoined = time.monotonic() - back
                assert pool.engine_of(c) == second
                assert run_episode(Sleeper(1, 0.1), c, "wait", "after").exit_status == "submitted"
                assert len(ours(second)) == 1  # the containers given up when it stopped were removed
        print(
            f"\nstop of the second engine: its episodes ended {masked_after:.1f} s after, all 8 were done"
            f" {finished:.1f} s after; it rejoined {rejoined:.1f} s after its restart"
        )
    finally:
        pool.close()
    assert ours(first) == [] and ours(second) == []


@pytest.mark.docker
def test_doctor_checks_every_engine_and_names_the_one_that_does_not_answer(second_engine, tmp_path) -> None:
    first, dead = docker_engine.engine_address(), f"unix://{tmp_path}/gone.sock"
    hosts = [{"url": url, "capacity": 1} for url in (first, second_engine.url, dead)]
    checks = {c.name: c for c in diagnose(EnvConfig(docker_hosts=hosts))}
    assert all(checks[f"{name} ({first})"].ok for name in ("engine reachable", "container runs a command"))
    assert checks[f"engine reachable ({second_engine.url})"].ok
    assert checks[f"base image present ({second_engine.url})"].ok  # there, or copied from the first
    unreachable = checks[f"engine reachable ({dead})"]
    assert not unreachable.ok and dead in unreachable.detail and unreachable.fix == docker_engine.HOST_HINT
    assert checks[f"container runs a command ({dead})"].detail == "skipped: engine unreachable"


TLS_CHECK = """
import json, sys
from environments import docker_engine
from environments.config import DockerHost

url, d = sys.argv[1], sys.argv[2]
full = {"ca_cert": f"{d}/ca.pem", "client_cert": f"{d}/cert.pem", "client_key": f"{d}/key.pem"}
cases = {"full": full, "no_client_cert": {"ca_cert": full["ca_cert"]}, "plain": None,
         "system_ca": {"client_cert": full["client_cert"], "client_key": full["client_key"]}}
found = {}
for name, tls in cases.items():
    try:
        found[name] = "ok " + docker_engine.connect(DockerHost(url=url, capacity=1, tls=tls), 10).version()["Version"]
    except docker_engine.EngineUnavailable as e:
        found[name] = str(e)
print(json.dumps(found))
"""


def make_certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate signed by it (as in Docker's
    "Protect the Docker daemon socket"), and an unrelated CA, `other.pem`."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}-key.pem", "-out", f"{ca}.pem",
                "-days", "1", "-subj", f"/CN=srl-test-{ca}")  # fmt: skip
    for name, usage in (("server", "serverAuth\nsubjectAltName=IP:127.0.0.1"), ("client", "clientAuth")):
        (folder / f"{name}.ext").write_text(f"extendedKeyUsage={usage}\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-out", f"{name}-cert.pem", "-days", "1", "-extfile", f"{name}.ext")  # fmt: skip
    (folder / "cert.pem").write_bytes((folder / "client-cert.pem").read_bytes())
    (folder / "key.pem").write_bytes((folder / "client-key.pem").read_bytes())


@pytest.mark.docker
def test_a_tcp_engine_with_tls_is_reached_with_its_ca_and_client_certificate() -> None:
    """A dockerd with --tlsverify on tcp://127.0.0.1:2376 in its own network namespace, reached from
    a process in that namespace: the full TLS entry connects (even with REQUESTS_CA_BUNDLE naming
    another CA, which requests would otherwise prefer), and without the client certificate, without
    the engine's CA or without TLS the error names the URL."""
    if shutil.which("openssl") is None or shutil.which("nsenter") is None:
        _unavailable("the TLS engine test needs the openssl and nsenter binaries")
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("unshare") is None:
        _unavailable("starting a TLS engine needs root and the dockerd and unshare binaries")
    root = Path(tempfile.mkdtemp(prefix="srl-dockerd-tls-", dir="/tmp"))
    make_certificates(root)
    url = "tcp://127.0.0.1:2376"
    tls_flags = [
        "--tlsverify",
        "--tlscacert",
        "ca.pem",
        "--tlscert",
        "server-cert.pem",
        "--tlskey",
        "server-key.pem",
    ]
    engine = Dockerd(root, "--host", url, *(f"{root}/{f}" if f.endswith(".pem") else f for f in tls_flags))
    try:
        engine.start()
        assert engine.process is not None
        check = subprocess.run(
            ["nsenter", f"--net=/proc/{engine.process.pid}/ns/net", sys.executable, "-c", TLS_CHECK, url, str(root)],
            check=False, capture_output=True, text=True, timeout=120, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "REQUESTS_CA_BUNDLE": str(root / "other.pem")},
        )  # fmt: skip
    finally:
        engine.stop()
        subprocess.Popen(["rm", "-rf", str(root)], start_new_session=True)
    assert check.returncode == 0, check.stderr[-2000:]
    found = json.loads(check.stdout.splitlines()[-1])
    assert found["full"].startswith("ok "), found["full"]
    for case in ("no_client_cert", "system_ca", "plain"):
        assert found[case].startswith(f"no Docker engine reachable at {url}"), (case, found[case])


@pytest.mark.skipif(importlib.util.find_spec("paramiko") is not None, reason="paramiko is installed")
def test_an_ssh_host_without_paramiko_names_the_extra_to_install() -> None:
    with pytest.raises(docker_engine.EngineUnavailable) as caught:
        EnvironmentPool(EnvConfig(docker_hosts=[{"url": "ssh://trainer@docker-3.internal", "capacity": 2}]))
    assert "ssh://trainer@docker-3.internal" in str(caught.value) and "srl-agent[ssh]" in str(caught.value)


def test_a_host_that_does_not_answer_at_start_is_named(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-engine.sock"
    with pytest.raises(docker_engine.EngineUnavailable, match=f"no Docker engine reachable at {url}"):
        EnvironmentPool(EnvConfig(docker_hosts=[{"url": url, "capacity": 2}]))


@pytest.mark.parametrize(
    ("hosts", "needle"),
    [
        ("[{url: 'http://h:2375', capacity: 2}]", "docker_hosts.0.url"),
        ("[{url: 'unix://', capacity: 2}]", "names no socket path"),
        ("[{url: 'tcp://h:2376', capacity: 0}]", "docker_hosts.0.capacity"),
        ("[{url: 'ssh://me@h', capacity: 1, tls: {verify: false}}]", "tls applies to tcp:// engines only"),
        ("[{url: 'tcp://h:2376', capacity: 1, tls: {client_cert: c.pem}}]", "give both or neither"),
    ],
)
def test_malformed_hosts_are_config_errors_naming_the_key(hosts: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="docker_hosts") as caught:
        resolve_config(EnvConfig, None, [f"docker_hosts={hosts}"])
    assert needle in str(caught.value)
