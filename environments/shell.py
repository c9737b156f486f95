"""A persistent bash inside a container, driven over one long-lived exec socket.

One `bash` runs for the life of the shell; each command is written to its stdin and its output read back
up to a sentinel line carrying the exit status and the working directory. cwd, variables and functions
persist between commands, as expert SWE-agent trajectories assume, and a trivial command costs a
socket round trip (well under a millisecond) instead of one `docker exec` (about 80 ms).

How one command runs: `eval $'<command, ANSI-C quoted>' < /dev/null; printf '\\n<sentinel> %d %s\\n' ...`.
- Quoting the command as one `$'...'` word means no input can leave bash's parser waiting for more
  (an unterminated quote is a syntax error reported by `eval`, and the shell lives on).
- stdin is /dev/null, so a command that reads stdin (`cat`, `python` without a file) sees EOF instead of
  swallowing the next command.
- stderr is merged into stdout in order (`exec 2>&1` at start).

Limits and faults:
- Timeout: the command's process tree (descendants of the shell, found through /proc) is killed with
  SIGKILL from a second exec, repeatedly for `interrupt_grace` seconds; when the sentinel still does not
  come (a builtin loop such as `while :; do :; done`, or a fork bomb) the shell is recycled: every
  process in the container but PID 1 is killed and a new bash starts in the last known cwd
  (`CommandResult.note` says so; variables are lost). If even that fails (no exec can be created, e.g.
  the process limit is exhausted), `ShellLost` is raised for the owner to restart the container.
- Output: at most `output_cap` bytes are kept (the head and the tail, with a marker saying how much was
  omitted); the rest is read and discarded, so a flood can neither hang the shell nor fill memory.
- Process limit: before and after each command a guard of bash builtins checks whether the container
  refused forks since the last look (the pids cgroup's `max` events; a fork bomb). If so, every process
  but the shell is killed and the note says so.
- `exit` (or `set -e` plus a failure) ends bash: the next command sees the shell gone, a new one is
  started and the result carries a note.
- The container stopping under a command (killed from outside, its PID 1 gone, the engine restarted)
  also ends bash, but that is the environment dying, not the agent's shell: `ContainerStopped` is
  raised (the agent loop ends the episode as `environment_error`) instead of a note about `exit`.
- Output written later by background jobs is delivered with whichever command is running then.
"""

from __future__ import annotations

import re
import secrets
import select
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from environments import docker_engine

if TYPE_CHECKING:
    import docker

SHELL_ENV = {
    "PAGER": "cat", "MANPAGER": "cat", "GIT_PAGER": "cat", "LESS": "-R",
    "PIP_PROGRESS_BAR": "off", "TQDM_DISABLE": "1", "TERM": "dumb",
}  # fmt: skip
_UNSAFE = re.compile(rb"[^\x20-\x26\x28-\x5b\x5d-\x7e]")  # all but printable ASCII minus ' and \
_WINDOW = 8192  # bytes always kept unscanned-for-truncation so a sentinel split across reads is found
# Kill the process tree under the shell (pid $1) with bash builtins only: it must work when no process
# can be forked. Repeats, since a dying tree may still fork for a moment.
_KILL_TREE = r"""
root=$1
for round in 1 2 3 4 5; do
  declare -A parent=()
  for stat in /proc/[0-9]*/stat; do
    read -r line < "$stat" 2>/dev/null || continue
    rest=${line##*) }; set -- $rest; parent[${line%% *}]=$2
  done
  victims=() frontier=("$root")
  while ((${#frontier[@]})); do
    next=()
    for pid in "${!parent[@]}"; do
      for f in "${frontier[@]}"; do [[ ${parent[$pid]} == "$f" ]] && next+=("$pid"); done
    done
    victims+=("${next[@]}") frontier=("${next[@]}")
  done
  ((${#victims[@]})) || break
  kill -9 "${victims[@]}" 2>/dev/null
done
"""
# Every process but PID 1 (the container's keeper) and this one; repeated to catch late forks.
_KILL_ALL = "for i in 1 2 3; do kill -9 -1 2>/dev/null; done; true"
# Fork-bomb guard, run before and after every command with bash builtins only (it must work when
# nothing can fork): when the container's count of refused forks (the pids cgroup's `max` events) grew
# since the last look, kill every process but this shell and PID 1, and remember that it did.
_FIND_EVENTS = (  # cgroup v2, else v1; run once when the shell starts
    "__srl_ev=/sys/fs/cgroup/pids.events; [ -r $__srl_ev ] || __srl_ev=/sys/fs/cgroup/pids/pids.events; "
)
_READ_HITS = '__srl_h=0; { read -r _ __srl_h < "$__srl_ev"; } 2>/dev/null; '

