"""Where a task factory's repository comes from: `fetch(SOURCE, work_dir)` gives a git checkout.

SOURCE is one of:
- a local folder: a git checkout is cloned at its HEAD (uncommitted changes are not part of it: a
  warning says so); plain files are committed on the spot;
- `pypi:NAME==VERSION`: the source distribution, downloaded with pip (`--no-binary :all:`, no
  dependencies) and unpacked; it must hold its tests;
- a git URL (`https://...`, `git@...`, `ssh://...`, `file://...`, ending `.git` or not): cloned.

Files committed on the spot (a folder of plain files, an unpacked sdist) are committed with a fixed
author and date, so the commit's sha depends on the files alone and a rerun finds the same commit.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

COMMIT_AUTHOR = ("srl-agent factory", "factory@srl-agent.invalid")
COMMIT_DATE = "1735689600 +0000"  # 2025-01-01T00:00:00Z: a fixed time, so the sha depends on the files
GIT_EXCLUDE = "__pycache__/\n*.pyc\n.pytest_cache/\n*.egg-info/\n"
_GIT_URL = re.compile(r"^(https?://|git@|ssh://|git://|file://)")
_TEST_DIRS = ("tests", "test", "testing")


class SourceError(ValueError):
    """The source cannot be fetched or holds no tests; the message names the source and why."""


@dataclass(frozen=True)
class Checkout:
    """A repository ready for the factory: a git work tree at `commit` (HEAD), named `name`."""

    name: str
    path: Path
    commit: str
    source: str


def fetch(source: str, work_dir: Path) -> Checkout:
    """The checkout of `source` in `work_dir/repo` (see the module); reused when it is already there."""
    target = work_dir / "repo"
    if (target / ".git").is_dir():
        return Checkout(_name(source), target, run_git(target, "rev-parse", "HEAD"), source)
    work_dir.mkdir(parents=True, exist_ok=True)
    if source.startswith("pypi:"):
        _unpack_sdist(source.removeprefix("pypi:"), target)
        _commit_tree(target)
    elif _GIT_URL.match(source):
        _clone(source, target)
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise SourceError(f"{source}: no such folder, and not pypi:NAME==VERSION or a git URL")
        if (folder / ".git").exists():
            if run_git(folder, "status", "--porcelain"):
                log.warning("%s has uncommitted changes: the factory uses its HEAD commit only", folder)
            _clone(str(folder.resolve()), target)
        else:
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"))
            _commit_tree(target)
    (target / ".git" / "info").mkdir(exist_ok=True)
    (target / ".git" / "info" / "exclude").write_text(GIT_EXCLUDE, encoding="utf-8")
    if not any((target / d).is_dir() for d in _TEST_DIRS) and not list(target.rglob("test_*.py")):
        raise SourceError(f"{source}: no tests found (no tests/ or test/ folder and no test_*.py file)")
    return Checkout(_name(source), target, run_git(target, "rev-parse", "HEAD"), source)


def _name(source: str) -> str:
    """A short, file-safe name for the repository: the package or folder name."""
    if source.startswith("pypi:"):
        raw = source.removeprefix("pypi:")
    else:
        raw = source.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw.replace("==", "-")).strip("_").lower() or "repo"


def _unpack_sdist(requirement: str, target: Path) -> None:
    if "==" not in requirement:
        raise SourceError(f"pypi:{requirement}: name an exact version, as pypi:NAME==VERSION")
    with tempfile.TemporaryDirectory(prefix="srl-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--quiet", "-d", tmp, requirement]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        files = sorted(Path(tmp).iterdir())
        if done.returncode != 0 or not files:
            raise SourceError(f"pypi:{requirement}: pip download failed: {done.stderr.strip()[-500:]}")
        archive, unpacked = files[0], Path(tmp) / "unpacked"
        if archive.name.endswith((".tar.gz", ".tgz", ".tar.bz2")):
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
        elif archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpacked)
        else:
            raise SourceError(f"pypi:{requirement}: {archive.name} is not a source distribution")
        roots = [p for p in unpacked.iterdir() if p.is_dir()]
        shutil.copytree(roots[0] if len(roots) == 1 else unpacked, target)


def _clone(url: str, target: Path) -> None:
    import git

    try:
        git.Repo.clone_from(url, target)
    except git.GitCommandError as e:
        raise SourceError(f"{url}: git clone failed: {str(e.stderr or e).strip()[-500:]}") from None


def _commit_tree(path: Path) -> None:
    name, email = COMMIT_AUTHOR
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": COMMIT_DATE,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": COMMIT_DATE}  # fmt: skip
    run_git(path, "init", "-q")
    (path / ".git" / "info").mkdir(exist_ok=True)
    (path / ".git" / "info" / "exclude").write_text(GIT_EXCLUDE, encoding="utf-8")
    run_git(path, "add", "-A")
    run_git(
        path, "commit", "-q", "--no-gpg-sign", "-m", "Snapshot taken by the srl-agent task factory", env=env
    )


def commit_patch(path: Path, base: str, patch: str, message: str) -> str:
    """The sha of a commit whose tree is `base`'s with `patch` applied, made with the fixed author and
    date (so it is the same sha on every machine), without moving HEAD or touching the work tree.

    The commit has no parent: were `base` its parent, an agent at the bug could read the fix with
    `git diff HEAD~1`. With no parent, hiding the environment's history (`EnvConfig.hide_history`)
    leaves the bug commit alone in the repository."""
    name, email = COMMIT_AUTHOR
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": COMMIT_DATE,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": COMMIT_DATE}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="srl-index-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run_git(path, "read-tree", base, env=index)
        run_git(path, "apply", "--cached", "-", env=index, input=patch)
        tree = run_git(path, "write-tree", env=index)
    return run_git(path, "commit-tree", tree, "-m", message, env=env)


def run_git(path: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> str:
    """`git -C path ARGS` with `env` added to the environment: its stdout, stripped; SourceError when
    git fails."""
    done = subprocess.run(
        ["git", "-C", str(path), *args],
        check=False,
        capture_output=True,
        text=True,
        input=input,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise SourceError(f"{path}: git {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()
