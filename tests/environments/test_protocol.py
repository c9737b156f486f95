"""`DockerEnvironment` is an `environments.protocol.Environment`: the same methods with compatible
signatures, and on a real started container every method keeps the Protocol's contract."""

from __future__ import annotations

import inspect

import pytest
from envtest_support import fast_config, sample_image

from environments.container import DockerEnvironment
from environments.protocol import Environment

PROTOCOL_METHODS = ("run", "exec", "write_file", "read_file", "diff", "reset", "close")


def test_the_protocol_has_the_methods_the_callers_need():
    declared = {
        name for name, _ in inspect.getmembers(Environment, inspect.isfunction) if not name.startswith("_")
    }
    assert declared == set(PROTOCOL_METHODS)


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_docker_environment_signatures_accept_every_protocol_call(name: str):
    wanted = inspect.signature(getattr(Environment, name)).parameters
    actual = inspect.signature(getattr(DockerEnvironment, name)).parameters
    # The protocol's parameters come first, named, ordered and defaulted alike; any extra ones are optional.
    assert list(actual)[: len(wanted)] == list(wanted)
    for param in wanted.values():
        assert (actual[param.name].kind, actual[param.name].default) == (param.kind, param.default), param
    assert all(p.default is not inspect.Parameter.empty for p in list(actual.values())[len(wanted) :])


def one_episode(env: Environment) -> None:
    """Uses the environment only through the Protocol, as tools, grading and replay do."""
    result = env.run("cd calc && export MARK=1 && false")
    assert (result.exit_code, result.timed_out, result.note) == (1, False, None)
    assert env.run("echo $PWD $MARK").output == "/testbed/calc 1\n"  # the shell persists
    slow = env.run("sleep 60", timeout=1)
    assert slow.timed_out and env.run("echo still here").output == "still here\n"
    assert env.exec("pwd; echo ${MARK:-unset}") == (0, "/\nunset\n")  # not the agent's shell
    assert env.exec("exit 3")[0] == 3
    env.write_file("/testbed/new.txt", "new\n")
    env.write_file("/testbed/run.sh", b"#!/bin/sh\necho ran\n", mode=0o755)
    assert env.read_file("/testbed/new.txt") == b"new\n"
    assert env.run("/testbed/run.sh").output == "ran\n"
    with pytest.raises(FileNotFoundError):
        env.read_file("/testbed/absent.txt")
    with pytest.raises(FileNotFoundError):
        env.write_file("/no/such/dir/x.txt", "x")
    with pytest.raises(IsADirectoryError):
        env.read_file("/testbed/calc")
    patch = env.diff()
    assert "+++ b/new.txt" in patch and "+++ b/run.sh" in patch
    env.reset()
    assert env.diff() == ""
    assert env.run("echo $PWD ${MARK:-unset}").output == "/testbed unset\n"


@pytest.mark.docker
def test_a_started_docker_environment_keeps_the_protocol_contract():
    env = DockerEnvironment(sample_image(), fast_config()).start()
    try:
        assert isinstance(env, Environment)
        environment: Environment = env  # what a type checker checks, structurally
        one_episode(environment)
    finally:
        env.close()
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="not started"):
        env.run("true")