_GUARD = (
    _READ_HITS + 'if [ "$__srl_h" != "${__srl_seen:-$__srl_h}" ]; then '
    "for __srl_i in 1 2 3 4 5; do kill -9 -1; done 2>/dev/null; __srl_kills=1; " + _READ_HITS + "fi; "
    "__srl_seen=$__srl_h; "
)
# One command: guard, the command, guard, then the sentinel with its status, whether the guard fired,
# and the working directory.
_LINE = (
    "__srl_kills=0; "
    + _GUARD
    + "eval COMMAND < /dev/null; __srl_rc=$?; "
    + _GUARD
    + 'printf \'\\n%s %d %d %s\\n\' MARKER "$__srl_rc" "$__srl_kills" "$PWD"\n'
)


@dataclass
class CommandResult:
    """What one command produced. `output` is stdout and stderr merged, possibly truncated (`truncated`).

    `exit_code` is None when the command never finished (its shell was recycled). `timed_out` means it
    ran past its timeout and was interrupted. `note` says what the environment did beyond that (the
    shell or the container was restarted), in words for the agent.
    """

    output: str
    exit_code: int | None
    timed_out: bool = False
    truncated: bool = False
    duration: float = 0.0
    note: str | None = None


class ShellLost(RuntimeError):
    """The shell died and no new one could be started in this container (the owner should restart it).

    `command_started` is False when it happened before the command was sent (it is safe to run again).
    """

    command_started = True


class ContainerStopped(RuntimeError):
    """The container stopped while a command ran: the environment died, not the agent's shell."""


