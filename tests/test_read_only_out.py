"""Every entry point, pointed at an output folder on a read-only file system, prints one line naming
the path and why (`trajectories.config.run_cli`), not a traceback. The file system is a real
read-only tmpfs (root ignores chmod, so a mode would not do); where mounting is not permitted the
tests skip with the reason."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from environments.__main__ import main as environments_main
from srl_agent import evaluate, train
from trajectories.cli import main as trajectories_main
from trajectories.config import run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty tmpfs mounted read-only."""
    where = tmp_path_factory.mktemp("read-only")
    command = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)]
    try:
        mounted = subprocess.run(command, check=False, capture_output=True, text=True)
    except OSError as e:  # no mount program
        pytest.skip(f"cannot mount a read-only tmpfs here: {e}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


ENTRY_POINTS: dict[str, tuple[Callable[[list[str]], int], list[str], str]] = {
    "train": (train.main, ["--task", "math", "model.name=tiny-random", "run_dir={ro}/out"], "{ro}/out"),
    "evaluate --task math": (
        evaluate.main,
        ["--task", "math", "--model", "tiny-random", "data.max_val_examples=1", "eval.output={ro}/out.jsonl"],
        "{ro}/out.jsonl",
    ),
    "evaluate --task swe": (
        evaluate.main,
        ["--task", "swe", "--instances", "--model", "replay:environments/tasks", "--out", "{ro}/out"],
        "{ro}/out",
    ),
    "math benchmark": (
        evaluate.main,
        ["--task", "math", "--benchmark", "{bench}", "--model", "tiny-random", "--out", "{ro}/out"],
        "{ro}/out",
    ),
    "environments check-experts": (
        environments_main,
        ["check-experts", "environments/tasks", "--out", "{ro}/out"],
        "{ro}/out",
    ),
    "trajectories build": (
        trajectories_main,
        ["build", "trajectories/data/math_steps.jsonl", "--task", "math", "--out", "{ro}/out"],
        "{ro}/out",
    ),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_an_output_folder_on_a_read_only_file_system_is_named_with_the_reason(
    entry, read_only, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(REPO)  # the examples' relative paths
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"problem": "1+1?", "answer": "2"}\n')
    main, argv, path = ENTRY_POINTS[entry]
    argv = [a.format(ro=read_only, bench=bench) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == f"error: {path.format(ro=read_only)}: Read-only file system"
