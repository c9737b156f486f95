"""No reward through the git history: the agent sees the base commit and its ancestors, nothing later.

The test repository has the base commit, the fix on top of it (branch `master`, tag `v1`) and a side
branch; the images add what SWE-bench images carry (a branch reset from the fix to the base, whose
reflog and ORIG_HEAD name the fix, a remote with a symbolic HEAD, notes, the stash, `refs/original`,
a replace ref, FETCH_HEAD, a dangling commit, packed refs) and the fix in a pack marked `.keep` and
`.promisor` (a local clone of a partial clone copies the marker), which a plain repack would keep whole. The images are rebuilt only when their
inputs change (fixed commit dates, fixed setup script).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from envtest_support import FILES, fast_config

from environments import docker_engine
from environments.container import DockerEnvironment, history_script
from environments.labels import OWNER_LABEL, owner_id

LAYOUTS = ("branch", "detached")  # HEAD on a branch (SWE-bench images) or detached (our task images)
IDENTITY = {
    "GIT_AUTHOR_NAME": "srl test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "srl test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}
# Runs in the repository with HEAD detached at the base and `master` at the fix (build_task_image's clone).
SETUP = """
export GIT_AUTHOR_NAME=srl GIT_AUTHOR_EMAIL=test@example.invalid
export GIT_COMMITTER_NAME=srl GIT_COMMITTER_EMAIL=test@example.invalid
base=$(git rev-parse HEAD) fix=$(git rev-parse master)
git checkout -q -B main "$fix"
git remote add origin https://example.invalid/calc.git
git update-ref refs/remotes/origin/main "$fix"
git symbolic-ref refs/remotes/origin/HEAD refs/remotes/origin/main
git branch -q -u origin/main
git notes add -m "the fix" "$fix"
git update-ref refs/original/refs/heads/main "$fix"
git replace "$(echo replaced | git commit-tree "$fix^{tree}")" "$fix"
echo stashed >> README.md && git stash -q
echo dangling | git commit-tree "$fix^{tree}" -p "$fix" > /dev/null
echo "$fix" > .git/FETCH_HEAD
git pack-refs --all
git repack -a -d -q
for pack in .git/objects/pack/*.pack; do touch "${pack%.pack}.keep" "${pack%.pack}.promisor"; done
git reset -q --hard "$base"
"""
DETACH = "git checkout -q --detach\n"
# A clone whose packed-refs are locked: deleting its remote-tracking refs fails.
LOCKED = "git clone -q /testbed /locked && touch /locked/.git/packed-refs.lock\n"
VIEWS = {
    "log": "git log --all --format=%H",
    "reflog": "git reflog",
    "tags": "git tag",
    "branches": "git branch -a",
    "stash": "git stash list",
    "remotes": "git remote -v",
    "refs": "git for-each-ref --format='%(refname)'",
    "leftovers": "ls $(git rev-parse --git-dir) | grep -E '_HEAD|MSG' || true",
    "commits": (
        "git cat-file --batch-all-objects --batch-check='%(objecttype) %(objectname)'"
        " | awk '$1 == \"commit\" {print $2}' | sort"
    ),
}


def git_env(**extra: str) -> dict[str, str]:
    """The host's environment without its git configuration, with a fixed identity."""
    return {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", **extra}


def git(cwd: Path, *args: str, dated: bool = False) -> str:
    """Run git on the host; `dated`: with fixed dates, so that the commits' shas are the same every run."""
    date = "2024-01-01T00:00:00Z"
    env = git_env(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date) if dated else git_env()
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@functools.cache
def history_repo() -> tuple[Path, dict[str, str]]:
    """(path, shas of 'draft', 'base', 'fix', 'side'): draft <- base <- fix (master, tag v1); base <- side."""
    path = Path(tempfile.mkdtemp(prefix="srl-history-"))
    atexit.register(shutil.rmtree, path, True)

    def commit(message: str) -> str:
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", message, dated=True)
        return git(path, "rev-parse", "HEAD")

    git(path, "init", "-q")
    git(path, "symbolic-ref", "HEAD", "refs/heads/master")
    (path / "README.md").write_text("draft\n")
    shas = {"draft": commit("draft")}
    for name, text in FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    shas["base"] = commit("calc")
    git(path, "checkout", "-q", "-b", "feature")
    (path / "NOTES.md").write_text("side work\n")
    shas["side"] = commit("side work")
    git(path, "checkout", "-q", "master")
    ops = path / "calc/ops.py"
    ops.write_text(ops.read_text().replace("len(values)\n", "len(values) if values else 0.0\n"))
    shas["fix"] = commit("fix: mean of no values")
    git(path, "tag", "-a", "-m", "release", "v1", dated=True)
    return path, shas


@functools.cache
def history_image(layout: str) -> str:
    from environments.images import build_task_image, ensure_base_image

    base = ensure_base_image(fast_config())
    repo, shas = history_repo()
    setup = SETUP + (DETACH if layout == "detached" else "") + LOCKED
    return build_task_image(
        f"srl-agent-test/history-{layout}:latest", base, repo, shas["base"], setup, network=False
    )


def views(run: Callable[[str], str]) -> dict[str, str]:
    return {name: run(command).strip() for name, command in VIEWS.items()}


def hidden(layout: str, shas: dict[str, str]) -> dict[str, str]:
    """What every view shows once only the base and its ancestors are left."""
    kept = {"branch": "refs/heads/main", "detached": ""}[layout]
    return {
        "log": f"{shas['base']}\n{shas['draft']}",
        "reflog": "",
        "tags": "",
        "branches": {"branch": "* main", "detached": "* (no branch)"}[layout],
        "stash": "",
        "remotes": "",
        "refs": kept,
        "leftovers": "",
        "commits": "\n".join(sorted([shas["base"], shas["draft"]])),
    }


def our_containers() -> list[str]:
    client = docker_engine.connect()
    return [c.id for c in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner_id()}"})]


# -- the script on the host, no Docker ----------------------------------------------------------------


def host_clone(tmp_path: Path, layout: str) -> Path:
    """The test repository as build_task_image leaves it, plus SETUP: what the images hold."""
    source, shas = history_repo()
    clone = tmp_path / "repo"
    git(tmp_path, "clone", "-q", "--no-checkout", str(source), str(clone))
    git(clone, "checkout", "-q", "--detach", shas["base"])
    git(clone, "remote", "remove", "origin")
    script = SETUP + (DETACH if layout == "detached" else "")
    subprocess.run(["bash", "-euc", script], cwd=clone, env=git_env(), check=True, capture_output=True)
    return clone


def host_run(cwd: Path) -> Callable[[str], str]:
    def run(command: str) -> str:
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False
        )
        return done.stdout + done.stderr

    return run


@pytest.mark.parametrize("layout", LAYOUTS)
def test_history_script_leaves_only_the_base_and_its_ancestors(tmp_path: Path, layout: str) -> None:
    clone = host_clone(tmp_path, layout)
    _, shas = history_repo()
    before = views(host_run(clone))
    assert shas["fix"] in before["log"] and shas["side"] in before["commits"]  # not vacuous
    assert before["stash"] and before["tags"] == "v1" and "origin" in before["remotes"]

    subprocess.run(["bash", "-c", history_script(str(clone), prune=False)], env=git_env(), check=True)
    after = views(host_run(clone))
    assert {k: v for k, v in after.items() if k != "commits"} == {
        k: v for k, v in hidden(layout, shas).items() if k != "commits"
    }
    assert shas["fix"] in after["commits"]  # without pruning, the objects are still there

    subprocess.run(["bash", "-c", history_script(str(clone), prune=True)], env=git_env(), check=True)
    assert views(host_run(clone)) == hidden(layout, shas)
    assert host_run(clone)("git status --porcelain; git fsck --unreachable --no-reflogs 2>&1") == ""


def test_history_script_does_nothing_outside_a_git_repository(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("kept\n")
    for workdir in (tmp_path, tmp_path / "missing"):
        script = history_script(str(workdir), prune=True)
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


# -- in containers ------------------------------------------------------------------------------------


@pytest.mark.docker
def test_the_image_holds_the_fix_when_history_is_kept() -> None:
    _, shas = history_repo()
    with DockerEnvironment(history_image("branch"), fast_config(hide_history=False)) as env:
        shown = views(lambda command: env.run(command).output)
    assert shas["fix"] in shown["log"].split() and shas["side"] in shown["commits"].split()
    assert shown["tags"] == "v1" and shown["stash"] and "origin" in shown["remotes"]
    assert shas["fix"][:7] in shown["reflog"] and "FETCH_HEAD" in shown["leftovers"]


@pytest.mark.docker
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_agent_sees_only_the_base_and_its_ancestors(layout: str) -> None:
    _, shas = history_repo()
    with DockerEnvironment(history_image(layout), fast_config()) as env:
        assert env.base_commit == shas["base"]
        assert views(lambda command: env.run(command).output) == hidden(layout, shas)
        fix = env.run(f"git cat-file -t {shas['fix']}")
        assert fix.exit_code != 0 and "could not get object info" in fix.output
        assert env.diff() == ""
        env.run("echo '# touched' >> calc/ops.py")
        assert "+# touched" in env.diff()


@pytest.mark.docker
@pytest.mark.parametrize("layout", LAYOUTS)
def test_warm_reset_hides_what_an_episode_committed(layout: str) -> None:
    _, shas = history_repo()
    with DockerEnvironment(history_image(layout), fast_config()) as env:
        container = env.container_id
        env.run(
            "echo answer >> calc/ops.py && git -c user.name=a -c user.email=a@b commit -qam attempt"
            " && git tag attempt && git branch scratch && echo more >> README.md"
            " && git -c user.name=a -c user.email=a@b stash -q && git notes add -m note HEAD"
            " && git checkout -q -b elsewhere"
        )
        assert len(env.run("git log --all --format=%H").output.split()) > 2  # the episode did commit
        env.reset()
        assert env.container_id == container  # warm, not a fresh container
        shown = views(lambda command: env.run(command).output)
        expected = hidden(layout, shas)
        assert {k: v for k, v in shown.items() if k != "commits"} == {
            k: v for k, v in expected.items() if k != "commits"
        }
        assert env.run("git status --porcelain").output == "" and env.diff() == ""


@pytest.mark.docker
def test_start_fails_when_the_history_cannot_be_hidden() -> None:
    env = DockerEnvironment(history_image("branch"), fast_config(workdir="/locked"))
    with pytest.raises(RuntimeError, match=r"hiding the git history in /locked failed .*packed-refs\.lock"):
        env.start()
    assert our_containers() == []
