"""Tool calls in a real container: bash, every str_replace_editor command and its messages, submit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from envtest_support import fast_config, sample_image, sample_repo

from environments.container import DockerEnvironment
from environments.tools import EMPTY_OUTPUT, execute, execute_action
from trajectories.actions import render_action
from trajectories.record import ToolCall

OPS = "/testbed/calc/ops.py"


@pytest.fixture()
def env():
    with DockerEnvironment(sample_image(), fast_config()) as environment:
        yield environment


def edit(env: DockerEnvironment, **arguments: object):
    return execute(env, ToolCall("str_replace_editor", dict(arguments)))


@pytest.mark.docker
def test_bash_observations(env: DockerEnvironment) -> None:
    listed = execute(env, ToolCall("bash", {"command": "ls calc"}))
    assert (listed.observation, listed.ok) == ("__init__.py\nops.py\n", True)
    quiet = execute(env, ToolCall("bash", {"command": "cd calc"}))
    assert quiet.observation == EMPTY_OUTPUT
    assert execute(env, ToolCall("bash", {"command": "pwd"})).observation == "/testbed/calc\n"
    failed = execute(env, ToolCall("bash", {"command": "cat nope"}))
    assert not failed.ok and "No such file or directory" in failed.observation
    slow = execute(env, ToolCall("bash", {"command": "sleep 100"}), timeout=1)
    assert not slow.ok and "was cancelled because it took more than 1 seconds" in slow.observation
    missing = execute(env, ToolCall("bash", {}))
    assert (missing.observation, missing.ok) == ("Parameter `command` is required for tool: bash", False)


@pytest.mark.docker
def test_view_file_range_and_directory(env: DockerEnvironment) -> None:
    whole = edit(env, command="view", path=OPS).observation
    assert whole.startswith(
        f'Here\'s the result of running `cat -n` on {OPS}:\n     1\t"""Tiny arithmetic helpers."""\n'
    )
    part = edit(env, command="view", path=OPS, view_range=[4, 5]).observation
    assert (
        part
        == f"Here's the result of running `cat -n` on {OPS}:\n     4\tdef add(a, b):\n     5\t    return a + b\n"
    )
    to_end = edit(env, command="view", path=OPS, view_range=[8, -1]).observation
    assert to_end.endswith("     9\t    return sum(values) / len(values)\n    10\t\n")
    listing = edit(env, command="view", path="/testbed").observation
    assert listing.startswith(
        "Here's the files and directories up to 2 levels deep in /testbed, excluding hidden items:\n/testbed\n"
    )
    assert (
        "/testbed/calc/ops.py" in listing and "/testbed/.gitignore" not in listing and ".git" not in listing
    )


@pytest.mark.docker
def test_view_errors(env: DockerEnvironment) -> None:
    assert edit(env, command="view", path="/testbed/missing.py").observation == (
        "The path /testbed/missing.py does not exist. Please provide a valid path."
    )
    bad_range = edit(env, command="view", path=OPS, view_range=[0, 3])
    assert not bad_range.ok
    assert bad_range.observation == (
        "Invalid `view_range`: [0, 3]. Its first element `0` should be within the range of lines of the file: [1, 10]"
    )
    assert (
        "should be larger or equal than its first"
        in edit(env, command="view", path=OPS, view_range=[5, 2]).observation
    )
    assert edit(env, command="view", path="/testbed", view_range=[1, 2]).observation == (
        "The `view_range` parameter is not allowed when `path` points to a directory."
    )
    assert edit(env, command="view", path="calc/ops.py").observation == (
        "The path calc/ops.py is not an absolute path, it should start with `/`. Maybe you meant /testbed/calc/ops.py?"
    )


@pytest.mark.docker
def test_str_replace_success_and_snippet(env: DockerEnvironment) -> None:
    out = edit(env, command="str_replace", path=OPS, old_str="    return a + b", new_str="    return b + a")
    assert out.ok
    assert out.observation.startswith(
        f"The file {OPS} has been edited. Here's the result of running `cat -n` on a snippet of {OPS}:\n     1\t"
    )
    assert "     5\t    return b + a\n" in out.observation
    assert out.observation.endswith(
        "Review the changes and make sure they are as expected. Edit the file again if necessary."
    )
    assert "return b + a" in env.run(f"cat {OPS}").output


@pytest.mark.docker
def test_str_replace_refusals(env: DockerEnvironment) -> None:
    absent = edit(env, command="str_replace", path=OPS, old_str="return a - b", new_str="x")
    assert (absent.ok, absent.observation) == (
        False, f"No replacement was performed, old_str `return a - b` did not appear verbatim in {OPS}.")  # fmt: skip
    many = edit(env, command="str_replace", path=OPS, old_str="    return", new_str="    yield")
    assert many.observation == (
        "No replacement was performed. Multiple occurrences of old_str `    return` in lines [5, 9]. "
        "Please ensure it is unique"
    )
    missing = edit(env, command="str_replace", path="/testbed/nope.py", old_str="a", new_str="b")
    assert missing.observation == "The path /testbed/nope.py does not exist. Please provide a valid path."
    directory = edit(env, command="str_replace", path="/testbed/calc", old_str="a", new_str="b")
    assert directory.observation == (
        "The path /testbed/calc is a directory and only the `view` command can be used on directories"
    )
    assert env.diff() == ""  # nothing changed


@pytest.mark.docker
def test_create_insert_undo(env: DockerEnvironment) -> None:
    exists = edit(env, command="create", path=OPS, file_text="x")
    assert (
        exists.observation == f"File already exists at: {OPS}. Cannot overwrite files using command `create`."
    )
    created = edit(env, command="create", path="/testbed/calc/extra.py", file_text="A = 1\nB = 2\n")
    assert created.observation == "File created successfully at: /testbed/calc/extra.py"
    no_parent = edit(env, command="create", path="/testbed/no/dir/x.py", file_text="")
    assert (
        no_parent.observation
        == "The parent directory /testbed/no/dir does not exist. Please create it first."
    )
    inserted = edit(env, command="insert", path="/testbed/calc/extra.py", insert_line=1, new_str="C = 3")
    assert inserted.observation.startswith(
        "The file /testbed/calc/extra.py has been edited. Here's the result of running `cat -n` on a snippet of "
        "the edited file:\n     1\tA = 1\n     2\tC = 3\n     3\tB = 2\n"
    )
    assert env.run("cat /testbed/calc/extra.py").output == "A = 1\nC = 3\nB = 2\n"
    bad = edit(env, command="insert", path="/testbed/calc/extra.py", insert_line=99, new_str="D")
    assert bad.observation == (
        "Invalid `insert_line` parameter: 99. It should be within the range of lines of the file: [0, 4]"
    )
    undone = edit(env, command="undo_edit", path="/testbed/calc/extra.py")
    assert undone.observation.startswith("Last edit to /testbed/calc/extra.py undone successfully. ")
    assert env.run("cat /testbed/calc/extra.py").output == "A = 1\nB = 2\n"
    assert edit(env, command="undo_edit", path=OPS).observation == f"No edit history found for {OPS}."
    unknown = edit(env, command="delete", path=OPS)
    assert unknown.observation.startswith(
        "Unrecognized command delete. The allowed commands for the str_replace_editor"
    )


@pytest.mark.docker
def test_large_and_awkward_file_contents_arrive_intact(env: DockerEnvironment) -> None:
    text = "".join(f"line {i} 'quote' \"dq\" $HOME `x` \\ \t ✓ EOF __SRL_EDITOR_EOF__\n" for i in range(5000))
    assert len(text.encode()) > 300_000  # above the 128 KiB limit of one command-line argument
    assert edit(env, command="create", path="/testbed/big.txt", file_text=text).ok
    assert env.read_file("/testbed/big.txt").decode() == text


@pytest.mark.docker
def test_submit_returns_a_patch_that_applies_to_the_base_commit(
    env: DockerEnvironment, tmp_path: Path
) -> None:
    edit(env, command="str_replace", path=OPS, old_str="    return sum(values) / len(values)",
         new_str="    if not values:\n        return 0.0\n    return sum(values) / len(values)")  # fmt: skip
    edit(env, command="create", path="/testbed/calc/new_mod.py", file_text="X = 1\n")
    env.run("git add calc/new_mod.py")  # the agent's own staging does not change what is submitted
    outcome = execute(env, ToolCall("submit", {}))
    assert outcome.submitted and outcome.patch == outcome.observation
    assert "+        return 0.0" in outcome.patch and "new file mode" in outcome.patch
    repo, sha = sample_repo()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", sha], check=True)
    (tmp_path / "p.diff").write_text(outcome.patch)
    subprocess.run(["git", "-C", str(clone), "apply", str(tmp_path / "p.diff")], check=True)
    assert "return 0.0" in (clone / "calc/ops.py").read_text()
    assert (clone / "calc/new_mod.py").read_text() == "X = 1\n"


@pytest.mark.docker
def test_canonical_action_text_and_unknown_tools(env: DockerEnvironment) -> None:
    call = ToolCall("str_replace_editor", {"command": "view", "path": OPS, "view_range": [1, 1]})
    outcome = execute_action(env, render_action(call))
    assert (
        outcome.observation
        == f'Here\'s the result of running `cat -n` on {OPS}:\n     1\t"""Tiny arithmetic helpers."""\n'
    )
    garbled = execute_action(env, "<function=bash>\n<parameter=command>ls")
    assert not garbled.ok and garbled.observation.startswith("Your action could not be parsed:")
    unknown = execute(env, ToolCall("browse", {"url": "x"}))
    assert (unknown.ok, unknown.observation) == (
        False, "Unknown tool `browse`. The available tools are: bash, str_replace_editor, submit.")  # fmt: skip
    stray = edit(env, command="view", path=OPS, colour="red")
    assert not stray.ok and "colour" in stray.observation


@pytest.mark.docker
def test_files_in_and_out(env: DockerEnvironment, tmp_path: Path) -> None:
    env.write_file("/testbed/data.bin", bytes(range(256)))
    assert env.read_file("/testbed/data.bin") == bytes(range(256))
    with pytest.raises(FileNotFoundError):
        env.read_file("/testbed/absent.txt")
    with pytest.raises(FileNotFoundError):
        env.write_file("/no/such/dir/x.txt", "x")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.txt").write_text("alpha\n")
    env.copy_in(tmp_path / "pkg", "/tmp")
    assert env.run("cat /tmp/pkg/a.txt").output == "alpha\n"
    out = env.copy_out("/testbed/calc", tmp_path / "out")
    assert (out / "ops.py").read_text().startswith('"""Tiny arithmetic helpers."""')


@pytest.mark.docker
def test_warm_reset_clears_the_undo_history(env: DockerEnvironment) -> None:
    edit(env, command="str_replace", path=OPS, old_str="return a + b", new_str="return a - b")
    env.reset(fresh=False)
    assert edit(env, command="undo_edit", path=OPS).observation == f"No edit history found for {OPS}."
    assert env.diff() == ""
