"""Sandboxed containers and `DockerEnvironment`, a repository environment an agent acts in.

Every container is started locked down: no network (unless `EnvConfig.network`), memory/CPU/process
limits, all capabilities dropped but the few a root user needs to edit files and install packages,
`no-new-privileges`. It is labelled `srl-agent.managed=1` and with its owner process
(`host:pid:start-time`), so that containers leaked by a run that crashed are removed by `reap_leaked()`,
which the first environment a process starts on each engine calls.

`DockerEnvironment` runs commands through a `PersistentShell`, restores the repository between episodes
(warm: `git checkout` of the base commit + `git clean` in the same container; fresh: a new container),
and reports the repository's diff against its base commit: the patch an agent submits.

Warm reset restores the tracked and untracked files of the repository, kills every process and clears
the editor's undo history; files ignored by git (build products of the image's setup such as
`*.egg-info`) and changes outside the repository are kept. When the repository cannot be restored
(it was deleted, `.git` is broken), reset falls back to a fresh container.

With `EnvConfig.hide_history` (the default) the agent sees no git history beyond the base commit:
images of real repositories hold the later commits, the fix among them, in branches, tags, remotes,
the stash, reflogs and unreachable objects, and an agent that reads them with `git log --all` earns
the reward without solving the task. At start every ref but the current branch is deleted, reflogs
expired and unreachable objects pruned (`history_script`); a warm reset deletes the refs and reflogs an
episode made, so the next episode cannot read an earlier one's commits either.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import shlex
import socket
import tarfile
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from environments import docker_engine
from environments.config import EnvConfig
from environments.editor_program import HISTORY as EDITOR_HISTORY
from environments.images import KEEPER
from environments.labels import BASE_COMMIT_LABEL, MANAGED_LABEL, OWNER_LABEL, owner_id, process_start_time
from environments.shell import CommandResult, PersistentShell, ShellLost

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

# What root inside the sandbox needs to edit any file, chmod, install packages (apt drops to _apt) and
# stop its own processes; everything else (raw sockets, mounts, ptrace, ...) stays dropped.
CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"]
EDITOR_HISTORY_DIR = os.path.dirname(EDITOR_HISTORY)  # undo history of str_replace_editor
_LIVE: weakref.WeakSet[DockerEnvironment] = weakref.WeakSet()
_reaped_lock = threading.Lock()
_reaped: weakref.WeakSet[Any] = weakref.WeakSet()  # clients whose engine was reaped (each engine has one)

# What in a git directory holds or names commits other than HEAD's: unfinished merges, rebases, cherry-picks
# and bisects, other worktrees, recorded conflict resolutions, the last commit and tag messages.
_GIT_LEFTOVERS = (
    "ORIG_HEAD FETCH_HEAD MERGE_HEAD MERGE_MSG MERGE_MODE MERGE_RR AUTO_MERGE CHERRY_PICK_HEAD REVERT_HEAD"
    " REBASE_HEAD BISECT_LOG BISECT_START BISECT_EXPECTED_REV BISECT_NAMES BISECT_TERMS BISECT_ANCESTORS_OK"
    " rebase-merge rebase-apply sequencer worktrees rr-cache COMMIT_EDITMSG SQUASH_MSG TAG_EDITMSG"
)


def history_script(workdir: str, *, prune: bool) -> str:
    """Bash (a subshell) leaving only HEAD and its ancestors in the git history of `workdir`.

    Deletes every ref but the branch HEAD is on (tags, remote-tracking refs, other branches, notes,
    stash, replace refs, `refs/original`; loose or packed) and the remotes, the files of `_GIT_LEFTOVERS`,
    empties every reflog and packs the refs left; a detached HEAD stays detached. With `prune` it also
    repacks the repository without the objects nothing left reaches, so no `git cat-file` or `git fsck`
    finds them (it rewrites the pack: about a second for a 150 MB repository). In a partial clone the
    objects of promisor packs stay. Does nothing where `workdir` is not in a git repository; exits
    non-zero when a step fails.
    """
    lines = [
        "set -o pipefail",
        f"cd {shlex.quote(workdir)} 2>/dev/null || exit 0",
        "g=$(git rev-parse --absolute-git-dir 2>/dev/null) || exit 0",
        "head=$(git symbolic-ref -q HEAD) || head=",
        # --no-deref: a symbolic ref (refs/remotes/origin/HEAD) goes itself, not the ref it points to.
        (
            "git for-each-ref --format='delete %(refname)' | awk -v keep=\"delete $head\" '$0 != keep'"
            " | git update-ref --no-deref --stdin || exit 1"
        ),
        'for remote in $(git remote); do git remote remove "$remote" || exit 1; done',
        f'(cd "$g" && rm -rf {_GIT_LEFTOVERS}) || exit 1',
        "git reflog expire --expire=now --expire-unreachable=now --all || exit 1",
        # packed-refs may still hold an old value of the kept branch under its loose ref: rewrite it.
        "git pack-refs --all --prune || exit 1",
    ]
    if prune:
        lines += [
            # .keep packs would survive the repack whole; the commit-graph and multi-pack index are caches.
            'rm -rf "$g"/objects/pack/*.keep "$g"/objects/pack/multi-pack-index',
            'rm -rf "$g"/objects/info/commit-graph "$g"/objects/info/commit-graphs',
            # So would promisor packs; their marker is stale (copied by a local clone) unless this is a
            # partial clone, whose missing objects could not be fetched here anyway.
            'git config extensions.partialClone >/dev/null || rm -f "$g"/objects/pack/*.promisor',
            "git repack -a -d -q && git prune --expire=now || exit 1",
        ]
    return "(\n" + "\n".join(lines) + "\n)"


def start_container(
    client: docker.DockerClient,
    image: str,
    cfg: EnvConfig,
    *,
    name: str | None = None,
    labels: dict[str, str] | None = None,
) -> Any:
    """Start a sandboxed, labelled container from `image` that idles until removed; `labels` are added
    to the managed and owner labels (the Ray backend names the node)."""
    return client.containers.run(
        image,
        command=KEEPER,
        name=name,
        detach=True,
        network_mode="bridge" if cfg.network else "none",
        mem_limit=cfg.memory,
        memswap_limit=cfg.memory,
        nano_cpus=int(cfg.cpus * 1e9),
        pids_limit=cfg.pids_limit,
        cap_drop=["ALL"],
        cap_add=CAPABILITIES,
        security_opt=["no-new-privileges"],
        labels={**(labels or {}), MANAGED_LABEL: "1", OWNER_LABEL: owner_id()},
        working_dir="/",
    )


def docker_run_args(cfg: EnvConfig) -> list[str]:
    """`start_container`'s sandbox and labels as `docker run` flags, for a harness that starts its
    containers with the docker CLI (the mini-swe-agent scaffold): the same limits, capabilities and
    network, and the labels by which `reap_leaked` removes them once this process is gone."""
    return [
        "--network", "bridge" if cfg.network else "none",
        "--memory", cfg.memory, "--memory-swap", cfg.memory,
        "--cpus", f"{cfg.cpus:g}",
        "--pids-limit", str(cfg.pids_limit),
        "--cap-drop", "ALL", *(flag for cap in CAPABILITIES for flag in ("--cap-add", cap)),
        "--security-opt", "no-new-privileges",
        "--label", f"{MANAGED_LABEL}=1", "--label", f"{OWNER_LABEL}={owner_id()}",
    ]  # fmt: skip


def reap_leaked(client: docker.DockerClient | None = None) -> list[str]:
    """Remove managed containers on this host whose owner process is gone; returns their names."""
    client = client or docker_engine.shared_client()
    host = socket.gethostname()
    removed = []
    # ignore_removed: docker-py inspects each listed container, and one that another process removes in
    # between (12 episodes start and end side by side) would otherwise fail this start with NotFound
    listed = client.containers.list(all=True, filters={"label": f"{MANAGED_LABEL}=1"}, ignore_removed=True)
    for container in listed:
        owner = container.labels.get(OWNER_LABEL, "")
        owner_host, _, rest = owner.partition(":")
        pid, _, started = rest.partition(":")
        if not owner or owner_host != host:
            continue  # not started by an srl-agent process on this host: not ours to judge
        if pid.isdigit() and process_start_time(int(pid)) == started:
            continue  # its owner still runs
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker_engine.NotFound:
            pass
        except docker_engine.APIError as e:
            if e.status_code != 409:  # 409: another process removes it now (Ray's slots start side by side)
                raise
    if removed:
        log.info("removed %d container(s) leaked by earlier runs: %s", len(removed), ", ".join(removed))
    return removed


class DockerEnvironment:
    """A repository in a sandboxed container with a persistent shell. Use as a context manager.

    `image` must hold the repository at `cfg.workdir` as a git checkout whose HEAD is the base commit
    (images from `build_task_image` and SWE-bench images do); the base commit is read from the image's
    label or from HEAD at start. One thread at a time per environment. Once started it is an
    `environments.protocol.Environment`; the methods beyond it start it and move files to and from the host.
    """

    def __init__(
        self,
        image: str | None = None,
        cfg: EnvConfig | None = None,
        *,
        client: docker.DockerClient | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg or EnvConfig()
        self.image = image or self.cfg.base_image
        self._client = client
        self._labels = labels
        self._container: Any = None
        self._shell: PersistentShell | None = None
        self.base_commit: str | None = None
        self._head_ref: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, image: str | None = None) -> DockerEnvironment:
        """Start a container from `image` (default: the one given at construction) and its shell."""
        if self._container is not None:
            raise RuntimeError(f"the environment is already started (container {self._container.short_id})")
        self.image = image or self.image
        client = self._client or docker_engine.shared_client()
        self._client = client
        with _reaped_lock:
            if client not in _reaped:
                reap_leaked(client)
                _reaped.add(client)
        self._container = start_container(client, self.image, self.cfg, labels=self._labels)
        _LIVE.add(self)
        try:
            labels = self._container.image.labels or {}
            self.base_commit, self._head_ref = self._read_base(labels.get(BASE_COMMIT_LABEL))
            if self.cfg.hide_history and self.base_commit is not None:
                self._hide_history()
            self._start_shell()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the container (idempotent)."""
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        if self._container is not None:
            try:
                self._container.remove(force=True)
            except docker_engine.NotFound:
                pass
            self._container = None
        _LIVE.discard(self)

    def abandon(self) -> str | None:
        """Forget the container without asking its engine (which no longer answers); returns its id,
        for whoever removes it once the engine is back (see `EnvironmentPool`)."""
        container_id = None if self._container is None else self._container.id
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        self._container = None
        _LIVE.discard(self)
        return container_id

    def __enter__(self) -> Self:
        return self.start() if self._container is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def container_id(self) -> str:
        return self._require().id

    # -- acting -----------------------------------------------------------------------------------

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run `command` in the persistent shell (cwd and variables persist); never raises for its faults.

        When the container itself is wedged (e.g. the process limit is exhausted so nothing can be
        started), it is restarted: every process dies, files stay, and the result's note says so. When
        it stopped under the command (killed from outside), `shell.ContainerStopped` is raised: the
        environment died, which is no fault of the command; the next call restarts it.
        """
        self._require()
        assert self._shell is not None
        started = time.monotonic()
        timeout = timeout if timeout is not None else self.cfg.command_timeout
        try:
            return self._shell.run(command, timeout)
        except ShellLost as e:
            log.warning("restarting container %s: %s", self._container.short_id, e)
            self._restart_container()
            note = (
                f"The environment had stopped responding and was restarted: all processes were killed,"
                f" files were kept, the shell starts in {self._shell.cwd}."
            )
            if not e.command_started:  # nothing ran yet: run it now in the restarted container
                result = self._shell.run(command, timeout)
                result.note = f"{note} {result.note}" if result.note else note
                result.duration = time.monotonic() - started
                return result
            return CommandResult(output="", exit_code=None, timed_out=True,
                                 duration=time.monotonic() - started, note=note)  # fmt: skip

    def exec(self, command: str) -> tuple[int, str]:
        """Run `command` with bash in its own exec (cwd /), not in the agent's shell: (exit code, output)."""
        self._require()
        assert self._shell is not None
        return self._shell.exec_once(command)

    def diff(self) -> str:
        """The repository's changes against the base commit as a patch (new files included; '' if none).

        Uses a scratch index, so the agent's own staging area is left alone.
        """
        if self.base_commit is None:
            raise RuntimeError(f"{self.image}: {self.cfg.workdir} is not a git repository; there is no diff")
        script = (
            f"cd {shlex.quote(self.cfg.workdir)} && export GIT_INDEX_FILE=$(mktemp) && "
            '{ cp .git/index "$GIT_INDEX_FILE" 2>/dev/null || rm -f "$GIT_INDEX_FILE"; } && '
            f'git add -A && git diff --cached {self.base_commit}; rc=$?; rm -f "$GIT_INDEX_FILE"; exit $rc'
        )
        code, output = self.exec(script)
        if code != 0:
            raise RuntimeError(
                f"git diff in {self.cfg.workdir} failed with exit status {code}: {output[-500:]}"
            )
        return output

    def reset(self, fresh: bool | None = None) -> None:
        """Start the next episode: the repository back at the base commit and a new shell in the workdir.

        `fresh` (default: `cfg.reset == "fresh"`) replaces the container; otherwise the repository is
        restored in place and a fresh container is used only when that fails.
        """
        self._require()
        fresh = self.cfg.reset == "fresh" if fresh is None else fresh
        if not fresh and self.base_commit is not None:
            try:
                if self._restore_repository():
                    return
            except ShellLost:
                pass
            log.info("warm reset of %s failed; starting a fresh container", self._container.short_id)
        self.close()
        self.start()

    # -- files ------------------------------------------------------------------------------------

    def write_file(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        """Create or replace the file at absolute `path` in the container (parents must exist)."""
        data = content.encode() if isinstance(content, str) else content
        info = tarfile.TarInfo(name=os.path.basename(path))
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        self._put(os.path.dirname(path) or "/", [(info, io.BytesIO(data))])

    def read_file(self, path: str) -> bytes:
        """The bytes of the regular file at `path` in the container; FileNotFoundError when absent."""
        with self._get(path) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise IsADirectoryError(f"{path} is not a regular file in the container")
            extracted = tar.extractfile(member)
            assert extracted is not None
            return extracted.read()

    def copy_in(self, host_path: str | Path, container_dir: str) -> None:
        """Copy a host file or directory into the existing directory `container_dir`."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(str(host_path), arcname=Path(host_path).name)
        self._require().put_archive(container_dir, buffer.getvalue())

    def copy_out(self, container_path: str, host_dir: str | Path) -> Path:
        """Copy a container file or directory into the host directory `host_dir`; returns its new path."""
        host_dir = Path(host_dir)
        host_dir.mkdir(parents=True, exist_ok=True)
        with self._get(container_path) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links and paths out of host_dir
                tar.extractall(host_dir, filter="data")
            else:
                _check_members(tar, host_dir)
                tar.extractall(host_dir)
        return host_dir / os.path.basename(container_path.rstrip("/"))

    # -- internals --------------------------------------------------------------------------------

    def _require(self) -> Any:
        if self._container is None:
            raise RuntimeError("the environment is not started (call start() or use it in a with block)")
        return self._container

    def _start_shell(self) -> None:
        workdir = self.cfg.workdir
        self._shell = PersistentShell(
            self._client, self._container.id, cwd=workdir if self.base_commit else "/",
            output_cap=self.cfg.output_cap, interrupt_grace=self.cfg.interrupt_grace,
        )  # fmt: skip
        self._shell.start()

    def _read_base(self, labelled: str | None) -> tuple[str | None, str | None]:
        probe = PersistentShell(self._client, self._container.id)
        workdir = shlex.quote(self.cfg.workdir)
        code, out = probe.exec_once(
            f"cd {workdir} 2>/dev/null && git rev-parse HEAD 2>/dev/null "
            "&& (git symbolic-ref -q HEAD || echo)"
        )
        lines = out.split("\n")
        if code != 0 or not lines[0].strip():
            return labelled, None
        return labelled or lines[0].strip(), (lines[1].strip() if len(lines) > 1 else "") or None

    def _hide_history(self) -> None:
        started = time.monotonic()
        probe = PersistentShell(self._client, self._container.id)
        code, out = probe.exec_once(history_script(self.cfg.workdir, prune=True))
        if code != 0:
            raise RuntimeError(
                f"{self.image}: hiding the git history in {self.cfg.workdir} failed with exit status {code}:"
                f" {out[-500:]}"
            )
        log.debug("hid the git history of %s in %.2f s", self.image, time.monotonic() - started)

    def _restore_repository(self) -> bool:
        assert self._shell is not None
        self._shell.close()
        base = shlex.quote(self.base_commit or "HEAD")
        checkout = (
            f"git checkout -f -q -B {shlex.quote(self._head_ref.removeprefix('refs/heads/'))} {base}"
            if self._head_ref else f"git checkout -f -q --detach {base}"
        )  # fmt: skip
        # The episode's own commits, branches, tags and stash: no pruning, reset runs after every episode.
        hide = f" && {history_script(self.cfg.workdir, prune=False)}" if self.cfg.hide_history else ""
        # One exec: `kill -9 -1` spares the process that sends it, so it can go on to restore the repo.
        code, out = self._shell.exec_once(
            f"for i in 1 2 3; do kill -9 -1 2>/dev/null; done; rm -rf {EDITOR_HISTORY_DIR}; "
            f"cd {shlex.quote(self.cfg.workdir)} && git reset -q --hard && {checkout} && git clean -ffdq"
            f"{hide}"
        )
        if code != 0:
            log.info("restoring the repository failed (%d): %s", code, out[-300:])
            return False
        self._start_shell()
        return True

    def _restart_container(self) -> None:
        assert self._shell is not None
        self._shell.close()
        self._container.restart(timeout=0)
        self._shell.start()

    def _put(self, directory: str, members: list[tuple[tarfile.TarInfo, io.BytesIO]]) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for info, data in members:
                tar.addfile(info, data)
        try:
            ok = self._require().put_archive(directory, buffer.getvalue())
        except docker_engine.NotFound:
            ok = False
        if not ok:
            raise FileNotFoundError(f"directory {directory} does not exist in the container")

    def _get(self, path: str) -> tarfile.TarFile:
        try:
            stream, _ = self._require().get_archive(path)
        except docker_engine.NotFound:
            raise FileNotFoundError(f"{path} does not exist in the container") from None
        return tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r")


@atexit.register
def _close_live() -> None:
    # Environments still open at a normal interpreter exit; a crash leaves them to reap_leaked().
    for env in list(_LIVE):
        try:
            env.close()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log.debug("could not remove %s at exit: %s", env.image, e)


def _check_members(tar: tarfile.TarFile, host_dir: Path) -> None:
    """The part of tarfile's "data" filter that matters here, for Pythons older than 3.11.4."""
    root = host_dir.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not target.is_relative_to(root) or member.islnk() or member.isdev():
            raise ValueError(f"refusing to extract {member.name!r} from the container outside {host_dir}")
        if member.issym() and not (target.parent / member.linkname).resolve().is_relative_to(root):
            raise ValueError(f"refusing symlink {member.name!r} -> {member.linkname!r} outside {host_dir}")