class PersistentShell:
    """One long-lived bash in a running container. Not thread-safe: one command at a time."""

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        *,
        cwd: str = "/",
        env: dict[str, str] | None = None,
        output_cap: int = 100_000,
        interrupt_grace: float = 3.0,
    ) -> None:
        self._api = docker_engine.low_level(client)
        self._container_id = container_id
        self._env = {**SHELL_ENV, **(env or {})}
        self.output_cap = output_cap
        self.interrupt_grace = interrupt_grace
        self.cwd = cwd
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._raw = bytearray()
        self._leftover = bytearray()
        self._token = secrets.token_hex(8)
        self._count = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start bash in `self.cwd` (in / when that is gone) and wait until it answers.

        Raises ShellLost when no bash can be started (the container stopped, nothing can fork, ...).
        """
        try:
            exec_id = self._api.exec_create(
                self._container_id, ["bash", "--noprofile", "--norc"], stdin=True, tty=False,
                workdir="/", environment=self._env,
            )["Id"]  # fmt: skip
            raw = self._api.exec_start(exec_id, socket=True)
        except docker_engine.APIError as e:
            raise ShellLost(f"cannot start bash in container {self._container_id[:12]}: {e}") from None
        self._sock = getattr(raw, "_sock", raw)
        self._sock.setblocking(True)
        self._raw.clear()
        self._leftover.clear()
        ready = f"__SRL_{self._token}_ready__"
        # cd here rather than as the exec's workdir: a deleted directory must not stop the shell.
        cd = f"cd {ansi_c_quote(self.cwd)} 2>/dev/null || cd /"
        self._send(f"exec 2>&1; {cd}; {_FIND_EVENTS}{_GUARD} printf '%s %d %s\\n' {ready} $$ \"$PWD\"\n")
        data = bytearray()
        deadline = time.monotonic() + 30
        while (m := re.search(re.escape(ready.encode()) + rb" (\d+) ([^\n]*)\n", data)) is None:
            chunk = self._recv(deadline)
            if not chunk:
                self.close()
                raise ShellLost(
                    f"bash in container {self._container_id[:12]} did not start: {bytes(data)[-300:]!r}"
                )
            data += chunk
        self.pid, self.cwd = int(m.group(1)), m.group(2).decode("utf-8", "replace")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None

    # -- commands ---------------------------------------------------------------------------------

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run `command` (any bash, multi-line allowed) in the shell; see the module docstring for limits."""
        started = time.monotonic()
        note = None
        if self._sock is None:
            try:
                self.start()
            except ShellLost as e:
                e.command_started = False
                raise
            note = f"The previous shell had exited; a new shell was started in {self.cwd} (variables reset)."
        self._count += 1
        marker = f"__SRL_{self._token}_{self._count}__"
        collector = _Collector(self.output_cap, marker.encode())
        if self._leftover:
            collector.feed(bytes(self._leftover))
            self._leftover.clear()
        line = _LINE.replace("MARKER", marker).replace("COMMAND", ansi_c_quote(command))
        try:
            self._send(line)
            done = self._read_until(collector, started + timeout)
        except _ShellGone:
            return self._after_exit(collector, started, note)
        timed_out = not done
        if timed_out:
            done = self._interrupt(collector)
            if not done:
                self._recycle()
                note = (
                    f"The command did not stop when interrupted, so the shell was restarted in {self.cwd}"
                    " (background processes were killed and variables were reset)."
                )
        if done:
            self.cwd = collector.cwd or self.cwd
            self._leftover += collector.rest
            if collector.guard_fired:
                note = (
                    "The container hit its process limit (a fork bomb?); every process but this shell"
                    " was killed."
                )
        return CommandResult(
            output=collector.text(),
            exit_code=collector.exit_code if done else None,
            timed_out=timed_out,
            truncated=collector.dropped > 0,
            duration=time.monotonic() - started,
            note=note,
        )

    def exec_once(self, command: str) -> tuple[int, str]:
        """Run `command` with bash in a separate exec (not in the shell); (exit code, output)."""
        try:
            exec_id = self._api.exec_create(self._container_id, ["bash", "-c", command])["Id"]
            output = self._api.exec_start(exec_id)
            return int(self._api.exec_inspect(exec_id)["ExitCode"]), output.decode("utf-8", "replace")
        except docker_engine.APIError as e:
            raise ShellLost(f"cannot run a process in container {self._container_id[:12]}: {e}") from None

    # -- faults -----------------------------------------------------------------------------------

    def _interrupt(self, collector: _Collector) -> bool:
        """Kill the command's process tree until its sentinel arrives; False when it never does."""
        deadline = time.monotonic() + self.interrupt_grace
        while time.monotonic() < deadline:
            self.exec_once(f"set -- {self.pid}\n{_KILL_TREE}")
            try:
                if self._read_until(collector, min(deadline, time.monotonic() + 0.5)):
                    return True
            except _ShellGone:
                return False
        return False

    def _recycle(self) -> None:
        """Kill every process in the container but PID 1 and start a new shell in the last known cwd."""
        self.close()
        self.exec_once(_KILL_ALL)
        self.start()

    def _after_exit(self, collector: _Collector, started: float, note: str | None) -> CommandResult:
        self.close()
        if (why := self._container_stopped()) is not None:
            raise ContainerStopped(
                f"container {self._container_id[:12]} stopped while the command ran ({why})"
            )
        exit_note = "The shell exited (exit, or set -e and a failure); the next command starts a new shell."
        return CommandResult(
            output=collector.text(), exit_code=None, truncated=collector.dropped > 0,
            duration=time.monotonic() - started, note=f"{note} {exit_note}" if note else exit_note,
        )  # fmt: skip

    def _container_stopped(self) -> str | None:
        """None while the container runs (bash alone exited), else how it stopped."""
        try:
            # The engine may not have seen a killed container's end yet: a new process must start too,
            # and when none does, its end is waited for (briefly) to say how it stopped.
            state = self._api.inspect_container(self._container_id)["State"]
            if state.get("Running") and self._starts_a_process():
                return None
            deadline = time.monotonic() + 5.0
            while state.get("Running") and time.monotonic() < deadline:
                time.sleep(0.05)
                state = self._api.inspect_container(self._container_id)["State"]
        except docker_engine.NotFound:
            return "it was removed"
        except docker_engine.APIError as e:
            return f"the engine cannot say how: {e}"
        if state.get("Running"):
            return "it no longer starts processes"
        oom = ", out of memory" if state.get("OOMKilled") else ""
        return f"exit status {state.get('ExitCode')}{oom}"

    def _starts_a_process(self) -> bool:
        try:
            return self.exec_once("true")[0] == 0
        except ShellLost:
            return False

    # -- socket -----------------------------------------------------------------------------------

    def _send(self, text: str) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(text.encode("utf-8", "surrogateescape"))
        except OSError:
            raise _ShellGone() from None

    def _read_until(self, collector: _Collector, deadline: float) -> bool:
        """Feed output to `collector` until its sentinel (True) or the deadline (False)."""
        while True:
            chunk = self._recv(deadline)
            if chunk is None:
                return False
            if not chunk:
                raise _ShellGone()
            if collector.feed(chunk):
                return True

    def _recv(self, deadline: float) -> bytes | None:
        """The payload of the complete frames available by `deadline`: None at the deadline, b"" at EOF."""
        assert self._sock is not None
        while True:
            payload = self._take_frames()
            if payload:
                return payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._sock], [], [], remaining)
            if not readable:
                return None
            try:
                data = self._sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                return b""
            self._raw += data

    def _take_frames(self) -> bytes:
        # Without a TTY the engine multiplexes the stream: 8-byte header (stream, 0, 0, 0, size u32 BE).
        out = bytearray()
        raw = self._raw
        pos = 0
        while len(raw) - pos >= 8:
            size = int.from_bytes(raw[pos + 4 : pos + 8], "big")
            if len(raw) - pos - 8 < size:
                break
            out += raw[pos + 8 : pos + 8 + size]
            pos += 8 + size
        del raw[:pos]
        return bytes(out)


