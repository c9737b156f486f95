"""The SWE learning benchmark's plumbing (bench/bench_swe_learning.py) at the smallest size: tasks made
from two copies of the factory fixture (one trains, one is the unseen repository), the tiny random model,
two arms (base, and SFT for one step), each trained, evaluated as an agent on both held-out sets and by
step similarity, then tabled. What it learns is not checked here (the benchmark itself measures that)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from environments.config import EnvConfig
from environments.factory.make_tasks import MakeTasksConfig, make_tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "environments" / "fixtures" / "factory_repo"


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two repositories' factory folders under one folder: `calctrain` (train and held-out splits) and
    `calcnew` (the unseen one), two tasks each."""
    root = tmp_path_factory.mktemp("bench-swe")
    for name in ("calctrain", "calcnew"):
        source = root / "sources" / name
        shutil.copytree(FIXTURE, source)
        cfg = MakeTasksConfig(source=str(source), out=str(root / "tasks" / name), max_tasks=2, held_out=0.5)
        assert make_tasks(cfg, EnvConfig(pool_size=1), progress=False)["tasks"] == 2
    return root / "tasks"


def bench_config(tasks: Path, steps: int = 2) -> dict:
    small = {"data": {"build": {"context_steps": 1, "observation_max_chars": 300}},
             "generation": {"max_new_tokens": 8}, "agent": {"max_steps": 2},
             "environment": {"pool_size": 1}, "grading": {"grader": "fast"}}  # fmt: skip
    return {
        "bench": {
            "tasks": str(tasks),
            "train_repos": ["calctrain"],
            "unseen_repo": "calcnew",
            "kinds": [],
            "arms": ["base", "sft"],
            "steps": steps,
            "batch": 1,
            "step_examples": 2,
        },
        "train": {
            **small,
            "model": {"name": "tiny-random"},
            "data": {"build": {**small["data"]["build"], "validation_groups": 0}},
            "trainer": {"progress": False, "val_every": 0},
        },
        "evaluate": small,
    }


def run_bench(config: dict, tmp_path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"bench-{len(list(tmp_path.glob('bench-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, str(REPO / "bench" / "bench_swe_learning.py"), "--config", str(path),
               "--out", str(out), "--threads", "1", *extra]  # fmt: skip
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500, check=False)


