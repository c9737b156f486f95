"""Step examples: context windows, observation caps, math context and hints, which steps are
predicted, the group split, the config through the CLI, and Hugging Face sources via `datasets`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from trajectories.actions import render_action
from trajectories.build import (
    TRUNCATION_MARKER,
    BuildConfig,
    build,
    math_examples,
    next_swe_example,
    predicted_steps,
    split_hash,
    swe_examples,
    truncate_middle,
)
from trajectories.config import resolve_config
from trajectories.math_steps import MathProblem, bundled_math_path
from trajectories.record import Step, ToolCall, Trajectory, read_step_examples, write_jsonl
from trajectories.sources import read_source


def _traj(n: int, instance_id: str = "o__r-1", obs_len: int = 10) -> Trajectory:
    steps = [
        Step(f"t{i}", ToolCall("bash", {"command": f"echo {i}"}), f"{i}" * obs_len) for i in range(n - 1)
    ]
    steps.append(Step("done", ToolCall("submit", {}), "patch"))
    return Trajectory(task="Fix it", steps=steps, instance_id=instance_id)


def test_swe_context_window_of_k_pairs():
    examples = swe_examples(_traj(5), "g", BuildConfig())
    assert [e.step_index for e in examples] == [0, 1, 2, 3, 4]
    ex = examples[3]
    assert ex.target == "<function=bash>\n<parameter=command>echo 3</parameter>\n</function>"
    assert [c.action for c in ex.context] == [
        render_action(ToolCall("bash", {"command": f"echo {i}"})) for i in (1, 2)
    ]
    assert [c.observation for c in ex.context] == ["1" * 10, "2" * 10]
    assert (ex.omitted_steps, ex.num_steps, ex.task, ex.kind) == (1, 5, "Fix it", "swe")
    assert examples[0].context == [] and examples[4].target == "<function=submit>\n</function>"
    everything = swe_examples(_traj(5), "g", BuildConfig(context_steps="all"))
    assert len(everything[4].context) == 4 and everything[4].omitted_steps == 0
    assert len(swe_examples(_traj(5), "g", BuildConfig(context_steps=0))[4].context) == 0


@pytest.mark.parametrize("window", [0, 2, "all"])
def test_the_next_step_example_of_a_prefix_is_the_built_example_of_that_step(window):
    """What an agent is prompted with after k steps is the expert example for step k (same context,
    same window and caps), but for the target it cannot know."""
    full = _traj(5, obs_len=300)
    cfg = BuildConfig(context_steps=window, observation_max_chars=100)
    built = swe_examples(full, "g", cfg)
    for k in range(5):
        prefix = full.model_copy(update={"steps": full.steps[:k]})
        ahead = next_swe_example(prefix, "g", cfg)
        assert (ahead.context, ahead.omitted_steps) == (built[k].context, built[k].omitted_steps)
        assert ahead.task == built[k].task == "Fix it"
        assert (ahead.step_index, ahead.num_steps, ahead.target) == (k, k + 1, "")
        assert ahead.meta == {"source_format": "srl_jsonl", "instance_id": "o__r-1"}


def test_observations_are_capped_with_a_visible_marker():
    text = "a" * 500 + "b" * 500
    cut = truncate_middle(text, 200)
    assert len(cut) <= 200 and cut.startswith("aaa") and cut.endswith("bbb")
    assert "characters truncated ...]" in cut
    dropped = int(cut.split("[... ")[1].split(" characters")[0])
    assert (
        len(cut) == len(TRUNCATION_MARKER.format(n=dropped)) + 1000 - dropped
    )  # the marker counts what is gone
    assert truncate_middle("short", 200) == "short" and truncate_middle(text, None) == text
    ex = swe_examples(_traj(3, obs_len=5000), "g", BuildConfig(observation_max_chars=300))[2]
    assert all(len(c.observation) <= 300 for c in ex.context)


def test_predict_steps_modes():
    assert list(predicted_steps(4, "all")) == [0, 1, 2, 3]
    assert list(predicted_steps(4, "skip_first")) == [1, 2, 3]
    assert list(predicted_steps(4, "skip_last")) == [0, 1, 2]
    assert list(predicted_steps(1, "skip_last")) == []


def test_math_context_preamble_hint_and_answer():
    problem = MathProblem(
        "What is 2+3?",
        ["1. **Add** 2 + 3 = 5.", "2. **Answer** \\boxed{5}"],
        "5",
        "p1",
        "s1k",
        "numbered",
        titles=["Add", "Answer"],
        preamble="Add them.",
    )
    plain = math_examples(problem, "p1", BuildConfig())
    assert [e.target for e in plain] == problem.steps
    assert [c.action for c in plain[1].context] == ["Add them.", "1. **Add** 2 + 3 = 5."]
    assert plain[1].hint is None and plain[1].answer == "5" and plain[1].kind == "math"
    hinted = math_examples(problem, "p1", BuildConfig(next_title_hint=True))
    assert [e.hint for e in hinted] == ["Add", "Answer"]
    assert [e.step_index for e in math_examples(problem, "p1", BuildConfig(predict_steps="skip_first"))] == [
        1
    ]


def _corpus(tmp_path, n=40):
    trajs = [_traj(3 + i % 4, instance_id=f"o__r-{i % 20}") for i in range(n)]  # two trajectories per task
    path = tmp_path / "corpus.jsonl"
    write_jsonl(trajs, path)
    return path


def _split(out):
    return (list(read_step_examples(out / "train.jsonl")), list(read_step_examples(out / "validation.jsonl")))


def test_split_by_whole_task_deterministic_from_the_seed(tmp_path):
    src = _corpus(tmp_path)
    cfg = BuildConfig(validation_fraction=0.3, seed=1)
    report = build(src, "swe", tmp_path / "a", cfg)
    build(src, "swe", tmp_path / "b", cfg)
    train, val = _split(tmp_path / "a")
    assert val and train
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    tasks = lambda xs: {e.meta["instance_id"] for e in xs}
    assert not tasks(train) & tasks(val)  # both trajectories of a task land on the same side
    assert not {e.group_id for e in train} & {e.group_id for e in val}
    assert {e.meta["instance_id"] for e in val} == {
        f"o__r-{i}" for i in range(20) if split_hash(1, f"o__r-{i}") < 0.3
    }
    assert report.examples == {"train": len(train), "validation": len(val)}
    assert len({e.group_id for e in train + val}) == 40  # repeated instance ids get distinct group ids
    build(src, "swe", tmp_path / "c", BuildConfig(validation_fraction=0.3, seed=2))
    assert _split(tmp_path / "c")[1] != val


def test_exact_number_of_validation_groups_streams(tmp_path):
    src = _corpus(tmp_path)
    report = build(src, "swe", tmp_path / "o", BuildConfig(validation_groups=3, seed=5))
    train, val = _split(tmp_path / "o")
    held = {e.meta["instance_id"] for e in val}
    ranked = sorted({f"o__r-{i}" for i in range(20)}, key=lambda k: split_hash(5, k))
    assert held == set(ranked[:3])
    assert report.groups == {"train": 34, "validation": 6}
    assert not held & {e.meta["instance_id"] for e in train}
    assert build(src, "swe", tmp_path / "z", BuildConfig(validation_groups=0)).examples["validation"] == 0


def test_build_lists_items_of_the_wrong_kind_and_unresolved(tmp_path):
    src = _corpus(tmp_path, n=2)
    report = build(src, "math", tmp_path / "o", BuildConfig())
    assert report.examples == {"train": 0, "validation": 0}
    assert [s.reason for s in report.skipped] == ["a SWE trajectory (srl_jsonl), not a math problem"] * 2
    report = build(src, "swe", tmp_path / "p", BuildConfig(only_resolved=True))
    assert report.skipped[0].reason == "resolved is None and only_resolved is on"


def test_bundled_math_builds_with_hints(tmp_path):
    report = build(
        bundled_math_path(), "math", tmp_path / "m", BuildConfig(next_title_hint=True, validation_groups=4)
    )
    train, val = _split(tmp_path / "m")
    assert report.groups["validation"] == 4 and report.skipped == []
    assert all(
        e.hint and e.answer and e.target.startswith(f"{e.step_index + 1}. **{e.hint}**") for e in train + val
    )


# ---------------------------------------------------------------------------------------------------
# the command line and its config


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "trajectories", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_cli_config_file_overrides_and_dry_run(tmp_path):
    cfg_file = tmp_path / "build.yaml"
    cfg_file.write_text("context_steps: all\nobservation_max_chars: 100\nseed: 7\n", encoding="utf-8")
    proc = _cli(
        "build",
        "anything",
        "--task",
        "swe",
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(cfg_file),
        "--dry-run",
        "seed=9",
    )
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)  # the resolved config, each field explained in a comment
    assert (printed["context_steps"], printed["observation_max_chars"], printed["seed"]) == ("all", 100, 9)
    assert "# SWE: earlier (action, observation) pairs" in proc.stdout
    assert not (tmp_path / "o").exists()
    src = _corpus(tmp_path, n=4)
    proc = _cli("build", str(src), "--task", "swe", "--out", str(tmp_path / "o"), "--config", str(cfg_file))
    assert proc.returncode == 0, proc.stderr
    saved = resolve_config(BuildConfig, tmp_path / "o" / "config.yaml")
    assert saved.context_steps == "all" and saved.seed == 7
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert (
        report["read"] == 4 and report["skipped"] == [] and sum(report["examples"].values()) == 3 + 4 + 5 + 6
    )
    proc = _cli("build", str(src), "--task", "math", "--out", str(tmp_path / "m"))
    assert proc.returncode == 1 and "no math step examples" in proc.stderr


# ---------------------------------------------------------------------------------------------------
# Hugging Face sources: the same `datasets` code path as a hub id, on local files (no hub here)


@pytest.fixture
def parquet_dataset(tmp_path, shared_data):
    datasets = pytest.importorskip("datasets")
    rows = [
        json.loads(line) for line in (shared_data / "swesmith/ft_xml_example.jsonl").read_text().splitlines()
    ]
    # As on the hub: `messages` as a JSON string, plus `resolved` and `traj_id` columns.
    table = [
        {
            "instance_id": r["instance_id"],
            "messages": json.dumps(r["messages"]),
            "resolved": i != 1,
            "traj_id": f"{r['instance_id']}.abcd123{i}",
        }
        for i, r in enumerate(rows)
    ]
    folder = tmp_path / "swesmith-like"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(table).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def test_hf_dataset_source_through_datasets(parquet_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    via_hub_path = read_source(f"hf:{parquet_dataset}", hf_split="train")
    assert via_hub_path.skipped == [] and [len(t.steps) for t in via_hub_path.items] == [37, 44, 22]
    assert via_hub_path.items[0].meta["position"] == f"{parquet_dataset}[train]#0"
    assert via_hub_path.items[1].resolved is False and via_hub_path.items[0].meta["traj_id"].endswith(
        "abcd1230"
    )
    parquet_file = next(parquet_dataset.rglob("*.parquet"))
    direct = read_source(parquet_file, streaming=False)
    assert [t.instance_id for t in direct.items] == [t.instance_id for t in via_hub_path.items]
    report = build(f"hf:{parquet_dataset}", "swe", tmp_path / "o", BuildConfig(only_resolved=True, limit=3))
    assert report.groups["train"] + report.groups["validation"] == 2
    assert report.skipped[0].reason == "resolved is False and only_resolved is on"
    assert report.skipped[0].record == f"{parquet_dataset}[train]#1"


def test_group_ids_are_unique_and_bad_lines_listed(tmp_path):
    src = _corpus(tmp_path)
    # Two trajectories with neither traj_id nor instance_id and the same task.
    write_jsonl([_traj(3, instance_id=None), _traj(4, instance_id=None)], tmp_path / "anon.jsonl")
    both = tmp_path / "both.jsonl"
    both.write_bytes(src.read_bytes() + (tmp_path / "anon.jsonl").read_bytes() + b"{oops\n")
    report = build(both, "swe", tmp_path / "o", BuildConfig(validation_groups=4))
    ids = {e.group_id for split in _split(tmp_path / "o") for e in split}
    assert {i for i in ids if i.startswith("sha1:")} == {
        "sha1:" + _sha("Fix it"),
        "sha1:" + _sha("Fix it") + "@2",
    }
    assert len(ids) == 42
    assert report.skipped[0].record.endswith("both.jsonl:43") and "not valid JSON" in report.skipped[0].reason


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:12]


def test_step_example_dict_is_the_header_then_every_field_in_order():
    ex = swe_examples(_traj(4), "g", BuildConfig())[3]
    ex.meta["nested"] = {"a": [1]}
    data = ex.to_dict()
    assert list(data) == [
        "format_version", "record", "kind", "group_id", "step_index", "num_steps", "task", "context",
        "target", "omitted_steps", "hint", "answer", "meta",
    ]  # fmt: skip
    assert data["context"] == [{"action": c.action, "observation": c.observation} for c in ex.context]
    assert data["meta"]["nested"] == {"a": [1]} and data["meta"]["nested"] is not ex.meta["nested"]


def test_config_rejects_a_negative_window():
    from trajectories.config import ConfigError

    with pytest.raises(ConfigError, match="context_steps"):
        resolve_config(BuildConfig, None, ["context_steps=-1"])
    assert resolve_config(BuildConfig, None, ["context_steps=all"]).context_steps == "all"
    assert resolve_config(BuildConfig, None, ["context_steps=3"]).context_steps == 3


def test_shared_string_encoding_gives_the_same_lines():
    from trajectories.record import StepExample, step_example_lines, to_json_line

    weird = 'quote " backslash \\ tab \t newline \n nul \x00 é 漢字 \u2028 emoji 😀'
    swe = swe_examples(_traj(4, obs_len=3), 'g"1', BuildConfig(context_steps="all"))
    swe[0].task = swe[1].task = weird
    swe[2].meta["nested"] = {"a": [1, None, 2.5], "b": True}
    problem = MathProblem(
        weird, ["1. **A** x", "2. **B** y"], None, "p", "s1k", "numbered", ["A", "B"], "pre"
    )
    math = math_examples(problem, "p", BuildConfig(next_title_hint=True))
    math.append(StepExample("math", "q", 0, 1, "t", [], "x", hint=None, answer="5", meta={}))
    examples = swe + math
    assert step_example_lines(examples) == [to_json_line(e).encode() for e in examples]
