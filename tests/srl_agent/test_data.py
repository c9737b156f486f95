"""Step examples in (`srl_agent.data`): what a user's `data.source` mistake prints."""

from __future__ import annotations

import pytest

from srl_agent import train
from trajectories.config import run_cli


def run_train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last line `python -m srl_agent.train ARGV` prints on stderr; it must exit with status 2."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    return err.splitlines()[-1]


def test_a_missing_data_source_names_the_key_and_the_path(tmp_path, capsys):
    missing = tmp_path / "missing.traj"
    last = run_train(["--task", "swe", f"data.source={missing}", f"run_dir={tmp_path / 'run'}"], capsys)
    assert (
        last
        == f"error: data.source: {missing}: no such file or folder (and not a dataset id like owner/name)"
    )