class _ShellGone(Exception):
    """bash closed its end of the stream (it exited or was killed)."""


class _Collector:
    """Output of one command up to its sentinel, keeping at most `cap` bytes (head + tail)."""

    def __init__(self, cap: int, marker: bytes) -> None:
        self.head_cap = cap // 2
        self.tail_cap = cap - self.head_cap
        self.head = bytearray()
        self.buf = bytearray()
        self.dropped = 0
        self.exit_code: int | None = None
        self.cwd: str | None = None
        self.guard_fired = False
        self.rest = b""
        self._needle = b"\n" + marker + b" "  # found with bytes.find: no regex compiled per command

    def feed(self, data: bytes) -> bool:
        start = max(0, len(self.buf) - _WINDOW)
        self.buf += data
        at = self.buf.find(self._needle, start)
        end = self.buf.find(b"\n", at + len(self._needle)) if at != -1 else -1
        if end != -1:  # the whole sentinel line: "<marker> <exit status> <guard fired> <cwd>"
            code, fired, cwd = bytes(self.buf[at + len(self._needle) : end]).split(b" ", 2)
            self.exit_code, self.guard_fired = int(code), fired != b"0"
            self.cwd = cwd.decode("utf-8", "replace") or None
            self.rest = bytes(self.buf[end + 1 :])
            del self.buf[at:]
            return True
        excess = len(self.buf) - _WINDOW - self.tail_cap
        if excess > 0:
            room = max(0, self.head_cap - len(self.head))
            self.head += self.buf[: min(room, excess)]
            self.dropped += max(0, excess - room)
            del self.buf[:excess]
        return False

    @property
    def omitted(self) -> int:
        """Bytes left out of `text()`."""
        return self._tail()[1]

    def _tail(self) -> tuple[bytearray, int]:
        if self.dropped and len(self.buf) > self.tail_cap:
            return self.buf[-self.tail_cap :], self.dropped + len(self.buf) - self.tail_cap
        return self.buf, self.dropped

    def text(self) -> str:
        tail, dropped = self._tail()
        if not dropped:
            return (self.head + tail).decode("utf-8", "replace")
        cap = self.head_cap + self.tail_cap
        marker = f"\n[... {dropped} bytes of output omitted (output is capped at {cap} bytes) ...]\n"
        return self.head.decode("utf-8", "replace") + marker + tail.decode("utf-8", "replace")


def ansi_c_quote(text: str) -> str:
    """`text` as one bash `$'...'` word: printable ASCII as is, every other byte as `\\xHH`."""
    data = text.encode("utf-8", "surrogateescape")
    return "$'" + _UNSAFE.sub(lambda m: b"\\x%02x" % m.group(0)[0], data).decode("ascii") + "'"
