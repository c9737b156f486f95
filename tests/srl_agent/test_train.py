"""The training entry point end to end on the tiny model: learning, parameters, stages, resume, configs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from srl_helpers import TINY, math_example

from srl_agent import checkpoint, evaluate, models, train, update
from srl_agent.models import load_model_and_tokenizer
from srl_agent.runlog import read_metrics

REPO = Path(__file__).resolve().parents[2]


def run_train(*args: str) -> int:
    return train.main(list(args))


def steps_of(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]


def test_bad_config_key_exits_non_zero_naming_it():
    proc = subprocess.run(
        [sys.executable, "-m", "srl_agent.train", "--task", "math", "trainer.nope=1"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "trainer.nope" in proc.stderr


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(config, capsys, tmp_path):
    """A run's config resolves as it is; a benchmark's (a `bench` section beside `train` and
    `evaluate`, as bench/bench_swe_learning.py reads it) section by section, each with the entry point
    the benchmark hands it to."""
    task = "swe" if "swe" in config.name else "math"
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    sections = (
        {"train": data} if "bench" not in data else {"train": data["train"], "evaluate": data["evaluate"]}
    )
    for section, body in sections.items():
        path = config if body is data else tmp_path / f"{section}.yaml"
        if path != config:
            path.write_text(yaml.safe_dump(body), encoding="utf-8")
        entry = train.main if section == "train" else evaluate.main
        assert entry(["--task", task, "--config", str(path), "--dry-run"]) == 0, section
        assert f"task: {task}" in capsys.readouterr().out


@pytest.mark.slow
def test_srl_reward_rises_and_every_parameter_changes(simple_data, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        run_train(
            "--task",
            "math",
            *TINY,
            f"data.source={simple_data}",
            f"run_dir={run_dir}",
            "trainer.steps=10",
            "trainer.batch_size=4",
            "grpo.group_size=16",
            "generation.max_new_tokens=16",
            "trainer.micro_batch_size=64",
            "optim.lr=5e-3",
            "trainer.val_every=0",
            "trainer.save_every=100",
        )
        == 0
    )
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["step"] > 0]
    assert [r["step"] for r in rows] == list(range(1, 11))
    early = sum(r["reward_mean"] for r in rows[:3]) / 3
    late = sum(r["reward_mean"] for r in rows[-3:]) / 3
    assert late > early + 0.1, (early, late)
    assert rows[-1]["format_error_rate"] < rows[0]["format_error_rate"]
    for key in (
        "reward_std",
        "zero_std_fraction",
        "kept_prompts",
        "sampled_prompts",
        "loss",
        "tokens",
        "seconds_generation",
        "seconds_reward",
        "seconds_training",
    ):
        assert key in rows[0]
    # every trainable parameter moved away from its initial value
    initial, _ = load_model_and_tokenizer("tiny-random", seed=0)
    trained = load_file(run_dir / "checkpoints" / "last" / "model.safetensors")
    unchanged = [
        name
        for name, p in initial.named_parameters()
        if p.requires_grad and torch.equal(p.detach(), trained[name])
    ]
    assert unchanged == []
    assert (run_dir / "curves.png").stat().st_size > 0
    assert (run_dir / "config.yaml").is_file()


@pytest.mark.slow
def test_sft_stage_learns_the_target_and_evaluate_reads_its_checkpoint(simple_data, tmp_path, capsys):
    run_dir = tmp_path / "sft"
    assert (
        run_train(
            "--task",
            "math",
            "--stage",
            "sft",
            *TINY,
            f"data.source={simple_data}",
            f"run_dir={run_dir}",
            "trainer.steps=40",
            "trainer.batch_size=8",
            "optim.lr=3e-3",
            "trainer.val_every=0",
            "trainer.validate_at_start=false",
            "generation.max_new_tokens=8",
        )
        == 0
    )
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert rows[-1]["loss"] < rows[0]["loss"] / 10
    capsys.readouterr()
    from srl_agent import evaluate

    assert (
        evaluate.main(
            [
                "--task",
                "math",
                "--checkpoint",
                str(run_dir / "checkpoints" / "last"),
                f"data.source={simple_data}",
                "prompt.system_prompt=Answer.",
                "prompt.prefill=<think>",
                "generation.max_new_tokens=8",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["examples"] == 2
    assert result["format_error_rate"] == 0.0  # SFT taught the format ...
    assert result["reward_mean"] > 0.5  # ... and the step


def test_rlvr_stage_starts_from_a_checkpoint(tmp_path):
    from trajectories.record import write_jsonl

    data = tmp_path / "data"
    write_jsonl([math_example(f"g{i}", 0, "x=5", answer="5") for i in range(4)], data / "train.jsonl")
    init = tmp_path / "init"
    assert (
        run_train(
            "--task",
            "math",
            "--stage",
            "sft",
            *TINY,
            f"data.source={data}",
            f"run_dir={init}",
            "trainer.steps=1",
            "trainer.validate_at_start=false",
        )
        == 0
    )
    run_dir = tmp_path / "rlvr"
    assert (
        run_train(
            "--task",
            "math",
            "--stage",
            "rlvr",
            *TINY,
            f"data.source={data}",
            f"run_dir={run_dir}",
            f"model.init_from={init / 'checkpoints' / 'last'}",
            "trainer.steps=1",
            "trainer.batch_size=2",
            "grpo.max_sampling_rounds=1",
            "generation.max_new_tokens=8",
        )
        == 0
    )
    row = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert row["filter"] == "dapo" and row["sampled_prompts"] == 2


@pytest.mark.slow
def test_srl_then_rlvr_trains_both_stages_in_one_folder_and_resumes(tmp_path, capsys):
    from trajectories.record import write_jsonl

    data = tmp_path / "data"  # two-step problems with final answers: steps for SRL, problems for RLVR
    write_jsonl([math_example(f"g{i}", i % 2, "x=5", answer="5") for i in range(8)], data / "train.jsonl")
    val = [math_example("v0", 0, "x=5", answer="5"), math_example("v0", 1, "x=5", answer="5")]
    write_jsonl(val, data / "validation.jsonl")
    run_dir = tmp_path / "both"
    argv = [
        "--task",
        "math",
        "--stage",
        "srl+rlvr",
        *TINY,
        f"data.source={data}",
        f"run_dir={run_dir}",
        "trainer.steps=2",
        "trainer.val_every=1",
        "trainer.batch_size=2",
        "grpo.max_sampling_rounds=1",
        "generation.max_new_tokens=8",
        "rlvr_overrides=[trainer.steps=1]",
    ]
    assert run_train(*argv) == 0
    srl, rlvr = run_dir / "srl", run_dir / "rlvr"
    assert steps_of(srl) == [0, 1, 2] and steps_of(rlvr) == [0, 1]
    best = json.loads((srl / "checkpoints" / "best" / "state.json").read_text())["step"]
    rlvr_config = (rlvr / "config.yaml").read_text()
    # RLVR starts from the SRL stage's best checkpoint, with the RLVR stage's own resolved settings
    assert f"init_from: {srl / 'checkpoints' / 'best'}" in rlvr_config
    assert "filter: dapo" in rlvr_config and "stop_at_step_end: false" in rlvr_config
    assert "filter: std" in (srl / "config.yaml").read_text()
    assert read_metrics(rlvr / "metrics.jsonl")[-1]["filter"] == "dapo"
    assert best in (0, 1, 2)
    # the same command again finds both stages done: no step is trained twice
    capsys.readouterr()
    assert run_train(*argv) == 0
    assert steps_of(srl) == [0, 1, 2] and steps_of(rlvr) == [0, 1]
    assert "resuming from" in capsys.readouterr().out


def test_swe_trains_on_step_examples_from_the_swesmith_sample(shared_data, tmp_path):
    run_dir = tmp_path / "swe"
    assert (
        run_train(
            "--task",
            "swe",
            *TINY,
            f"data.source={shared_data / 'swesmith' / 'ft_xml_example.jsonl'}",
            f"run_dir={run_dir}",
            "data.build.context_steps=1",
            "data.build.observation_max_chars=64",
            "data.build.validation_groups=1",
            "data.max_val_examples=1",
            "trainer.steps=1",
            "trainer.batch_size=2",
            "grpo.group_size=2",
            "grpo.filter=none",
            "generation.max_new_tokens=8",
            "trainer.validate_at_start=false",
        )
        == 0
    )
    row = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert row["step"] == 1 and row["kept_prompts"] == 2 and row["loss"] is not None
    built = (run_dir / "data" / "train.jsonl").read_text().splitlines()
    assert built and json.loads(built[0])["kind"] == "swe"
    assert "<function=" in json.loads(built[0])["target"]


@pytest.mark.slow
def test_killed_run_resumes_with_no_lost_or_repeated_steps(simple_data, tmp_path):
    command = [
        sys.executable,
        "-m",
        "srl_agent.train",
        "--task",
        "math",
        *TINY,
        f"data.source={simple_data}",
        "trainer.steps=5",
        "trainer.save_every=1",
        "trainer.batch_size=2",
        "grpo.group_size=4",
        "generation.max_new_tokens=12",
        "optim.lr=5e-3",
        "trainer.val_every=0",
        "grpo.filter=none",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference = tmp_path / "whole"
    subprocess.run(
        [*command, f"run_dir={reference}"], check=True, cwd=REPO, env=env, timeout=600, capture_output=True
    )

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [*command, f"run_dir={run_dir}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not ((run_dir / "checkpoints" / "last").is_dir() and max(steps_of(run_dir) or [0]) >= 2):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "the run did not reach step 2 in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(steps_of(run_dir))
    assert 2 <= killed_at < 5

    subprocess.run(
        [*command, f"run_dir={run_dir}"], check=True, cwd=REPO, env=env, timeout=600, capture_output=True
    )
    assert steps_of(run_dir) == [0, 1, 2, 3, 4, 5]
    # exact resumption: the same rollouts and rewards as the run that was never killed
    whole = {r["step"]: r for r in read_metrics(reference / "metrics.jsonl")}
    for row in read_metrics(run_dir / "metrics.jsonl")[1:]:
        assert row["reward_mean"] == pytest.approx(whole[row["step"]]["reward_mean"], abs=1e-9), row["step"]


def test_resuming_with_another_config_is_refused_naming_the_keys(tmp_path):
    from trajectories.config import ConfigError

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "last").mkdir(parents=True)
    args = ["--task", "math", *TINY, f"run_dir={run_dir}"]
    checkpoint.prepare_run_dir(train.parse_args(args)[1][0])  # writes config.yaml as a first run would
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        checkpoint.prepare_run_dir(train.parse_args([*args, "optim.lr=0.5"])[1][0])
    checkpoint.prepare_run_dir(train.parse_args([*args, "trainer.steps=99"])[1][0])  # extending a run is fine
    checkpoint.prepare_run_dir(train.parse_args([*args, "environment.pool_size=16"])[1][0])  # more at once


def test_ppo_epochs_kl_reference_bf16_and_cosine_schedule_run(simple_data, tmp_path):
    run_dir = tmp_path / "run"
    assert run_train(
        "--task", "math", *TINY, f"data.source={simple_data}", f"run_dir={run_dir}", "trainer.steps=2",
        "trainer.batch_size=2", "grpo.group_size=4", "grpo.filter=none", "generation.max_new_tokens=8",
        "grpo.ppo_epochs=2", "grpo.kl_coef=0.1", "model.dtype=bfloat16", "optim.schedule=cosine",
        "optim.warmup_steps=1", "trainer.validate_at_start=false", "trainer.micro_batch_size=3",
    ) == 0  # fmt: skip
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["kl"] > 0.0  # the policy moved away from the reference (its value: the test below)
    assert rows[0]["lr"] == pytest.approx(1e-5)  # after step 1: warmup done, cosine starts at the peak
    assert rows[1]["lr"] == pytest.approx(0.0, abs=1e-12)  # and ends at min_lr_ratio * lr


def test_gradient_checkpointing_gives_the_same_update(simple_data, tmp_path):
    def sft(name: str, *extra: str) -> Path:
        run_dir = tmp_path / name
        assert run_train(
            "--task", "math", "--stage", "sft", *TINY, f"data.source={simple_data}", f"run_dir={run_dir}",
            "trainer.steps=2", "trainer.batch_size=4", "trainer.micro_batch_size=2", "optim.lr=3e-3",
            "trainer.validate_at_start=false", "trainer.val_every=0", *extra,
        ) == 0  # fmt: skip
        return run_dir

    plain, recomputed = sft("plain"), sft("recomputed", "trainer.gradient_checkpointing=true")
    assert [r["loss"] for r in read_metrics(recomputed / "metrics.jsonl")] == pytest.approx(
        [r["loss"] for r in read_metrics(plain / "metrics.jsonl")], rel=1e-5
    )
    a = load_file(plain / "checkpoints" / "last" / "model.safetensors")
    b = load_file(recomputed / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    model, _ = models.load_policy(
        train.TrainConfig().model.model_copy(update={"name": "tiny-random"}), 0, None, True
    )
    assert model.is_gradient_checkpointing and model.training


def test_lr_schedules():
    model = torch.nn.Linear(2, 2)
    cfg = train.TrainConfig().optim.model_copy(update={"lr": 1.0, "schedule": "cosine", "warmup_steps": 2})
    optimizer, scheduler = update.make_optimizer(model, cfg, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # transformers' schedules: linear warmup from 0 (step/warmup), then cosine from the peak
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert lrs[3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 4)))
    floor = cfg.model_copy(update={"min_lr_ratio": 0.1})
    optimizer, scheduler = update.make_optimizer(model, floor, total_steps=6)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # the cosine ends at its floor
    constant = train.TrainConfig().optim.model_copy(update={"lr": 0.3})
    optimizer, scheduler = update.make_optimizer(model, constant, total_steps=6)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.3)


def test_sft_cuts_micro_batches_by_tokens_too(simple_data, tmp_path):
    """`trainer.micro_batch_tokens` caps SFT's micro-batches as it caps GRPO's (one update loop): with
    a cap below any one sequence, each goes alone, and the update is the uncapped one."""
    rows_per_pass: list[int] = []

    def record(module, args):  # the token embedding of every training forward: its batch [N, width]
        if isinstance(module, torch.nn.Embedding) and module.training:
            rows_per_pass.append(args[0].shape[0])

    def sft(name: str, *extra: str) -> list[dict]:
        run_dir = tmp_path / name
        assert run_train(
            "--task", "math", "--stage", "sft", *TINY, f"data.source={simple_data}", f"run_dir={run_dir}",
            "trainer.steps=1", "trainer.batch_size=4", "trainer.micro_batch_size=4", "optim.lr=3e-3",
            "trainer.validate_at_start=false", "trainer.val_every=0", "data.max_val_examples=0", *extra,
        ) == 0  # fmt: skip
        return read_metrics(run_dir / "metrics.jsonl")

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        capped = sft("capped", "trainer.micro_batch_tokens=1")
        assert rows_per_pass == [1, 1, 1, 1]
        rows_per_pass.clear()
        whole = sft("whole", "trainer.micro_batch_tokens=null")
        assert rows_per_pass == [4]
    finally:
        hook.remove()
    assert capped[0]["loss"] == pytest.approx(whole[0]["loss"], rel=1e-5)
    assert capped[0]["tokens"] == whole[0]["tokens"] > 0


def test_the_kl_metric_is_the_mean_k3_estimate_to_the_reference():
    """Against a reference equal to the policy the KL is 0; once the policy moved it is the token mean
    of k3 between the moved policy's log-probs and the reference's, computed here by hand."""
    from srl_agent.config import TrainConfig
    from srl_agent.grpo import kl_k3
    from srl_agent.logprobs import completion_logprobs, pack
    from srl_agent.tasks import resolve

    policy, _ = load_model_and_tokenizer("tiny-random", dtype="float32", device="cpu", seed=0)
    reference, _ = load_model_and_tokenizer("tiny-random", dtype="float32", device="cpu", seed=0)
    reference.eval().requires_grad_(False)
    cfg = resolve(TrainConfig(grpo={"kl_coef": 0.1}))
    sequences = [
        update.Sequence([1, 40, 41], [42, 43, 44], 1.0),
        update.Sequence([1, 50], [51, 52, 53, 54], -1.0),
    ]
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    assert update.policy_update(cfg, policy, reference, optimizer, sequences)["kl"] == 0.0
    batch = pack([s.prompt for s in sequences], [s.completion for s in sequences], 0, "cpu")
    with torch.no_grad():  # the moved policy, as the next update sees it
        k3 = kl_k3(completion_logprobs(policy, batch), completion_logprobs(reference, batch))
    expected = float((k3 * batch["mask"]).sum() / batch["mask"].sum())
    assert expected > 1e-6
    assert update.policy_update(cfg, policy, reference, optimizer, sequences)["kl"] == pytest.approx(
        expected, rel=1e-4
    )


def test_a_stage_that_never_samples_gets_no_engine():
    """SFT without validation examples samples nothing: vLLM there would only hold a second copy of the
    weights and sync them every step, so the stage takes HF's generator; a stage that samples, or
    validates, keeps the configured backend."""
    from srl_agent.config import TrainConfig
    from srl_agent.tasks import task_spec

    cfg = TrainConfig.model_validate({"generation": {"backend": "vllm"}})
    sft, srl = task_spec("swe").stage("sft"), task_spec("swe").stage("srl")
    assert train.sampling_backend(cfg, sft, []).backend == "hf"
    assert train.sampling_backend(cfg, sft, [math_example("g", 0, "x")]).backend == "vllm"
    assert train.sampling_backend(cfg, srl, []).backend == "vllm"
    assert train.sampling_backend(cfg, sft, []).max_new_tokens == cfg.generation.max_new_tokens
