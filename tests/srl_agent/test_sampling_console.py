"""A training step says what its sampling does while it runs (`srl_agent.runlog.SamplingConsole`):
one line per sampling round on stderr, with the bar on or off."""

from __future__ import annotations

import re

import pytest
from srl_helpers import TINY

from srl_agent import train
from srl_agent.runlog import read_metrics

ROUND = re.compile(
    r"^sampling round (\d+): (\d+) prompts, (\d+) rollouts, (\d+) kept \((\d+)/3 of the batch\), [\d.]+ s$"
)


@pytest.mark.parametrize("progress", ["true", "false"])
def test_each_sampling_round_prints_a_line(progress, tmp_path, capfd):
    run_dir = tmp_path / "run"
    args = [*TINY, f"trainer.progress={progress}", f"run_dir={run_dir}", "trainer.steps=1"]
    sizes = [
        "trainer.batch_size=3",
        "grpo.group_size=2",
        "generation.max_new_tokens=4",
        "trainer.val_every=0",
    ]
    assert train.main(["--task", "math", *args, *sizes, "grpo.max_sampling_rounds=2"]) == 0
    rounds = [
        ROUND.match(line) for line in capfd.readouterr().err.splitlines() if line.startswith("sampling round")
    ]
    [row] = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["step"] == 1]
    assert len(rounds) == row["sampling_rounds"] and all(rounds)
    numbers = [[int(n) for n in m.groups()] for m in rounds]
    assert [n[0] for n in numbers] == list(range(1, len(numbers) + 1))
    assert numbers[0][1] == 3 and all(n[2] == 2 * n[1] for n in numbers)  # rollouts: prompts x G
    assert sum(n[3] for n in numbers) == numbers[-1][4] == row["kept_prompts"]
