"""The seams of the environments: `Environment` (a repository to act in) and `TaskInstance` (a task to
evaluate on, whatever its origin).

`Environment`: what the tools, grading, replay and an agent loop need from a repository environment.

One repository checked out at its base commit, with one persistent shell the agent acts in, for one
episode at a time. `container.DockerEnvironment` is the implementation (a test checks that it
satisfies this Protocol); anything else with these methods and contracts can stand in for it, e.g. a
scripted fake in a test. It says nothing about how an environment is started: callers get a started
one (`DockerEnvironment(image).start()`, `EnvironmentPool.acquire(image)`).

Faults of the agent's commands are results, never exceptions: `run` reports a failed, timed-out or
runaway command in its `CommandResult`. Exceptions mean the environment itself cannot go on (it is
not started, the engine or container failed beyond recovery), or a file or the repository is not
there. Not thread-safe: one call at a time per environment.

`Pool`: environments shared by the threads of a run, handed out per episode: `pool.EnvironmentPool`
(this process's Docker engines) and `ray_pool.RayEnvironmentPool` (the nodes of a Ray cluster);
`pool.open_pool(cfg)` gives the one `environment.backend` names.

`TaskInstance`: what an evaluation needs of a task: the issue to hand the agent, the image its
episode runs in, and the swebench instance the official harness grades. Implemented by the bundled
`environments.tasks.bundled.Task`, the task factory's `GeneratedTask`, `SWEBenchTask` (SWE-bench rows,
`environments.tasks.swebench_rows`) and `SmithTask` (SWE-smith rows, `environments.tasks.smith_rows`);
`environments.tasks.sources.load_task_source` gives any of them, and `sources.prepare_image(task)`
makes `task.image` present (built, found or pulled) before an episode.
It also says what grading (`environments.grader`) and the oracle scaffold need, so that no caller asks
which implementation it holds: whether the fast in-container runner can grade it, its gold patch and
where its repository's files can be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, runtime_checkable

from environments.shell import CommandResult

if TYPE_CHECKING:
    import docker

    from environments.config import EnvConfig

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E")


@runtime_checkable
class Environment(Protocol):
    """A repository at its base commit and a persistent shell; see the module docstring."""

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run `command` (any bash, multi-line allowed) in the agent's persistent shell.

        cwd, variables and functions persist between calls. `timeout` is in seconds (None: the
        environment's default). Never raises for the command's own faults: a non-zero exit is
        `exit_code`, a command past its timeout is interrupted (`timed_out`), a flood of output is
        capped (`truncated`), and when the shell or the environment had to be restarted (the command
        would not stop, it ran `exit`, the process limit was hit) `note` says so in words for the agent
        and `exit_code` is None if the command never finished. Raises only when the environment itself
        is unusable (not started, or it could not be restarted).
        """
        ...

    def exec(self, command: str) -> tuple[int, str]:
        """Run `command` with bash in its own process, outside the agent's shell: (exit status, output).

        Starts in `/` with the image's environment variables: nothing the agent set in its shell (cwd,
        variables, functions) applies, so graders and checks see the repository, not the session. The
        output is stdout and stderr together. There is no timeout: bound a command that may hang
        yourself (`timeout -s KILL N ...`). A non-zero exit status is returned, not raised; raises
        only when no process can be started (a RuntimeError).
        """
        ...

    def write_file(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        """Create or replace the file at absolute `path` with `content` (a str is written as UTF-8).

        The parent directory must exist: FileNotFoundError otherwise. Does not touch the agent's shell.
        """
        ...

    def read_file(self, path: str) -> bytes:
        """The bytes of the regular file at absolute `path`.

        FileNotFoundError when nothing is there, IsADirectoryError when it is not a regular file.
        """
        ...

    def diff(self) -> str:
        """The repository's changes against the base commit as a patch `git apply` takes; '' if none.

        New (untracked) files are included and files ignored by git are not; the agent's own git index
        is left alone. This is the patch an agent submits. Raises RuntimeError when the repository
        is not a git repository or git fails.
        """
        ...

    def reset(self) -> None:
        """Start the next episode: the repository back at the base commit and a fresh shell in it.

        Tracked and untracked files are restored, every process the agent started is killed, the
        shell's cwd and variables are reset. May replace the whole container (files ignored by git and
        changes outside the repository then go too). Raises when no clean environment can be made.
        """
        ...

    def close(self) -> None:
        """Release the environment and everything it holds (for Docker: remove the container).

        Idempotent: closing a closed environment does nothing. The other methods raise after it.
        """
        ...


Prepare = Callable[["docker.DockerClient"], object]
"""Makes an image present and current on the engine of the client it is given (a build or a pull)."""


class ImageUnavailable(RuntimeError):
    """An image could not be made present on the engine chosen for it; the message names both."""


@runtime_checkable
class Pool(Protocol):
    """Up to `size` environments shared by threads; see the module docstring and `pool.EnvironmentPool`.

    `prepare(client)` makes an image present on the engine that will run it (a build or a pull; on
    Ray it runs on the node, so it must pickle); its failure is a `pool.ImageUnavailable`. A
    backend that cannot place an environment at all raises `docker_engine.EngineUnavailable`."""

    cfg: EnvConfig
    size: int

    def acquire(self, image: str | None = None, *, prepare: Any = None) -> AbstractContextManager[Any]:
        """`with pool.acquire(image) as env:` an `Environment` for one episode, reset after."""
        ...

    def get(self, image: str | None = None, *, prepare: Any = None) -> Any:
        """An `Environment` of `image`, waiting for a free slot; give it back with `release`."""
        ...

    def release(self, env: Any) -> None:
        """Reset `env` and keep it for the next episode (or drop it when it cannot be reset)."""
        ...

    def run_parallel(self, fn: Callable[[Any, T], R], jobs: Iterable[tuple[str, T]]) -> list[R]:
        """`fn(env, item)` for every `(image, item)` job, `size` at a time; results in job order."""
        ...

    def engine_of(self, env: Any) -> str:
        """Where `env` runs: an engine's URL, or a Ray node's id."""
        ...

    @property
    def started(self) -> int:
        """Environments started or starting (idle or in use)."""
        ...

    def close(self) -> None:
        """Remove the idle environments; those in use go when released."""
        ...


@runtime_checkable
class TaskInstance(Protocol):
    """A task an agent is evaluated on; see the module docstring. Read-only; safe to share between threads."""

    @property
    def instance_id(self) -> str:
        """The id that names the task in predictions, logs and reports (`django__django-16255`)."""
        ...

    @property
    def problem_statement(self) -> str:
        """The issue text the agent is given (never empty)."""
        ...

    @property
    def image(self) -> str:
        """The image the episode runs in and the harness grades in, with the repository in `/testbed`.

        Its HEAD (or its `srl-agent.base_commit` label) is where the episode starts, so an environment
        started from it needs no further checkout. It may not exist yet: `prepare_image` builds, finds
        or pulls it, or says why it cannot.
        """
        ...

    @property
    def base_commit(self) -> str | None:
        """The commit the episode starts at and the patch is taken against; None when only the image's
        HEAD says (a SWE-smith row naming its start by branch)."""
        ...

    def instance(self) -> dict[str, Any]:
        """The swebench 5.x instance dict the official harness grades: the row's fields, with `image`
        (this task's), `eval_script`, `log_parser` and `eval_type`.

        Raises `environments.tasks.swebench_rows.MissingGradingFields`, naming the instance and the
        fields, when the task's source lacks what swebench 5.x needs to grade it.
        """
        ...

    @property
    def fast_gradable(self) -> bool:
        """Whether the fast in-container runner (`grading.run_tests_in_env`) can grade this task: it has
        what `grading.FastGradable` names (its test files, test patch, test command and log parser).
        Else only the official harness can."""
        ...

    @property
    def gold_patch(self) -> str | None:
        """The reference fix as a unified diff at the base commit; None when the source has none."""
        ...

    @property
    def repo_dir(self) -> Path | None:
        """A local folder holding the repository's files at the base commit; None: they are only in
        the image (read them from `/testbed` in an environment of it)."""
        ...


class PoolBase(Generic[E]):
    """What a `Pool` is on top of its own `get`, `release` and `close`, written once for both pools
    (`pool.EnvironmentPool`, `ray_pool.RayEnvironmentPool`): `acquire`, `run_parallel` and `with`."""

    size: int

    def get(self, image: str | None = None, *, prepare: Prepare | None = None) -> E:
        raise NotImplementedError

    def release(self, env: E) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @contextmanager
    def acquire(self, image: str | None = None, *, prepare: Prepare | None = None) -> Iterator[E]:
        """`with pool.acquire(image) as env:` one episode in an environment, released (reset) after."""
        env = self.get(image, prepare=prepare)
        try:
            yield env
        finally:
            self.release(env)

    def run_parallel(self, fn: Callable[[E, T], R], jobs: Iterable[tuple[str, T]]) -> list[R]:
        """`fn(env, item)` for every `(image, item)` job, `size` at a time; results in job order."""

        def one(job: tuple[str, T]) -> R:
            image, item = job
            with self.acquire(image) as env:
                return fn(env, item)

        with ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="env") as executor:
            return list(executor.map(one, list(jobs)))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
