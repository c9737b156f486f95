"""The GPU check (bench/gpu_check.py): its tiny CPU mode end to end (the table, every check but vLLM's
passing, vLLM's skipped with its reason, exit status 0), a check that raises made a FAILED row while
the others still run and the exit status 1, the time budget, and on a GPU the real check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))  # the script imports its checks as a sibling module

import gpu_check
import gpu_checks


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def table_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """check -> (status, figure or reason), read back from the printed table."""
    lines = stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("check  status")))
    rows = {}
    for line in lines[header + 1 :]:
        if line.startswith("peak GiB:"):
            break
        name, status, _seconds, _peak, detail = line.split(maxsplit=4)
        rows[name] = (status, detail)
    return rows


@pytest.mark.slow  # seven child processes, each importing torch and transformers: ~40 s on 2 cores
def test_the_tiny_cpu_mode_prints_one_table_and_exits_0():
    done = run_script("--device", "cpu", "--tiny", timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.count("check  status") == 1 and "no check failed" in done.stdout
    rows = table_rows(done.stdout)
    assert list(rows) == list(gpu_checks.CHECKS)
    assert {name for name, (status, _) in rows.items() if status == "ok"} == set(rows) - {"vllm"}
    assert rows["vllm"][0] == "skipped" and (
        "needs a CUDA GPU" in rows["vllm"][1] or "not installed" in rows["vllm"][1]
    )
    assert rows["fsdp2"][1].startswith("gloo, 1 rank")
    assert "tokens/s" in rows["grpo"][1] and "MFU" not in rows["grpo"][1]  # no GPU peak to measure against


def test_a_check_that_raises_is_a_failed_row_the_others_still_run_and_the_exit_status_is_1(
    tmp_path, monkeypatch, capsys
):
    """The checks run in this process here (the children's `attempt`), the tiny model on the CPU; `sft`
    is made to raise."""

    def broken(ctx):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")

    monkeypatch.setitem(gpu_checks.CHECKS, "sft", broken)
    ctx = gpu_checks.Context(tmp_path / "model", "cpu", tiny=True, peak_tflops=989.4, vllm_on_cpu=False)
    rows = gpu_check.run_checks(["grpo", "sft", "hf"], lambda name, _: gpu_check.attempt(name, ctx), 600, 300)
    assert [(r.name, r.status) for r in rows] == [
        ("model", "ok"),
        ("grpo", "ok"),
        ("sft", "FAILED"),
        ("hf", "ok"),
    ]
    assert rows[2].detail == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert gpu_check.report(rows, tiny=True, seconds=1.0) == 1
    out = capsys.readouterr().out
    assert "failed: sft" in out and "an illegal memory access" in out
    assert gpu_check.report(rows[:2], tiny=True, seconds=1.0) == 0


def test_past_the_budget_checks_are_skipped_and_without_a_model_nothing_runs():
    def launch(name, seconds):
        return gpu_check.Row(name, "FAILED", "no space left on device")

    rows = gpu_check.run_checks(["grpo"], launch, budget=0, check_timeout=300)
    assert [(r.status, r.detail) for r in rows] == [
        ("skipped", "the time budget (--budget 0 s) is spent"),
        ("skipped", "no model: the model check did not pass"),
    ]
    rows = gpu_check.run_checks(["grpo", "vllm"], launch, budget=600, check_timeout=300)
    assert [r.status for r in rows] == ["FAILED", "skipped", "skipped"]


def test_only_names_known_checks():
    assert gpu_check.parse(["--only", "grpo, vllm"]).names == ["grpo", "vllm"]
    with pytest.raises(SystemExit):
        gpu_check.parse(["--only", "grpo,nccl"])


@pytest.mark.gpu
@pytest.mark.slow
def test_the_gpu_check_passes_on_this_gpu():
    """The real check: Qwen2.5-0.5B's shape on the GPU, under its own 9-minute budget."""
    done = run_script(timeout=660)
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    rows = table_rows(done.stdout)
    assert list(rows) == list(gpu_checks.CHECKS)
    vllm_missing = rows["vllm"] == ("skipped", "vllm is not installed (pip install -e '.[vllm]')")
    assert {n for n, (status, _) in rows.items() if status != "ok"} == ({"vllm"} if vllm_missing else set())
    assert "MFU" in rows["grpo"][1]
