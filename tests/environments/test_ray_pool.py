"""The environment pool on a Ray cluster (`environment.backend: ray`), on Ray's multi-node test cluster
(`ray.cluster_utils.Cluster`): a head node that holds no environment and worker nodes that each offer
`srl_env` units, all on this machine and its one Docker engine; each container carries its node's id
(`labels.RAY_NODE_LABEL`), which is how these tests see where it ran.

Episodes spread over two nodes within their units; a node whose engine lacks the image gets it from
a node that has it (that node's engine is a second dockerd, as in test_docker_hosts); a node removed
mid-run ends its episodes as environment errors while the rest complete, and its leftover containers
are reaped when a slot next starts on this machine; a node added mid-run takes new episodes; an
evaluation with the replay policy gives the same report as on the local pool. The tests that start
Ray are of the `ray` tier (the `ray` extra; CI sets SRL_REQUIRE_RAY=1); the config tests need
neither ray nor an engine.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import test_docker_hosts
from envtest_support import fast_config, sample_image

from environments import docker_engine
from environments.config import DockerHost, EnvConfig
from environments.labels import RAY_NODE_LABEL
from environments.pool import EnvironmentPool, open_pool
from environments.protocol import Environment, Pool
from environments.ray_pool import RayEnvironmentPool
from srl_agent.agent import run_episode
from trajectories.config import ConfigError, resolve_config

if TYPE_CHECKING:
    from ray.cluster_utils import Cluster


REPO = Path(__file__).resolve().parents[2]
second_engine = test_docker_hosts.second_engine  # the fixture of a second dockerd (root only)
SMALL = {"num_cpus": 1, "object_store_memory": 80 << 20}
# Node deaths seen within about a second (the defaults take up to 15 s).
FAST_HEALTH = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 2,
    "health_check_initial_delay_ms": 0,
}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A head node without `srl_env` (as a GPU node that trains); the tests add the nodes that hold
    environments. This process is connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    head = Cluster(initialize_head=True, head_node_args={**SMALL, "_system_config": FAST_HEALTH})
    ray.init(address=head.address)
    try:
        yield head
    finally:
        ray.shutdown()
        head.shutdown()


def add_node(cluster: Cluster, units: int) -> str:
    """A node offering `units` environments; its id."""
    return cluster.add_node(resources={"srl_env": units}, **SMALL).node_id


def ray_config(cluster: Cluster, **changes: object) -> EnvConfig:
    return fast_config(backend="ray", ray={"address": cluster.address}, **changes)


def containers_of(node_id: str) -> list[str]:
    client = docker_engine.shared_client()
    return [
        c.name for c in client.containers.list(all=True, filters={"label": f"{RAY_NODE_LABEL}={node_id}"})
    ]


def node_label(env: Environment) -> str:
    container = docker_engine.shared_client().containers.get(env.container_id)  # type: ignore[attr-defined]
    return container.labels[RAY_NODE_LABEL]


Sleeper = test_docker_hosts.Sleeper  # the stand-in policy the docker_hosts tests run


@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
def test_episodes_spread_over_two_nodes_within_their_units_and_leave_no_container(cluster) -> None:
    image = sample_image()
    a, b = add_node(cluster, 2), add_node(cluster, 2)
    running = {a: 0, b: 0}
    peak = dict(running)
    lock = threading.Lock()

    with open_pool(ray_config(cluster, pool_size=4)) as pool:
        assert isinstance(pool, Pool) and pool.size == 4 and pool.nodes == {a: 2, b: 2}

        def episode(env: Environment, n: int) -> tuple[str, str]:
            where = pool.engine_of(env)
            assert node_label(env) == where  # the container runs where the pool says
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

        results = pool.run_parallel(episode, [(image, n) for n in range(8)])
        assert pool.started == 4  # four slots, reused: not one per episode
        # the node's own errors come back as themselves
        with pool.acquire(image) as env, pytest.raises(FileNotFoundError, match="/no/such/file"):
            env.read_file("/no/such/file")
    assert [f"+++ b/episode-{n}" in patch for n, (_, patch) in enumerate(results)] == [True] * 8
    assert {where for where, _ in results} == {a, b}
    assert max(peak.values()) <= 2  # never more than a node's units at once (fewer on a busy machine)
    assert containers_of(a) == [] and containers_of(b) == []


@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
def test_a_node_removed_mid_run_masks_its_episodes_the_rest_complete_and_its_containers_are_reaped(
    cluster,
) -> None:
    image = sample_image()
    a = add_node(cluster, 2)
    b_node = cluster.add_node(resources={"srl_env": 2}, **SMALL)  # the Cluster keeps its workers in a set
    b = b_node.node_id
    pool = open_pool(ray_config(cluster, pool_size=4))
    started: list[str] = []
    began = threading.Condition()

    def episode(n: int) -> tuple[str | None, str]:
        """(the node it ran on, its exit status), or (None, the error) when the pool raised."""
        try:
            with pool.acquire(image) as env:
                where = pool.engine_of(env)
                with began:
                    started.append(where)
                    began.notify_all()
                return where, run_episode(Sleeper(4, 0.5), env, "wait, then submit", f"wait-{n}").exit_status
        except Exception as e:  # noqa: BLE001 - the finding
            return None, f"{type(e).__name__}: {e}"

    try:
        with ThreadPoolExecutor(max_workers=4) as executor:
            futures = [executor.submit(episode, n) for n in range(8)]
            with began:
                assert began.wait_for(lambda: started.count(b) == 2, timeout=120)
            removed = time.monotonic()
            cluster.remove_node(b_node, allow_graceful=False)
            results = [f.result(timeout=300) for f in futures]
        finished = time.monotonic() - removed
        assert [status for where, status in results if where == b] == ["environment_error"] * 2, results
        assert [status for where, status in results if where != b] == ["submitted"] * 6, results
        assert pool.nodes == {a: 2} and pool.started == 2  # its units and slots left the pool
        assert len(containers_of(b)) == 2  # its worker died with it; the containers are still there

        c = add_node(cluster, 1)
        # a's two slots busy: the third environment is a new slot, on the new node, and its first start
        # reaps the containers whose owner (b's worker) is gone
        with pool.acquire(image) as one, pool.acquire(image) as two, pool.acquire(image) as three:
            assert [pool.engine_of(e) for e in (one, two, three)] == [a, a, c]
            assert containers_of(b) == []
        print(f"\nremoval of a node: all 8 episodes were done {finished:.1f} s after")
    finally:
        pool.close()
    assert containers_of(a) == [] and containers_of(c) == []


@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
def test_a_node_added_mid_run_takes_new_episodes(cluster) -> None:
    """Four episodes on a pool of four over one node of two units: two run, two wait; the node that
    joins while the first two still run takes the waiting two (a's units stay held by its slots)."""
    image = sample_image()
    a = add_node(cluster, 2)
    pool = open_pool(ray_config(cluster, pool_size=4))
    started: list[str] = []
    began = threading.Condition()
    joined = threading.Event()

    def episode(n: int) -> tuple[str, str]:
        with pool.acquire(image) as env:
            with began:
                started.append(pool.engine_of(env))
                began.notify_all()
            joined.wait(timeout=300)  # the first two hold a's units until the new node is in
            return pool.engine_of(env), run_episode(Sleeper(2, 0.5), env, "wait", f"wait-{n}").exit_status

    try:
        with ThreadPoolExecutor(max_workers=pool.size) as executor:
            futures = [executor.submit(episode, n) for n in range(4)]
            with began:
                assert began.wait_for(lambda: len(started) >= 2, timeout=120)
            time.sleep(1.5)  # past the pool's look at the cluster: the other two wait for units
            assert started == [a, a] and pool.started == 2
            b = add_node(cluster, 2)
            deadline = time.monotonic() + 60
            while b not in pool.nodes and time.monotonic() < deadline:
                time.sleep(0.2)
            joined.set()
            results = [f.result(timeout=300) for f in futures]
        assert [status for _, status in results] == ["submitted"] * 4
        assert sorted(started) == sorted([a, a, b, b]) and pool.started == 4
    finally:
        joined.set()
        pool.close()
    assert containers_of(a) == [] and containers_of(b) == []


@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
def test_a_node_on_its_own_engine_gets_the_image_from_a_node_that_has_it(cluster, second_engine) -> None:
    """Node b's environments run in a second engine (its DOCKER_HOST), which lacks the task image: the
    pool loads it there from node a (docker save on a, docker load on b, through the object store)."""
    image = sample_image()
    second = docker_engine.connect(DockerHost(url=second_engine.url, capacity=1))
    with contextlib.suppress(docker_engine.ImageNotFound):
        second.images.remove(image, force=True)
    big = {**SMALL, "object_store_memory": 500 << 20}  # the image, about 300 MB, passes through it
    a = cluster.add_node(resources={"srl_env": 1}, **big).node_id
    b = cluster.add_node(resources={"srl_env": 1}, env_vars={"DOCKER_HOST": second_engine.url}, **big).node_id
    pool = open_pool(ray_config(cluster, pool_size=2))
    with pool, pool.acquire(image) as x, pool.acquire(image) as y:
        on_b = x if pool.engine_of(x) == b else y
        assert {pool.engine_of(x), pool.engine_of(y)} == {a, b}
        assert on_b.run("git status --porcelain && cat calc.egg-info/PKG-INFO").output == "built\n"
        labels = second.containers.get(on_b.container_id).labels  # type: ignore[attr-defined]
        assert labels[RAY_NODE_LABEL] == b
    assert second.images.get(image).id == docker_engine.shared_client().images.get(image).id
    assert second.containers.list(all=True, filters={"label": f"{RAY_NODE_LABEL}={b}"}) == []


def run_eval(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        from srl_agent import evaluate

        assert evaluate.main(["--task", "swe", "--json", *args]) == 0
    return json.loads(out.getvalue())


def without_timings(report: Any) -> Any:
    """The report less what the clock says: `*seconds*` keys and a grade detail's "(1.4 s)"."""
    if isinstance(report, dict):
        return {k: without_timings(v) for k, v in report.items() if "seconds" not in k and k != "out"}
    if isinstance(report, str):
        return re.sub(r"\(\d+\.\d s\)", "(_ s)", report)
    return report


@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
def test_an_evaluation_on_ray_gives_the_local_pools_report_for_the_replay_policy(
    cluster, tmp_path, monkeypatch
) -> None:
    nodes = {add_node(cluster, 1), add_node(cluster, 1)}
    monkeypatch.chdir(REPO)
    placed: list[str] = []  # the node of every environment the Ray pool handed out
    get = RayEnvironmentPool.get
    monkeypatch.setattr(RayEnvironmentPool, "get", lambda self, *a, **k: _noted(placed, get(self, *a, **k)))
    args = ["--instances", "--model", "replay:environments/tasks", "--grader", "fast", "--workers", "2"]
    local = run_eval(*args, "--out", str(tmp_path / "local"))
    assert placed == []
    on_ray = run_eval(
        *args,
        "--out",
        str(tmp_path / "ray"),
        "environment.backend=ray",
        f"environment.ray.address={cluster.address}",
    )
    assert local["resolved"] == 3 and local["resolve_rate"] == 1.0
    assert without_timings(on_ray) == without_timings(local)
    assert len(placed) == 3 and set(placed) == nodes  # the three episodes ran on both nodes
    patches = {
        name: {
            row["instance_id"]: row["model_patch"]
            for row in map(json.loads, (tmp_path / name / "predictions.jsonl").read_text().splitlines())
        }
        for name in ("local", "ray")
    }
    assert patches["ray"] == patches["local"]


@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
def test_the_task_factory_on_ray_makes_the_local_pools_tasks(cluster, tmp_path, monkeypatch) -> None:
    from environments.factory.make_tasks import MakeTasksConfig, make_tasks

    fixture = Path(__file__).parent / "fixtures" / "factory_repo"
    nodes = {add_node(cluster, 1), add_node(cluster, 1)}
    placed: list[str] = []
    get = RayEnvironmentPool.get
    monkeypatch.setattr(RayEnvironmentPool, "get", lambda self, *a, **k: _noted(placed, get(self, *a, **k)))
    made = {}
    for name, env_cfg in (("local", fast_config(pool_size=2)), ("ray", ray_config(cluster, pool_size=2))):
        out = tmp_path / name
        # template statements: a test-based one quotes object addresses that differ from run to run
        make_tasks(
            MakeTasksConfig(source=str(fixture), out=str(out), statements="template"), env_cfg, progress=False
        )
        made[name] = {
            "instances": (out / "instances.jsonl").read_text(),
            "experts": {p.name: [s["action"] for s in json.loads(p.read_text())["trajectory"]]
                        for p in sorted((out / "trajectories").glob("*.traj"))},
        }  # fmt: skip
    # every candidate is judged (no --max-tasks), so the tasks kept do not depend on which worker was first
    assert made["ray"] == made["local"] and len(made["local"]["experts"]) >= 3
    # the warm environments of the candidates, the statements' and the experts' all ran on the nodes
    assert len(placed) >= 2 + 3 and set(placed) == nodes


def _noted(placed: list[str], env: Any) -> Any:
    placed.append(env.node_id)
    return env


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("ray.address=http://head:6379", "not a Ray cluster address"),
        ("ray.address=head", "not a Ray cluster address"),
        ("ray.address=head:port", "not a Ray cluster address"),
        ("ray.resource=CPU", "not a custom Ray resource name"),
        ("backend=kubernetes", "backend"),
    ],
)
def test_a_bad_ray_setting_is_a_config_error_naming_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[0]) as caught:
        resolve_config(EnvConfig, None, [override])
    assert needle in str(caught.value)


def test_docker_hosts_beside_the_ray_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="docker_hosts and backend: ray"):
        resolve_config(
            EnvConfig,
            None,
            ["backend=ray", "docker_hosts=[{url: 'unix:///var/run/docker.sock', capacity: 2}]"],
        )
    assert (
        resolve_config(EnvConfig, None, ["backend=ray", "ray.address=10.0.0.5:6379"]).ray.address
        == "10.0.0.5:6379"
    )


def test_the_local_pool_refuses_a_ray_config_and_open_pool_picks_the_backend() -> None:
    with pytest.raises(ValueError, match="open_pool"):
        EnvironmentPool(EnvConfig(backend="ray"))


@pytest.mark.ray
def test_no_cluster_at_the_address_is_named_with_the_fix() -> None:
    import ray

    assert not ray.is_initialized()
    with pytest.raises(docker_engine.EngineUnavailable) as caught:
        open_pool(EnvConfig(backend="ray"))  # address auto, and no cluster runs on this machine
    assert "environment.ray.address=auto" in str(caught.value) and "ray start --head" in str(caught.value)


@pytest.mark.ray
def test_a_cluster_without_a_node_offering_the_resource_is_named(cluster) -> None:
    with pytest.raises(docker_engine.EngineUnavailable, match="offers the resource 'srl_env'.*ray start"):
        open_pool(ray_config(cluster))
