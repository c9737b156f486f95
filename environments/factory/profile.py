"""A repository's profile: how it installs, how its tests run and how their log is read.

The factory writes one `profile.json` per repository; grading reads it back, so a generated task is
graded with the command its validation used. The environment is the project's offline base image
(`images.ensure_base_image`) with the repository at `/testbed`, installed with pip into a virtual
environment that sees the base image's packages (Debian's pytest among them) and that `python` and
`python3` name, so the agent's shell, the tests and grading all use the same interpreter. The test
extras are installed where the package declares them (`test`, `tests` or `testing`).

Tests run as `python3 -m pytest -rA -p no:cacheprovider --tb=no` (the bundled tasks' command, whose
summary lines `PASSED path::test` the log parser `grading.parse_pytest_report` reads, as swebench's
`parse_log_pytest` does) over the repository's test folders.
"""

from __future__ import annotations

import configparser
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TEST_COMMAND = "python3 -m pytest -rA -p no:cacheprovider --tb=no"
LOG_PARSER = "parse_log_pytest"
TEST_EXTRAS = ("test", "tests", "testing")
VENV = "/opt/venv"


@dataclass
class RepoProfile:
    """One repository at one commit: its image and how to install and test it (see the module)."""

    name: str
    commit: str
    image: str
    install_cmds: list[str] = field(default_factory=list)
    test_cmd: str = TEST_COMMAND
    test_paths: list[str] = field(default_factory=list)
    log_parser: str = LOG_PARSER
    timeout: int = 90
    """Seconds a candidate's test run may take before it is dropped as `timeout`."""
    timeout_ref: int = 900
    """Seconds the reference runs of the clean repository may take."""

    @property
    def full_test_cmd(self) -> str:
        """The whole suite: `test_cmd` over `test_paths`."""
        return " ".join([self.test_cmd, *self.test_paths])

    def setup_script(self) -> str:
        """The image's setup, run in /testbed with network (`images.build_task_image`)."""
        return "\n".join(self.install_cmds)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> RepoProfile:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cls(**data)


def detect(name: str, repo: Path, commit: str, image: str) -> RepoProfile:
    """The profile of the checkout `repo`: pip install with its test extras, its test folders."""
    target = "." + (f"[{extra}]" if (extra := test_extra(repo)) else "")
    install = [
        f"python3 -m venv --system-site-packages {VENV}",
        f"{VENV}/bin/python -m pip install --quiet --disable-pip-version-check -e '{target}'",
        # wrappers, not links: a venv is found next to the path the interpreter is run by
        *(
            f"printf '#!/bin/sh\\nexec {VENV}/bin/python \"$@\"\\n' > /usr/local/bin/{name} && chmod +x /usr/local/bin/{name}"
            for name in ("python", "python3")
        ),
        "printf '__pycache__/\\n*.pyc\\n.pytest_cache/\\n*.egg-info/\\n' >> .git/info/exclude",
        "python3 -m pytest --version",
    ]
    paths = [d for d in ("tests", "test", "testing") if (repo / d).is_dir()]
    return RepoProfile(name, commit, image, install, test_paths=paths or ["."])


def test_extra(repo: Path) -> str | None:
    """The extra the package declares for its tests (`test`, `tests`, `testing`), if any."""
    declared: set[str] = set()
    pyproject = repo / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError:
            data = {}
        declared |= set((data.get("project") or {}).get("optional-dependencies") or {})
    setup_cfg = repo / "setup.cfg"
    if setup_cfg.is_file():
        parser = configparser.ConfigParser()
        try:
            parser.read_string(setup_cfg.read_text(encoding="utf-8"))
            if parser.has_section("options.extras_require"):
                declared |= set(parser["options.extras_require"])
        except configparser.Error:
            pass
    return next((extra for extra in TEST_EXTRAS if extra in declared), None)


def is_test_path(path: str) -> bool:
    """Whether `path` (repo-relative) is a test file, as SWE-smith decides it."""
    parts = Path(path).parts
    stem = Path(path).stem
    return (
        stem.startswith("test")
        or stem.endswith("test")
        or any(p in ("tests", "test", "specs") for p in parts[:-1])
    )
