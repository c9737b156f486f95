"""A pool of up to N started environments shared by threads (rollouts, replays, evaluation).

`acquire(image)` (a context manager; or `get` + `release`) hands out an idle environment of that
image, starts a new one while the pool is below `size`, or replaces an idle environment of another
image; otherwise it waits. On release the
environment is reset (warm or fresh, per `EnvConfig.reset`) so the next episode starts clean; an
environment whose reset fails is closed and its slot freed. `run_parallel` runs one function per job
on `size` threads, each job in its own environment.

Threads suit this: the work happens in containers and the Python side mostly waits on sockets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Self, TypeVar

from environments.config import EnvConfig
from environments.container import DockerEnvironment

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class EnvironmentPool:
    """Up to `size` environments (default `cfg.pool_size`). Close it (or use `with`) to remove them."""

    def __init__(
        self,
        cfg: EnvConfig | None = None,
        size: int | None = None,
        *,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.cfg = cfg or EnvConfig()
        self.size = size or self.cfg.pool_size
        self._client = client
        self._cond = threading.Condition()
        self._idle: list[DockerEnvironment] = []
        self._count = 0  # started or starting, idle or busy
        self._closed = False

    @contextmanager
    def acquire(self, image: str | None = None) -> Iterator[DockerEnvironment]:
        """`with pool.acquire(image) as env:` one episode in an environment, released (reset) after."""
        env = self.get(image)
        try:
            yield env
        finally:
            self.release(env)

    def get(self, image: str | None = None) -> DockerEnvironment:
        """An environment of `image` (default `cfg.base_image`), waiting for a slot; `release` it after."""
        image = image or self.cfg.base_image
        env, evicted = self._take(image)
        if evicted is not None:
            evicted.close()
        if env is None:
            try:
                env = DockerEnvironment(image, self.cfg, client=self._client).start()
            except BaseException:
                self._free_slot()
                raise
        return env

    def release(self, env: DockerEnvironment) -> None:
        """Reset `env` for the next episode and return it to the pool (closed instead if reset fails)."""
        try:
            env.reset()
        except Exception as e:  # noqa: BLE001 - a broken environment must not poison the pool
            log.warning("closing an environment of %s whose reset failed: %s", env.image, e)
            env.close()
            self._free_slot()
            return
        with self._cond:
            if self._closed:
                self._count -= 1
                close_now = True
            else:
                self._idle.append(env)
                close_now = False
            self._cond.notify()
        if close_now:
            env.close()

    def run_parallel(self, fn: Callable[[DockerEnvironment, T], R], jobs: Iterable[tuple[str, T]]) -> list[R]:
        """`fn(env, item)` for every `(image, item)` job, `size` at a time; results in job order."""

        def one(job: tuple[str, T]) -> R:
            image, item = job
            with self.acquire(image) as env:
                return fn(env, item)

        with ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="env") as executor:
            return list(executor.map(one, list(jobs)))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for env in idle:
            env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def started(self) -> int:
        """Environments started or starting (idle or in use)."""
        with self._cond:
            return self._count

    def _take(self, image: str) -> tuple[DockerEnvironment | None, DockerEnvironment | None]:
        """(an idle env of `image`, None) or (None to start one, an idle env to close first, if any)."""
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the environment pool is closed")
                for i, env in enumerate(self._idle):
                    if env.image == image:
                        return self._idle.pop(i), None
                if self._count < self.size:
                    self._count += 1
                    return None, None
                if self._idle:
                    return None, self._idle.pop(0)  # its slot passes to the new environment
                self._cond.wait()

    def _free_slot(self) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify()
