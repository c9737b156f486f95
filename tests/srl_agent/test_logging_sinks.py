"""TensorBoard and wandb sinks, for real (wandb offline): each step logged once, also across a resume."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from srl_helpers import TINY

from srl_agent import train
from srl_agent.runlog import read_metrics

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


def tiny_run(data: Path, run_dir: Path, steps: int) -> None:
    args = [
        "--task",
        "math",
        *TINY,
        f"data.source={data}",
        f"run_dir={run_dir}",
        f"trainer.steps={steps}",
        "trainer.batch_size=2",
        "grpo.group_size=4",
        "generation.max_new_tokens=8",
        "grpo.filter=none",  # every step trains, whatever the random model writes
        "trainer.val_every=0",
        "trainer.save_every=1",
        "trainer.tensorboard=true",
        "trainer.wandb=true",
        "trainer.wandb_project=srl-agent-tests",
    ]
    assert train.main(args) == 0


def test_tensorboard_and_wandb_log_every_step_once_across_a_resume(simple_data, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    tiny_run(simple_data, run_dir, steps=2)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    tiny_run(simple_data, run_dir, steps=3)  # resumes from checkpoints/last at step 2
    assert (run_dir / "wandb_run_id").read_text().strip() == run_id

    metrics = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    rewards = events.Scalars("reward_mean")
    assert [e.step for e in rewards] == [1, 2, 3]
    assert [e.value for e in rewards] == pytest.approx([metrics[s]["reward_mean"] for s in (1, 2, 3)])
    assert "val_reward_mean" in events.Tags()["scalars"]

    # Both wandb sessions wrote into the same offline run id, together logging steps 0..3 once each.
    runs = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(runs) == 2
    # wandb-core, a process of its own, may still be writing the last records when finish() returns
    deadline = time.monotonic() + 30
    while (
        len(history := [row for path in runs for row in wandb_history(path)]) < 4
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert [row["_step"] for row in history] == [0, 1, 2, 3]
    assert history[3]["reward_mean"] == pytest.approx(metrics[3]["reward_mean"])


def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline .wandb file: a ':W&B' header, then a LevelDB-style record log
    (32 KiB blocks; each chunk has a 4-byte checksum, 2-byte length and 1-byte type) of protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    rows, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if kind == 0 or pos + 7 + length > len(data):  # the end, or a chunk still being written
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows
