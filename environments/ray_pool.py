"""The environment pool on a Ray cluster (`environment.backend: ray`): the one module that imports ray.

    pool = open_pool(cfg)                       # environments.pool.open_pool: this class for backend ray
    with pool.acquire(image, prepare=prepare) as env:
        env.run("pytest -q")                    # runs on the node that holds the container

Its interface is `EnvironmentPool`'s (the `protocol.Pool` seam), so evaluation, SWE RLVR and
check-experts run on it unchanged. What Ray does, and what this module does:

- Placement is Ray's. Every environment lives in a slot: a Ray actor (`EnvironmentSlot`, a worker
  process of its own) that asks for one unit of the custom resource `environment.ray.resource`, so
  Ray places it (strategy SPREAD) on a node with a free unit. A node's `ray start --resources
  '{"srl_env": N}'` is its capacity; a node without the resource (a GPU node that trains) holds none.
  The slot runs a `container.DockerEnvironment` in its node's own engine (DOCKER_HOST of `ray start`,
  else the local socket), labelled with the node's id (`labels.RAY_NODE_LABEL`).
- Tool calls go to the node. The `RayEnvironment` handed out is a proxy: each `run`, `exec`, `diff`,
  `reset`, ... is one call to the slot's actor (1.3 ms added, `bench/bench_ray.py`). An
  error raised there is raised here as itself (FileNotFoundError, RuntimeError, ...).
- Slots are counted as the local pool counts environments: at most `size` (`environment.pool_size`,
  what callers size their threads by) and at most the units the live nodes offer. An idle slot of the
  image is reused (reset between episodes); else a new slot is made while both limits allow; else an
  idle slot of another image switches images (same actor, a new container); else `get` waits. While
  the cluster offers fewer units than `size`, the episodes beyond them wait; a node that joins is
  counted within a second, and new slots go to it.
- Images are per node. Before a node runs its first container of an image the pool makes the image
  present there: a node lacking it loads it from a node that has it (`docker save` there, `docker
  load` here, through Ray's object store), else from this process's engine when that has it; then
  the caller's `prepare(client)` runs on the node with the node's engine (a task's `prepare_image`:
  it builds, pulls or checks the image there; a bundled or generated task's files must be at the same
  path on every node). With `prepare`, the base image is loaded first where it is missing, since
  builds start from it.
- Faults. A node that dies (Ray's health checks see it) takes its slots with it: a call to one of them
  raises `NodeLost` (an `EngineUnavailable`), which the agent loop reports as an `environment_error`,
  an infrastructure failure: masked in training, redone on resume in evaluation. The slot leaves the
  pool and the node's units leave the count. Its containers, whose owner (the slot's worker process)
  died too, are removed by `container.reap_leaked` when the next slot starts its first environment on
  that machine. Actors are not restarted (`max_restarts=0`): a container's state is not something a
  restart could bring back. When no live node offers the resource, `get` waits up to
  `environment.ray.start_timeout` seconds for one to join (an autoscaler adds nodes for pending
  demand), then raises `EngineUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from environments import docker_engine
from environments.config import EnvConfig, RayCluster
from environments.container import DockerEnvironment
from environments.images import image_exists
from environments.labels import RAY_NODE_LABEL
from environments.protocol import ImageUnavailable, PoolBase, Prepare
from environments.shell import CommandResult

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)
NAMESPACE = "srl-agent"
REFRESH = 1.0  # seconds the cluster's live nodes and units are reused before asking again
CLOSE_TIMEOUT = 60.0  # seconds the slots are given to remove their containers when the pool closes
SLOT_CONCURRENCY = 4  # an episode's calls, plus image copies other nodes ask of this slot meanwhile
MAX_LOST_STARTS = 3  # nodes lost in a row while starting one environment before `get` gives up


class NodeLost(docker_engine.EngineUnavailable):
    """The Ray node (or the worker) that holds an environment is gone; the message names the node."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise docker_engine.EngineUnavailable(
            f"environment.backend: ray needs the ray package ({e}); install it with pip install -e '.[ray]'"
        ) from None
    return ray