@pytest.fixture(scope="module")
def two_arms(factory: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The benchmark run once, base and SFT (one step): (its --out folder, the folder of its config)."""
    configs = tmp_path_factory.mktemp("bench-configs")
    out = configs / "out"
    done = run_bench(bench_config(factory), configs, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, configs


def test_two_arms_train_evaluate_on_both_held_out_sets_and_table(factory, two_arms):
    out, tmp_path = two_arms
    split = json.loads((out / "data" / "split.json").read_text())
    assert len(split["train"]) == 1 and len(split["seen"]) == 1 and len(split["unseen"]) == 2
    assert set(split["train"]).isdisjoint(split["seen"]) and all(
        i.startswith("calcnew") for i in split["unseen"]
    )
    sft = json.loads((out / "sft" / "arm.json").read_text())
    assert sft["stages"]["sft"]["steps"] == 2 and sft["stages"]["sft"]["trained_tokens"] > 0
    assert sft["model"] == str(out / "sft" / "sft" / "checkpoints" / "last")
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["arm"], r["set"]): r for r in summary["rows"]}
    assert set(rows) == {(a, s) for a in ("base", "sft") for s in ("seen", "unseen")}
    for (arm, name), row in rows.items():
        report = json.loads((out / arm / f"eval-{name}" / "report.json").read_text())
        assert report["total"] == row["tasks"] == len(split[name]) and row["step_similarity"] is not None
        assert sum(report["exit_statuses"].values()) == row["tasks"]  # every task ran an episode
        assert row["behaviour"]["episodes"] == row["tasks"] and 0 <= row["behaviour"]["edited"] <= 1
        unchanged = row["behaviour"]["unchanged_replace_share"]
        assert row["behaviour"]["replaces_per_episode"] >= 0 and (unchanged is None or 0 <= unchanged <= 1)
        at_bug = row["behaviour"]["at_bug_replace_share"]
        assert at_bug is None or 0 <= at_bug <= 1
    assert "diff_ci95" in rows[("sft", "seen")] and "diff_ci95" not in rows[("base", "seen")]
    assert (out / "summary.png").stat().st_size > 0 and "| sft | unseen |" in (out / "summary.md").read_text()

    again = run_bench(bench_config(factory), tmp_path, out)  # resumes: nothing is trained or run again
    assert again.returncode == 0 and "python -m srl_agent" not in again.stdout, again.stdout[-2000:]

    other = run_bench(bench_config(factory, steps=4), tmp_path, out, "--report")
    assert other.returncode != 0 and "other settings" in other.stderr and "steps" in other.stderr

    # which engine samples the training rollouts is a speed choice, not a setting of the results
    engine = bench_config(factory)
    engine["train"] = {**engine["train"], "generation": {**engine["train"]["generation"], "backend": "vllm"}}
    assert run_bench(engine, tmp_path, out, "--report").returncode == 0


def test_the_arms_checkpoints_through_other_scaffolds(two_arms, tmp_path):
    """bench_scaffolds.py on the benchmark's held-out set (a): the agent scaffold's row is the
    benchmark's own evaluation, the oracle scaffold runs each arm's checkpoint (loaded in the evaluation:
    `srl_agent.serve` refuses `tiny-random`, which is no checkpoint); a rerun runs nothing."""
    out, _ = two_arms
    command = [sys.executable, str(REPO / "bench" / "bench_scaffolds.py"), "--bench", str(out),
               "--arms", "base,sft", "--scaffolds", "agent,oracle", "--out", str(tmp_path / "s"),
               "--prompted", "local", "--threads", "1"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    rows = {(r["arm"], r["scaffold"]): r for r in summary["rows"]}
    assert set(rows) == {(a, s) for a in ("base", "sft") for s in ("agent", "oracle")}
    seen = json.loads((out / "data" / "split.json").read_text())["seen"]
    sft = json.loads((out / "sft" / "arm.json").read_text())
    assert rows[("sft", "agent")]["statuses"] == {
        sft["eval"]["seen"]["report"]["instances"].get(i, "missing"): 1 for i in seen
    }
    oracle = json.loads((tmp_path / "s" / "sft" / "oracle" / "report.json").read_text())
    assert oracle["scaffold"] == "oracle" and oracle["model"] == sft["model"] and oracle["total"] == len(seen)
    assert rows[("base", "oracle")]["model"] == "tiny-random" and "| sft | oracle |" in done.stdout
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0 and "python -m srl_agent" not in again.stdout
    served = [*command[: command.index("--prompted")], "--prompted", "served", "--report"]
    other = subprocess.run(served, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert other.returncode != 0 and "other settings" in other.stderr and "prompted" in other.stderr


def test_train_single_read_leaves_out_of_training_the_experts_that_read_on(factory, tmp_path):
    """An expert that reads past its first 50 lines leaves training with `bench.train_single_read`
    (here the only training task, so the split is refused as empty), and stays without it."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_swe_learning import BENCH_DEFAULTS, prepare_data, reads_on

    tasks = tmp_path / "tasks"
    shutil.copytree(factory, tasks, symlinks=True)
    config = {**BENCH_DEFAULTS, **bench_config(tasks)["bench"]}
    train_id = prepare_data(config, tmp_path / "all")["train"][0]
    traj = tasks / "calctrain" / "trajectories" / f"{train_id}.traj"
    assert not reads_on(traj)
    document = json.loads(traj.read_text())
    read = document["trajectory"][1]["action"]
    document["trajectory"].insert(2, {**document["trajectory"][1], "action": f"{read} | sed -n '51,100p'"})
    traj.write_text(json.dumps(document))
    assert reads_on(traj)
    kept = prepare_data({**config, "train_single_read": False}, tmp_path / "kept")
    assert train_id in kept["train"]
    with pytest.raises(Exception, match="no task of the kinds .* in the train set"):
        prepare_data({**config, "train_single_read": True}, tmp_path / "left-out")


def test_behaviour_counts_the_edits_at_the_bug_and_those_that_change_nothing(tmp_path):
    """The behaviour table's shares, from saved episodes and the tasks' bug patches: an edit is at the
    bug when its old text holds the first line the bug wrote (whatever the indentation)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_swe_learning import behaviour, gold

    patch = (
        "diff --git a/pkg/m.py b/pkg/m.py\n--- a/pkg/m.py\n+++ b/pkg/m.py\n@@ -1,2 +1,2 @@\n"
        " def f(a, b):\n-    return a + b\n+    return a - b\n"
    )
    repos = tmp_path / "data" / "repos" / "pkg"
    repos.mkdir(parents=True)
    (repos / "instances.jsonl").write_text(json.dumps({"instance_id": "t1", "patch": patch}) + "\n")
    files, bug_lines = gold(tmp_path)
    assert files == {"t1": {"pkg/m.py"}} and bug_lines == {"t1": "return a - b"}

    def replace(old: str, new: str, observation: str = "edited") -> dict:
        arguments = {"command": "str_replace", "path": "/testbed/pkg/m.py", "old_str": old, "new_str": new}
        return {"action": {"name": "str_replace_editor", "arguments": arguments}, "observation": observation}

    steps = [
        {"action": {"name": "bash", "arguments": {"command": "grep -n f pkg/m.py"}}, "observation": ""},
        replace("  return a - b", "  return a + b", "old_str `x` did not appear verbatim in pkg/m.py"),
        replace("    return a - b", "    return a + b"),
        replace("def f(a, b):", "def f(a, b):"),
        {"action": {"name": "submit", "arguments": {}}, "observation": ""},
    ]
    episodes = tmp_path / "eval" / "trajectories"
    episodes.mkdir(parents=True)
    episode = {"instance_id": "t1", "steps": steps, "final_patch": patch.replace("a - b", "a + b")}
    (episodes / "t1.jsonl").write_text(json.dumps(episode) + "\n")
    seen = behaviour(tmp_path / "eval", files, bug_lines)
    assert seen["replaces_per_episode"] == 3 and seen["refused_edit_rate"] == 1 / 5
    assert seen["at_bug_replace_share"] == 2 / 3 and seen["unchanged_replace_share"] == 1 / 3
    assert seen["edited"] == 1 and seen["edited_bug_file"] == 1 and seen["first_calls"] == {"bash grep": 1}


def test_rlvr_stages_sample_at_most_the_turns_srl_samples():
    """An RLVR step samples episodes of up to `turns` turns where SRL samples one per rollout: RLVR
    stages take 1/turns of the steps, the two-stage arms half the budget each."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_swe_learning import stages

    assert stages("base", 96, 8) == []
    assert stages("srl", 96, 8) == [("srl", 96)] and stages("rlvr", 96, 8) == [("rlvr", 12)]
    assert stages("sft+rlvr", 96, 8) == [("sft", 48), ("rlvr", 6)]
    assert stages("sft+srl", 96, 8) == [("sft", 48), ("srl", 48)]
    assert stages("srl+rlvr", 2, 8) == [("srl", 1), ("rlvr", 1)]  # at least one step


def test_an_arm_that_took_no_update_is_evaluated_as_base(tmp_path, monkeypatch):
    """Every step skipped: the arm's weights are base's, and it takes base's evaluation (marked so)
    instead of running it again; one update and it runs its own."""
    sys.path.insert(0, str(REPO / "bench"))
    import bench_swe_learning as bench

    ran: list[list[str]] = []
    monkeypatch.setattr(bench, "run_json", lambda command: ran.append(command) or {"instances": {}})
    base_eval = {name: {"report": {"instances": {"t1": "unresolved"}}, "steps": {}, "seconds": 9.0}
                 for name in bench.SETS}  # fmt: skip
    config = {"steps": 2, "seed": 0, "step_examples": 1}
    data = {"seen": ["t1"], "unseen": ["t1"]}

    def run(out: Path, skipped: int) -> dict:
        (out / "base").mkdir(parents=True)
        (out / "base" / "arm.json").write_text(json.dumps({"stages": {}, "eval": base_eval}))
        (out / "srl").mkdir()
        stage = {"srl": {"seconds": 1.0, "steps": 2, "skipped_updates": skipped, "generated_tokens": 5,
                         "trained_tokens": 0, "curve": []}}  # fmt: skip
        (out / "srl" / "arm.json").write_text(json.dumps({"stages": stage}))
        paths = {"train": out / "train.yaml", "evaluate": out / "evaluate.yaml"}
        bench.run_arm("srl", "tiny-random", config, data, paths, out, 8)
        return json.loads((out / "srl" / "arm.json").read_text())

    unchanged = run(tmp_path / "skipped", skipped=2)
    assert unchanged["eval_of"] == "base" and not ran
    assert all(unchanged["eval"][n]["report"] == base_eval[n]["report"] for n in bench.SETS)
    assert all(unchanged["eval"][n]["seconds"] == 0.0 for n in bench.SETS)
    updated = run(tmp_path / "updated", skipped=1)
    assert "eval_of" not in updated and len(ran) == 2 * len(bench.SETS)  # agent and step scores per set


def test_a_stage_another_arm_trained_from_the_same_start_is_taken_not_retrained(tmp_path, monkeypatch):
    """sft+srl's SFT stage is sft+rlvr's (48 seeded steps from base): its SRL stage starts from that
    checkpoint and nothing retrains it; the SFT arm's 96-step stage is not the same run."""
    sys.path.insert(0, str(REPO / "bench"))
    import bench_swe_learning as bench

    trained: list[list[str]] = []
    monkeypatch.setattr(bench, "run", trained.append)
    monkeypatch.setattr(bench, "run_json", lambda command: {"instances": {}})
    stats = {"steps": 1, "skipped_updates": 0, "generated_tokens": 0, "trained_tokens": 3, "curve": []}
    monkeypatch.setattr(bench, "training_stats", lambda run_dir: stats)
    for arm, steps in (("sft", 4), ("sft+rlvr", 2)):
        (tmp_path / arm / "sft" / "checkpoints" / "last").mkdir(parents=True)
        record = {"stages": {"sft": {**stats, "steps": steps, "seconds": 7.0}}}
        (tmp_path / arm / "arm.json").write_text(json.dumps(record))
    paths = {"train": tmp_path / "train.yaml", "evaluate": tmp_path / "evaluate.yaml"}
    data = {"seen": ["t1"], "unseen": ["t1"], "train": ["t0"]}
    bench.run_arm("sft+srl", "tiny-random", {"steps": 4, "batch": 1, "seed": 0, "step_examples": 1}, data,
                  paths, tmp_path, 2)  # fmt: skip

    assert [c[c.index("--stage") + 1] for c in trained] == ["srl"]
    assert f"model.init_from={tmp_path / 'sft+rlvr' / 'sft' / 'checkpoints' / 'last'}" in trained[0]
    record = json.loads((tmp_path / "sft+srl" / "arm.json").read_text())
    assert record["stages"]["sft"]["trained_in"] == "sft+rlvr" and record["stages"]["sft"]["steps"] == 2
    assert record["model"] == str(tmp_path / "sft+srl" / "srl" / "checkpoints" / "last")


def test_a_resumed_stage_counts_the_steps_its_killed_run_kept(tmp_path):
    """The steps up to the last checkpoint count; those logged after it are run again, so do not."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_swe_learning import step_seconds

    assert step_seconds(tmp_path) == 0
    rows = [{"step": 0, "seconds_total": 100.0}] + [{"step": k, "seconds_total": 10.0 * k} for k in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    (tmp_path / "checkpoints" / "last" / "state.json").write_text(json.dumps({"step": 2}))
    assert step_seconds(tmp_path) == 30.0
