"""Shared parts of the Docker-backed environment tests: one small real repository and its task image.

Built once per session (and cached by the engine across sessions: the repository's commits have fixed
dates, so the image's input hash and the image are the same every run).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from environments.config import EnvConfig

TEST_IMAGE = "srl-agent-test/calc:latest"
FILES = {
    "calc/__init__.py": "from calc.ops import add, mean\n",
    "calc/ops.py": (
        '"""Tiny arithmetic helpers."""\n\n\n'
        "def add(a, b):\n    return a + b\n\n\n"
        "def mean(values):\n    return sum(values) / len(values)\n"
    ),
    "tests/test_ops.py": (
        "from calc import add, mean\n\n\n"
        "def test_add():\n    assert add(2, 3) == 5\n\n\n"
        "def test_mean():\n    assert mean([1, 2, 3]) == 2\n"
    ),
    "README.md": "calc\n",
    ".gitignore": "*.egg-info/\n",
}


@functools.cache
def sample_repo() -> tuple[Path, str]:
    """A git repository with two commits (the base is the second); (path, base commit sha)."""
    import git

    path = Path(tempfile.mkdtemp(prefix="srl-calc-"))
    atexit.register(shutil.rmtree, path, True)
    repo = git.Repo.init(path)
    actor = git.Actor("srl test", "test@example.invalid")
    date = "2024-01-01T00:00:00"
    (path / "README.md").write_text("draft\n")
    repo.index.add(["README.md"])
    repo.index.commit("draft", author=actor, committer=actor, author_date=date, commit_date=date)
    for name, text in FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    repo.index.add(list(FILES))
    base = repo.index.commit("calc", author=actor, committer=actor, author_date=date, commit_date=date)
    return path, base.hexsha


@functools.cache
def sample_image() -> str:
    """The base image plus the test repository in /testbed (setup: an ignored build product)."""
    from environments.images import build_task_image, ensure_base_image

    base = ensure_base_image(EnvConfig())
    repo, sha = sample_repo()
    setup = "mkdir -p calc.egg-info && echo built > calc.egg-info/PKG-INFO && python3 -m pytest -q tests"
    return build_task_image(TEST_IMAGE, base, repo, sha, setup, network=False)


def fast_config(**changes: object) -> EnvConfig:
    """Test settings: short grace period and a small output cap so fault tests stay quick."""
    values: dict[str, object] = {"interrupt_grace": 1.5, "output_cap": 20_000, "command_timeout": 20.0}
    values.update(changes)
    return EnvConfig(**values)


# A setup.py that writes a file into the checkout when the package is installed, as setuptools-scm
# writes tabulate's `tabulate/version.py`: a by-product no task's patch may carry.
WRITES_VERSION_FILE = (
    "from pathlib import Path\nfrom setuptools import setup\n\n"
    "Path(__file__).with_name('calc').joinpath('version.py').write_text('version = \"0.1.0\"\\n')\n"
    "setup()\n"
)


def factory_repo_writing_a_version_file(dest: Path) -> Path:
    """A copy of fixtures/factory_repo at `dest` whose install writes `calc/version.py`."""
    shutil.copytree(Path(__file__).parent / "fixtures" / "factory_repo", dest)
    (dest / "setup.py").write_text(WRITES_VERSION_FILE)
    return dest
