"""Every command example we show runs: the README's, the configs' headers' and each entry point's `--help`.

Each `python -m ...` example is run with `--dry-run` in this process: its flags must parse and its
config (file, overrides) must resolve. The first thing a newcomer copies must not fail.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from trajectories.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# `--help` of each entry point and subcommand; the commands they show after the usage lines are collected.
HELP_PAGES = [
    ["srl_agent.train"],
    ["srl_agent.evaluate"],
    ["srl_agent.export"],
    ["srl_agent.serve"],
    ["trajectories"],
    ["trajectories", "inspect"],
    ["trajectories", "build"],
    ["environments"],
    ["environments", "doctor"],
    ["environments", "build"],
    ["environments", "replay"],
    ["environments", "check-experts"],
    ["environments", "make-tasks"],
]


# A synopsis, not an example: optional parts in brackets (`[--json]`) or a choice in braces (`{a,b}`).
SYNOPSIS = re.compile(r"\[-|\[[A-Z]|\{\w+,")


def entry_point(module: str) -> Callable[[list[str]], int]:
    if module == "srl_agent.train":
        from srl_agent.train import main
    elif module == "srl_agent.evaluate":
        from srl_agent.evaluate import main
    elif module == "srl_agent.export":
        from srl_agent.export import main
    elif module == "srl_agent.serve":
        from srl_agent.serve import main
    elif module == "trajectories":
        from trajectories.cli import main
    elif module == "environments":
        from environments.__main__ import main
    else:
        raise AssertionError(f"an example runs an unknown entry point: python -m {module}")
    return main


def run(argv: list[str]) -> tuple[int, str]:
    """`python -m argv[0] argv[1:]` in this process: (exit status, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = entry_point(argv[0])(argv[1:])
        except SystemExit as e:  # argparse: --help, or a usage error
            code = e.code if isinstance(e.code, int) else 1
        except ConfigError as e:  # what run_cli prints and exits 2 for
            print(f"error: {e}")
            code = 2
    return code, out.getvalue()


def commands_in(text: str) -> list[str]:
    """The `python -m ...` commands in `text`, continuation lines joined; synopses are left out.
    Lines of a YAML file's comment header count (their leading `#` is removed first)."""
    lines = [
        re.sub(r"^\s*#", "", line) if line.lstrip().startswith("#") else line for line in text.splitlines()
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        match = re.search(r"(?:^|\s)(?:\.venv/bin/)?python -m (\S.*)$", line)
        if match and not SYNOPSIS.search(match.group(1).split("  #")[0]):
            found.append(match.group(1))
    return found


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    return [c for block in blocks for c in commands_in(block)]


def config_commands() -> list[str]:
    return [c for path in sorted((ROOT / "configs").glob("*.yaml")) for c in commands_in(path.read_text())]


def help_commands() -> list[str]:
    found = []
    for page in HELP_PAGES:
        code, text = run([*page, "--help"])
        assert code == 0, f"python -m {' '.join(page)} --help exited {code}: {text}"
        # everything after the usage block (its lines are synopses, not commands)
        found += commands_in(text.split("\n\n", 1)[1])
    return found


def as_argv(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def test_the_example_collection_finds_the_examples():
    readme = [as_argv(c) for c in readme_commands()]
    assert ["srl_agent.train", "--task", "math"] in readme
    assert any(argv[:2] == ["environments", "replay"] for argv in readme)
    assert any("--stage sft" in c and "trainer.steps=8" in c for c in config_commands())
    helps = help_commands()
    for module in (
        "srl_agent.train",
        "srl_agent.evaluate",
        "srl_agent.export",
        "srl_agent.serve",
        "trajectories",
        "environments",
    ):
        assert any(c.startswith(module + " ") for c in helps), f"python -m {module} --help shows no example"


@pytest.mark.parametrize("source", ["README.md", "configs/*.yaml", "--help"])
def test_every_example_runs_with_dry_run(source, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name paths relative to the repository
    commands = {"README.md": readme_commands, "configs/*.yaml": config_commands, "--help": help_commands}[
        source
    ]()
    assert commands
    failures = []
    for command in commands:
        code, text = run([*as_argv(command), "--dry-run"])
        if code != 0:
            failures.append(f"python -m {command}  ->  exit {code}: {text.strip()[-400:]}")
    assert not failures, "examples that do not run:\n" + "\n".join(failures)


def test_a_wrong_example_would_fail(monkeypatch):
    """The check can fail: an override of a key that does not exist (the old `trainer.lr`)."""
    monkeypatch.chdir(ROOT)
    code, text = run([*as_argv("srl_agent.train --task math trainer.lr=1e-6"), "--dry-run"])
    assert code != 0 and "trainer.lr" in text
