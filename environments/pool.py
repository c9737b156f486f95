"""A pool of up to N started environments on one or more Docker engines, shared by threads.

`acquire(image)` (a context manager; or `get` + `release`) hands out an idle environment of that
image, starts a new one while the pool is below `size`, or replaces an idle environment of another
image; otherwise it waits. On release the environment is reset (warm or fresh, per `EnvConfig.reset`)
so the next episode starts clean; an environment whose reset fails is closed and its slot freed.
`run_parallel` runs one function per job on `size` threads, each job in its own environment.

Engines: `EnvConfig.docker_hosts` lists them, each with its capacity (empty: the default engine, with
`size`, else `pool_size`, as its capacity). A new environment goes to the least loaded engine that answers. Images are
per engine, so before an engine runs its first container of an image the pool makes the image present
there: it copies the image from an engine that has it (`images.copy_image`) and then calls the
caller's `prepare(client)`, which builds, pulls or checks it on that engine (`prepare_image` of a task:
a no-op when the copy is current). With `prepare`, the base image is copied too when that engine lacks
it, since task builds start from it (once per engine, a few hundred MB). Without `prepare` an image no
engine has is left to Docker (it pulls it on start, as with one engine).

An engine that stops answering (an operation failed and a ping then failed too) is taken out of
rotation: its environments are abandoned (the episodes running there fail on their next command,
which the agent loop reports as an `environment_error`, an infrastructure failure, never a score),
a `get` that was starting a container there moves on to another engine, and no new environment goes
there. After `EnvConfig.engine_retry` seconds (doubling per failed ping, up to 10 minutes) the next
`get` pings it; when it answers, the containers abandoned on it are removed and it rejoins. When no
engine answers at all, `get` raises `EngineUnavailable` at once instead of waiting.

`open_pool(cfg)` is this pool, or with `environment.backend: ray` the one in `environments.ray_pool`
(environments on the nodes of a Ray cluster), behind the same interface (`protocol.Pool`).

Threads suit this: the work happens in containers and the Python side mostly waits on sockets.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from environments import docker_engine
from environments.config import DockerHost, EnvConfig
from environments.container import DockerEnvironment
from environments.images import copy_image, image_exists
from environments.protocol import (  # the seam's types, also this module's names
    ImageUnavailable,
    PoolBase,
    Prepare,
)

if TYPE_CHECKING:
    import docker

    from environments.ray_pool import RayEnvironmentPool

log = logging.getLogger(__name__)
PING_TIMEOUT = 5.0
MAX_RETRY = 600.0


def open_pool(cfg: EnvConfig | None = None, size: int | None = None) -> EnvironmentPool | RayEnvironmentPool:
    """The pool `cfg.backend` names: an `EnvironmentPool` on this process's engines (`docker`), or a
    `ray_pool.RayEnvironmentPool` on the nodes of a Ray cluster (`ray`). Both are `protocol.Pool`s."""
    cfg = cfg or EnvConfig()
    if cfg.backend == "ray":
        from environments.ray_pool import RayEnvironmentPool

        return RayEnvironmentPool(cfg, size)
    return EnvironmentPool(cfg, size)


@dataclass(eq=False)
class Engine:
    """One Docker engine of the pool: its capacity, its environments and whether it answers."""

    name: str
    capacity: int
    host: DockerHost | None = None  # None: the default engine (DOCKER_HOST or the local socket)
    client: docker.DockerClient | None = None
    count: int = 0  # environments started or starting here, idle or busy
    idle: list[DockerEnvironment] = field(default_factory=list)
    ready: set[str] = field(default_factory=set)  # images made present here
    down_since: float | None = None
    retry_at: float = 0.0
    failed_pings: int = 0
    probing: bool = False
    abandoned: list[str] = field(default_factory=list)  # container ids to remove when it answers again

    @property
    def up(self) -> bool:
        return self.down_since is None

    def answers(self) -> bool:
        """Whether the engine answers a ping within `PING_TIMEOUT` seconds (on a new connection)."""
        try:
            docker_engine.connect(self.host, timeout=PING_TIMEOUT).close()
        except docker_engine.EngineUnavailable:
            return False
        return True


class EnvironmentPool(PoolBase[DockerEnvironment]):
    """Up to `size` environments (default: the engines' capacities together, or `cfg.pool_size` on the
    default engine). Close it (or use `with`) to remove them.

    Connects to every engine of `cfg.docker_hosts` at once: one that does not answer is an
    `EngineUnavailable` naming its URL. `client` (one engine only) replaces the default engine's."""

    def __init__(
        self,
        cfg: EnvConfig | None = None,
        size: int | None = None,
        *,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.cfg = cfg or EnvConfig()
        if self.cfg.backend != "docker":
            raise ValueError(f"environment.backend is {self.cfg.backend}: open the pool with open_pool(cfg)")
        if self.cfg.docker_hosts and client is not None:
            raise ValueError("pass either a client or environment.docker_hosts, not both")
        if self.cfg.docker_hosts:
            self.engines = [
                Engine(h.url, h.capacity, h, docker_engine.connect(h)) for h in self.cfg.docker_hosts
            ]
        else:
            self.engines = [Engine(docker_engine.engine_address(), size or self.cfg.pool_size, client=client)]
        capacity = sum(e.capacity for e in self.engines)
        self.size = min(size or capacity, capacity)
        self._cond = threading.Condition()
        self._engine_of: dict[DockerEnvironment, Engine] = {}
        self._image_locks: dict[tuple[str, str], threading.Lock] = {}
        self._closed = False

    def get(self, image: str | None = None, *, prepare: Prepare | None = None) -> DockerEnvironment:
        """An environment of `image` (default `cfg.base_image`), waiting for a slot; `release` it after.

        `prepare(client)` makes `image` present on an engine before its first container there (see the
        module docstring); its failure is an `ImageUnavailable`."""
        image = image or self.cfg.base_image
        while True:
            self._ping_due_engines()
            engine, env, evicted = self._take(image)
            if engine is None:
                continue  # an engine is due for a ping
            if evicted is not None:
                self._close_or_abandon(evicted, engine)
            if env is not None:
                return env
            try:
                self._stock(engine, image, prepare)
                env = DockerEnvironment(image, self.cfg, client=engine.client).start()
            except BaseException as e:
                self._free_slot(engine)
                if isinstance(e, Exception) and self._lost(engine):
                    log.warning(
                        "starting an environment of %s on %s failed: the engine is gone", image, engine.name
                    )
                    continue  # nothing ran yet: another engine takes it
                raise
            with self._cond:
                self._engine_of[env] = engine
            return env

    def release(self, env: DockerEnvironment) -> None:
        """Reset `env` for the next episode and return it to the pool (closed instead if reset fails)."""
        with self._cond:
            engine = self._engine_of[env]
        if not engine.up:
            self._discard(env, engine)
            return
        try:
            env.reset()
        except Exception as e:  # noqa: BLE001 - a broken environment must not poison the pool
            log.warning("closing an environment of %s whose reset failed: %s", env.image, e)
            self._discard(env, engine)
            return
        with self._cond:
            close_now = self._closed or not engine.up
            if close_now:
                engine.count -= 1
                del self._engine_of[env]
            else:
                engine.idle.append(env)
            self._cond.notify()
        if close_now:
            self._close_or_abandon(env, engine)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle = [(env, engine) for engine in self.engines for env in engine.idle]
            for engine in self.engines:
                engine.count -= len(engine.idle)
                engine.idle = []
            for env, _ in idle:
                del self._engine_of[env]
            self._cond.notify_all()
        for env, engine in idle:
            self._close_or_abandon(env, engine)

    @property
    def started(self) -> int:
        """Environments started or starting (idle or in use)."""
        with self._cond:
            return sum(e.count for e in self.engines)

    def engine_of(self, env: DockerEnvironment) -> str:
        """The name (URL) of the engine `env` runs on."""
        with self._cond:
            return self._engine_of[env].name

    # -- slots --------------------------------------------------------------------------------------

    def _take(self, image: str) -> tuple[Engine | None, DockerEnvironment | None, DockerEnvironment | None]:
        """(engine, its idle env of `image`, None), (engine to start one on, None, an idle env there
        to close first, if any), or (None, None, None) when an engine is due for a ping."""
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the environment pool is closed")
                up = [e for e in self.engines if e.up]
                due = min((e.retry_at for e in self.engines if not e.up and not e.probing), default=None)
                if due is not None and due <= time.monotonic():
                    return None, None, None
                if not up:
                    raise docker_engine.EngineUnavailable(self._none_answers())
                for engine in up:
                    for i, env in enumerate(engine.idle):
                        if env.image == image:
                            return engine, engine.idle.pop(i), None
                free = [e for e in up if e.count < e.capacity]
                if free and sum(e.count for e in self.engines) < self.size:
                    engine = min(free, key=lambda e: e.count / e.capacity)
                    engine.count += 1
                    return engine, None, None
                for engine in up:
                    if engine.idle:
                        evicted = engine.idle.pop(0)
                        del self._engine_of[evicted]
                        return engine, None, evicted  # its slot passes to the new environment
                self._cond.wait(None if due is None else max(due - time.monotonic(), 0.0))

    def _free_slot(self, engine: Engine) -> None:
        with self._cond:
            engine.count -= 1
            self._cond.notify()

    def _discard(self, env: DockerEnvironment, engine: Engine) -> None:
        """Close `env` (abandon it when its engine is gone) and free its slot."""
        with self._cond:
            self._engine_of.pop(env, None)
        self._close_or_abandon(env, engine)
        self._free_slot(engine)

    def _close_or_abandon(self, env: DockerEnvironment, engine: Engine) -> None:
        if engine.up:
            try:
                env.close()
                return
            except Exception as e:  # noqa: BLE001 - the engine may be the reason
                log.warning("removing a container on %s failed: %s", engine.name, e)
                self._lost(engine)
        container_id = env.abandon()
        if container_id is not None:
            with self._cond:
                engine.abandoned.append(container_id)

    # -- images -------------------------------------------------------------------------------------

    def _stock(self, engine: Engine, image: str, prepare: Prepare | None) -> None:
        """Make `image` present on `engine` (once per engine and image; see the module docstring)."""
        if engine.client is None:  # the default engine, connected on first use as with one engine
            engine.client = docker_engine.shared_client()
        if image in engine.ready:
            return
        with self._cond:
            lock = self._image_locks.setdefault((engine.name, image), threading.Lock())
        with lock:
            if image in engine.ready:
                return
            try:
                if prepare is not None:
                    self._copy_if_missing(engine, self.cfg.base_image)
                self._copy_if_missing(engine, image)
                if prepare is not None:
                    prepare(engine.client)
            except docker_engine.EngineUnavailable:
                raise
            except Exception as e:
                raise ImageUnavailable(f"{image} on {engine.name}: {type(e).__name__}: {e}") from e
            engine.ready.add(image)

    def _copy_if_missing(self, engine: Engine, image: str) -> None:
        assert engine.client is not None
        if image_exists(engine.client, image):
            return
        for peer in self.engines:
            if (
                peer is not engine
                and peer.up
                and peer.client is not None
                and image_exists(peer.client, image)
            ):
                log.info("copying %s from %s to %s", image, peer.name, engine.name)
                copy_image(peer.client, engine.client, image)
                return

    # -- engines that stop answering ------------------------------------------------------------------

    def _lost(self, engine: Engine) -> bool:
        """Ping `engine` after a failure; when it does not answer, take it out of rotation. True if so."""
        if engine.answers():
            return False
        with self._cond:
            if not engine.up:
                return True
            engine.down_since = time.monotonic()
            engine.failed_pings = 0
            engine.retry_at = engine.down_since + self.cfg.engine_retry
            idle, engine.idle = engine.idle, []
            engine.count -= len(idle)
            for env in idle:
                del self._engine_of[env]
            self._cond.notify_all()
        log.warning("engine %s stopped answering; out of rotation until it does", engine.name)
        for env in idle:
            self._close_or_abandon(env, engine)
        return True

    def _ping_due_engines(self) -> None:
        """Ping every engine out of rotation whose back-off has passed; bring back those that answer."""
        now = time.monotonic()
        with self._cond:
            due = [e for e in self.engines if not e.up and not e.probing and e.retry_at <= now]
            for engine in due:
                engine.probing = True
        for engine in due:
            try:
                if not engine.answers():
                    raise docker_engine.EngineUnavailable(engine.name)
                client = docker_engine.connect(engine.host)
            except docker_engine.EngineUnavailable:
                with self._cond:
                    engine.failed_pings += 1
                    delay = min(self.cfg.engine_retry * 2**engine.failed_pings, MAX_RETRY)
                    engine.retry_at, engine.probing = time.monotonic() + delay, False
                continue
            self._rejoin(engine, client)

    def _rejoin(self, engine: Engine, client: docker.DockerClient) -> None:
        """Remove the containers abandoned on `engine` (this process's, so no reaper would) and put it
        back in rotation with a new client; its images are checked again on first use."""
        with self._cond:
            abandoned, engine.abandoned = engine.abandoned, []
        for container_id in abandoned:
            try:
                client.containers.get(container_id).remove(force=True)
            except docker_engine.NotFound:
                pass
            except Exception as e:  # noqa: BLE001 - a leftover container must not keep the engine out
                log.warning("could not remove container %s on %s: %s", container_id[:12], engine.name, e)
        with self._cond:
            assert engine.down_since is not None
            log.warning("engine %s answers again after %.1f s; back in rotation",
                        engine.name, time.monotonic() - engine.down_since)  # fmt: skip
            engine.client, engine.ready = client, set()
            engine.down_since, engine.probing = None, False
            self._cond.notify_all()

    def _none_answers(self) -> str:
        now = time.monotonic()
        down = ", ".join(f"{e.name} (down {now - (e.down_since or now):.0f} s)" for e in self.engines)
        hint = docker_engine.START_HINT if self.engines[0].host is None else docker_engine.HOST_HINT
        return f"no Docker engine of the pool answers: {down}; {hint}"