def connect(cluster: RayCluster) -> bool:
    """Connect this process to the cluster at `cluster.address` (unless it already is); whether it
    connected now. An address where no cluster answers is an `EngineUnavailable` naming it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=cluster.address, namespace=NAMESPACE, logging_level=logging.WARNING)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ...: all mean no cluster there
        raise docker_engine.EngineUnavailable(
            f"environment.ray.address={cluster.address}: no Ray cluster answers there ({type(e).__name__}:"
            f" {_short(e)}); start one with `ray start --head --resources '{{\"{cluster.resource}\": 8}}'`"
            " and give its address (host:6379), or `auto` on one of its nodes"
        ) from None
    return True


class EnvironmentSlot:
    """One environment on one node: the body of a Ray actor (`ray.remote(EnvironmentSlot)`). Its
    methods run in the node's worker process, against the node's engine."""

    def __init__(self, cfg: EnvConfig) -> None:
        import ray

        self.cfg = cfg
        self.node_id: str = ray.get_runtime_context().get_node_id()
        self.node_ip: str = ray.util.get_node_ip_address()
        self.env: DockerEnvironment | None = None

    def where(self) -> tuple[str, str]:
        return self.node_id, self.node_ip

    def missing(self, tags: list[str]) -> list[str]:
        client = docker_engine.shared_client()
        return [tag for tag in tags if not image_exists(client, tag)]

    def has_image(self, tag: str) -> bool:
        return image_exists(docker_engine.shared_client(), tag)

    def save_image(self, tag: str) -> bytes:
        return b"".join(docker_engine.shared_client().images.get(tag).save(named=tag))

    def load_image(self, data: bytes) -> None:
        docker_engine.shared_client().images.load(data)

    def prepare(self, prepare: Callable[[docker.DockerClient], object]) -> None:
        prepare(docker_engine.shared_client())

    def start(self, image: str) -> tuple[str | None, str]:
        """A new container of `image` (the slot's previous one removed); (base commit, container id)."""
        self.close()
        labels = {RAY_NODE_LABEL: self.node_id}
        env = DockerEnvironment(image, self.cfg, client=docker_engine.shared_client(), labels=labels)
        self.env = env.start()
        return env.base_commit, env.container_id

    def run(self, command: str, timeout: float | None) -> CommandResult:
        return self._env().run(command, timeout)

    def exec(self, command: str) -> tuple[int, str]:
        return self._env().exec(command)

    def write_file(self, path: str, content: bytes | str, mode: int) -> None:
        self._env().write_file(path, content, mode)

    def read_file(self, path: str) -> bytes:
        return self._env().read_file(path)

    def diff(self) -> str:
        return self._env().diff()

    def reset(self) -> None:
        self._env().reset()

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def _env(self) -> DockerEnvironment:
        if self.env is None:
            raise RuntimeError("the environment is not started (or was closed)")
        return self.env


@dataclass(eq=False)
class _Slot:
    """The pool's side of a slot: its actor, the node Ray placed it on and its current environment."""

    actor: Any
    node_id: str
    node_ip: str
    env: RayEnvironment | None = None
    lost: bool = False

    @property
    def name(self) -> str:
        return f"{self.node_ip} ({self.node_id[:12]})"

    def call(self, method: str, *args: Any) -> Any:
        """`method(*args)` on the slot's actor: its result, its own exception, or `NodeLost`."""
        ray = _ray()
        try:
            return ray.get(getattr(self.actor, method).remote(*args))
        except ray.exceptions.RayTaskError as e:  # the method raised: raise that, not Ray's wrapper
            if isinstance(e.cause, BaseException):
                raise e.cause from None
            raise
        except ray.exceptions.RayError as e:  # the actor, its worker or its node died
            self.lost = True
            raise NodeLost(
                f"the Ray node {self.name} holding this environment is gone: {_short(e)}"
            ) from None


class RayEnvironment:
    """An environment in a slot on a Ray node: a `protocol.Environment` whose every call is one call to
    the node. Handed out by `RayEnvironmentPool`; one thread at a time, as any environment."""

    def __init__(self, slot: _Slot, image: str, base_commit: str | None, container_id: str) -> None:
        self._slot, self.image, self.base_commit, self.container_id = slot, image, base_commit, container_id

    @property
    def node_id(self) -> str:
        return self._slot.node_id

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        return self._slot.call("run", command, timeout)

    def exec(self, command: str) -> tuple[int, str]:
        return self._slot.call("exec", command)

    def write_file(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        self._slot.call("write_file", path, content, mode)

    def read_file(self, path: str) -> bytes:
        return self._slot.call("read_file", path)

    def diff(self) -> str:
        return self._slot.call("diff")

    def reset(self) -> None:
        self._slot.call("reset")

    def close(self) -> None:
        try:
            self._slot.call("close")
        except NodeLost:
            pass  # its container went with the node, or is reaped when a slot starts there again


class RayEnvironmentPool(PoolBase[RayEnvironment]):
    """Up to `size` (default `cfg.pool_size`) environments on the nodes of the Ray cluster at
    `cfg.ray.address`; see the module docstring. Close it (or use `with`) to remove them.

    Connects at once: no cluster there, or no live node offering `cfg.ray.resource`, is an
    `EngineUnavailable` that says so."""

    def __init__(self, cfg: EnvConfig | None = None, size: int | None = None) -> None:
        self.cfg = cfg or EnvConfig(backend="ray")
        ray = _ray()
        connect(self.cfg.ray)
        self._slot_class = ray.remote(EnvironmentSlot)
        self.size = size or self.cfg.pool_size
        self._cond = threading.Condition()
        self._slots: list[_Slot] = []  # placed, idle or busy
        self._idle: list[_Slot] = []
        self._count = 0  # slots placed or being placed
        self._ready: set[tuple[str, str]] = set()  # (node id, image) made present there
        self._image_locks: dict[tuple[str, str], threading.Lock] = {}
        self._closed = False
        self._nodes: dict[str, float] = {}  # live node id -> its units of the resource
        self._nodes_at = -REFRESH
        with self._cond:
            self._refresh()
        if not self._nodes:
            raise docker_engine.EngineUnavailable(self._no_node())

    def get(self, image: str | None = None, *, prepare: Prepare | None = None) -> RayEnvironment:
        """An environment of `image` (default `cfg.base_image`) on some node, waiting for a slot;
        `release` it after. `prepare(client)` runs on the node before its first container of `image`
        (see the module docstring); its failure is an `ImageUnavailable` naming the node."""
        image = image or self.cfg.base_image
        lost = 0
        while True:
            slot = self._take(image)
            if slot is not None and slot.env is not None and slot.env.image == image:
                return slot.env
            try:
                slot = slot or self._place()
                self._stock(slot, image, prepare)
                base_commit, container_id = slot.call("start", image)
            except NodeLost as e:
                self._drop(slot)
                lost += 1
                if lost >= MAX_LOST_STARTS:
                    raise
                log.warning("starting an environment of %s failed, another node takes it: %s", image, e)
                continue  # nothing ran yet
            except BaseException:
                self._drop(slot)
                raise
            slot.env = RayEnvironment(slot, image, base_commit, container_id)
            return slot.env

    def release(self, env: RayEnvironment) -> None:
        """Reset `env` for the next episode and return its slot to the pool (dropped instead when its
        node is gone or the reset fails)."""
        slot = env._slot
        if slot.lost:
            self._drop(slot)
            return
        try:
            env.reset()
        except Exception as e:  # noqa: BLE001 - a broken environment must not poison the pool
            log.warning("dropping an environment of %s on %s whose reset failed: %s", env.image, slot.name, e)
            self._drop(slot)
            return
        with self._cond:
            if not self._closed:
                self._idle.append(slot)
                self._cond.notify()
                return
        self._drop(slot)

    def close(self) -> None:
        """Remove the idle environments and end their slots; busy ones go when released."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        self._end(idle)

    @property
    def started(self) -> int:
        """Environments started or starting (idle or in use)."""
        with self._cond:
            return self._count

    def engine_of(self, env: RayEnvironment) -> str:
        """The id of the Ray node `env` runs on."""
        return env.node_id

    @property
    def nodes(self) -> dict[str, float]:
        """The live nodes offering the resource, each with its units (as of at most a second ago)."""
        with self._cond:
            self._refresh()
            return dict(self._nodes)

    # -- slots --------------------------------------------------------------------------------------

    def _take(self, image: str) -> _Slot | None:
        """An idle slot of `image`, else None with a new slot counted (the caller places it), else an
        idle slot to switch to `image`; waits while there is none."""
        waiting_since: float | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the environment pool is closed")
                self._refresh()
                for i, slot in enumerate(self._idle):
                    if slot.env is not None and slot.env.image == image:
                        return self._idle.pop(i)
                if self._count < min(self.size, sum(self._nodes.values())):
                    self._count += 1
                    return None
                if self._idle:
                    return self._idle.pop(0)
                if not self._nodes:
                    waiting_since = waiting_since or time.monotonic()
                    if time.monotonic() - waiting_since > self.cfg.ray.start_timeout:
                        raise docker_engine.EngineUnavailable(self._no_node())
                self._cond.wait(REFRESH)

    def _refresh(self) -> None:
        """Ask Ray which nodes live and offer the resource (at most once per `REFRESH`); drop idle
        slots on nodes that died. Call with `_cond` held."""
        if time.monotonic() - self._nodes_at < REFRESH:
            return
        resource = self.cfg.ray.resource
        self._nodes = {
            node["NodeID"]: node["Resources"][resource]
            for node in _ray().nodes()
            if node.get("Alive") and node.get("Resources", {}).get(resource, 0) >= 1
        }
        self._nodes_at = time.monotonic()
        gone = [slot for slot in self._idle if slot.node_id not in self._nodes]
        for slot in gone:
            log.warning("node %s is gone: its idle environment leaves the pool", slot.name)
            slot.lost = True
            self._idle.remove(slot)
            self._slots.remove(slot)
            self._count -= 1

    def _place(self) -> _Slot:
        """A new slot, placed by Ray on a node with a free unit of the resource."""
        ray = _ray()
        actor = self._slot_class.options(
            resources={self.cfg.ray.resource: 1}, num_cpus=0, scheduling_strategy="SPREAD",
            max_concurrency=SLOT_CONCURRENCY, max_restarts=0,
        ).remote(self.cfg)  # fmt: skip
        timeout = self.cfg.ray.start_timeout
        try:
            node_id, node_ip = ray.get(actor.where.remote(), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            ray.kill(actor)
            raise docker_engine.EngineUnavailable(
                f"no node of the Ray cluster took an environment in {timeout:.0f} s (environment.ray."
                f"start_timeout); live nodes offering {self.cfg.ray.resource!r}: {self.nodes or 'none'}"
            ) from None
        except ray.exceptions.RayError as e:
            ray.kill(actor)
            raise NodeLost(f"a new environment's worker died before it started: {_short(e)}") from None
        slot = _Slot(actor, node_id, node_ip)
        with self._cond:
            self._slots.append(slot)
        return slot

    def _drop(self, slot: _Slot | None) -> None:
        """Free the slot's place in the count and end it (None: a slot that was never placed)."""
        with self._cond:
            self._count -= 1
            if slot is not None and slot in self._slots:
                self._slots.remove(slot)
            self._cond.notify()
        if slot is not None:
            self._end([slot])

    def _end(self, slots: list[_Slot]) -> None:
        """Remove the slots' containers, then their actors (a killed actor's container would leak)."""
        ray = _ray()
        closing = [slot.actor.close.remote() for slot in slots if not slot.lost]
        if closing:
            try:
                ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - best effort: leftovers are reaped on the next start
                log.warning("removing environments on close: %s", _short(e))
        for slot in slots:
            try:
                ray.kill(slot.actor)
            except Exception as e:  # noqa: BLE001 - an actor that is gone already
                log.debug("ending the slot on %s: %s", slot.name, e)

    # -- images -------------------------------------------------------------------------------------

    def _stock(self, slot: _Slot, image: str, prepare: Prepare | None) -> None:
        """Make `image` present on the slot's node (once per node and image; see the module docstring)."""
        key = (slot.node_id, image)
        if key in self._ready:
            return
        with self._cond:
            lock = self._image_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._ready:
                return
            try:
                wanted = ([self.cfg.base_image] if prepare is not None else []) + [image]
                for tag in slot.call("missing", wanted):
                    self._load_from_peer(slot, tag)
                if prepare is not None:
                    slot.call("prepare", prepare)
            except docker_engine.EngineUnavailable:
                raise
            except Exception as e:
                raise ImageUnavailable(f"{image} on Ray node {slot.name}: {type(e).__name__}: {e}") from e
            self._ready.add(key)

    def _load_from_peer(self, slot: _Slot, tag: str) -> None:
        """Load `tag` into the slot's node from another node that has it, if any does."""
        with self._cond:
            peers = {s.node_id: s for s in self._slots if s.node_id != slot.node_id and not s.lost}
        for peer in peers.values():
            try:
                if not peer.call("has_image", tag):
                    continue
            except NodeLost:
                continue
            started = time.monotonic()
            slot.call("load_image", peer.actor.save_image.remote(tag))
            log.info(
                "loaded %s on %s from %s in %.1f s", tag, slot.name, peer.name, time.monotonic() - started
            )
            return
        self._load_from_driver(slot, tag)

    def _load_from_driver(self, slot: _Slot, tag: str) -> None:
        """Load `tag` into the slot's node from this process's engine, when it has one with the image
        (check-experts and the task factory prepare images here); else leave it to `prepare`."""
        try:
            client = docker_engine.shared_client()
            if not image_exists(client, tag):
                return
        except docker_engine.EngineUnavailable:
            return  # a driver without an engine: the node builds or pulls it
        started = time.monotonic()
        data = _ray().put(b"".join(client.images.get(tag).save(named=tag)))
        slot.call("load_image", data)
        log.info("loaded %s on %s from this machine in %.1f s", tag, slot.name, time.monotonic() - started)

    def _no_node(self) -> str:
        resource = self.cfg.ray.resource
        return (
            f"no live node of the Ray cluster at {self.cfg.ray.address} offers the resource {resource!r}: "
            f"start the nodes that run environments with `ray start --address HEAD:6379 --resources "
            f"'{{\"{resource}\": N}}'` (N: the containers each holds at once)"
        )


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
