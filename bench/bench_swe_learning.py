"""Does training make the agent resolve more held-out SWE tasks? Base, SFT, SRL, RLVR and the two-stage
arms on generated tasks, at CPU scale.

    python bench/bench_swe_learning.py [--config configs/swe_learning_cpu.yaml] [--arms sft,srl] [--report]

1. Data (`bench` section of the config): the task factory's folders under `bench.tasks`, one per
   repository (`python -m environments make-tasks`). Training: the train split of each of
   `bench.train_repos`; held-out set (a) `seen`: their held-out split (unseen tasks of the training
   repositories); held-out set (b) `unseen`: every task of `bench.unseen_repo`, which no arm trains on.
   Only tasks of `bench.kinds` (bug kinds) are kept, in all three; with `bench.train_single_read`,
   training leaves out the tasks whose expert reads past its first 50 lines (`reads_on`). The split, with its counts by kind,
   is written once to `OUT/data/split.json`; `OUT/data/repos` links the factory folders (one task
   source), `OUT/data/trajectories/{train,seen,unseen}` link the experts' trajectories.
2. Arms from the same base (`train.model.name`), at a matched budget: `bench.steps` optimizer steps of
   `bench.batch` examples each (expert steps for SFT, step prompts of G rollouts for SRL), and RLVR the
   same number of sampled policy turns at most: an RLVR step's `bench.batch` tasks of G agent episodes
   (rewarded by the tests) sample up to `train.agent.max_steps` turns each where an SRL rollout samples
   one, so an RLVR stage takes `bench.steps / train.agent.max_steps` steps. The two-stage arms
   (`sft+srl`, `srl+rlvr`, `sft+rlvr`) spend half the budget on each stage, the second starting from
   the first's last checkpoint. `sft+srl` is not one of the paper's arms: the paper starts SRL from an instruct coder
   that already writes tool calls, and at 135M an SFT stage teaches the format SRL's reward needs.
   SFT and SRL read the train split's expert steps; RLVR acts on the train split's tasks. Every command is `python -m
   srl_agent.train --task swe` with the `train` section as its config (`OUT/configs/train.yaml`).
3. Each arm's final checkpoint (the base model for `base`, and for an arm whose every step was skipped
   for want of a reward spread: base's evaluation is its) is evaluated on (a) and (b) through
   `python -m srl_agent.evaluate --task swe --instances OUT/data/repos` with the agent scaffold, greedy,
   the `evaluate` section's window and limits; and by step similarity (the SRL reward, greedy) on
   `bench.step_examples` expert steps of each held-out set.

The table (`OUT/summary.md`, `summary.json`, and `summary.png`: resolve rate by arm with 95% intervals,
and the training curves) gives per arm and set: the resolve rate with a 95% bootstrap interval over
tasks, the difference from base with a paired bootstrap interval (the same resampled tasks for both),
step similarity, format-error rate, exit statuses and turns per episode; per arm its wall time
(training and evaluation) and the tokens generated and trained.

Each arm is resumable and can run alone or beside the others (`--arms srl` in another process): a
stage is skipped once recorded in `OUT/<arm>/arm.json` (a killed stage resumes from its
checkpoints/last), an evaluation goes on from its output folder. A rerun into `--out` with other data
or budget settings is refused (`OUT/run.json`). `--report` prints the table of what is done.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_outcomes import arm_lock, bootstrap, fmt, machine, mean, run, run_json

from environments.factory.statements import first_changed_line
from trajectories.config import ConfigError
from trajectories.ledger import check_run_folder

REPO = Path(__file__).resolve().parents[1]
ARMS = ("base", "sft", "srl", "sft+srl", "rlvr", "srl+rlvr", "sft+rlvr")
# Steps between a stage's checkpoints: a stage killed midway (a session's end) resumes from its last one.
SAVE_EVERY = 4
SETS = {
    "seen": "held-out tasks of the training repositories",
    "unseen": "every task of the unseen repository",
}
BENCH_DEFAULTS: dict[str, Any] = {
    "tasks": "runs/factory",
    "train_repos": [],
    "unseen_repo": None,
    "kinds": [],
    "arms": list(ARMS),
    "steps": 16,
    "batch": 4,
    "step_examples": 48,
    "seed": 0,
    "train_single_read": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "swe_learning_cpu.yaml")
    parser.add_argument("--arms", default=None, help="comma-separated, any of " + ", ".join(ARMS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-swe-learning"))
    parser.add_argument("--report", action="store_true", help="only print the table of finished arms")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each command")
    args = parser.parse_args()
    if args.threads is not None:  # the commands run as subprocesses and inherit it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    try:
        bench, train, evaluate = read_config(args.config)
        arms = [a.strip() for a in args.arms.split(",")] if args.arms else list(bench["arms"])
        if unknown := [a for a in arms if a not in ARMS]:
            raise ConfigError(f"--arms: unknown {unknown}; the arms are {', '.join(ARMS)}")
        args.out.mkdir(parents=True, exist_ok=True)
        check_run_folder(args.out, run_identity(bench, train, evaluate),
                         holds_results=(args.out / "data" / "split.json").is_file(), option="--out")  # fmt: skip
        data = prepare_data(bench, args.out)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    configs = write_configs(args.out, train, evaluate)
    base = (train.get("model") or {}).get("name", "smollm2-135m")
    if not args.report:
        for arm in arms:
            run_arm(arm, base, bench, data, configs, args.out, episode_turns(train))
    done = [a for a in ARMS if evaluated(args.out / a / "arm.json")]
    summary = summarize(bench, data, args.out, done)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    table = markdown(summary)
    (args.out / "summary.md").write_text(table, encoding="utf-8")
    plot(summary, args.out, args.out / "summary.png")
    print(table)


def evaluated(record: Path) -> bool:
    """Whether an arm's record holds its evaluations on every held-out set (a killed arm may hold one)."""
    return record.is_file() and set(SETS) <= set(json.loads(record.read_text()).get("eval", {}))


def read_config(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The `bench` section (defaults filled in, an unknown key refused), and the `train` and `evaluate`
    sections as they are (the commands check them)."""
    if not path.is_file():
        raise ConfigError(f"--config: no such file {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if unknown := sorted(set(data) - {"bench", "train", "evaluate"}):
        raise ConfigError(f"{path}: unknown sections {unknown}; the sections are bench, train, evaluate")
    bench = data.get("bench") or {}
    if unknown := sorted(set(bench) - set(BENCH_DEFAULTS)):
        raise ConfigError(f"{path}: unknown bench keys {unknown}; the keys are {', '.join(BENCH_DEFAULTS)}")
    bench = {**BENCH_DEFAULTS, **bench}
    if not bench["train_repos"] or not bench["unseen_repo"]:
        raise ConfigError(f"{path}: bench.train_repos and bench.unseen_repo name the repositories")
    if bench["unseen_repo"] in bench["train_repos"]:
        raise ConfigError(f"{path}: bench.unseen_repo {bench['unseen_repo']} is also a training repository")
    if bench["steps"] < 2 or bench["steps"] % 2:
        raise ConfigError(f"{path}: bench.steps must be even and at least 2 (the two-stage arms halve it)")
    return bench, data.get("train") or {}, data.get("evaluate") or {}


def run_identity(bench: dict[str, Any], train: dict[str, Any], evaluate: dict[str, Any]) -> dict[str, Any]:
    """The settings the folder's results are made with (`OUT/run.json`): all but the arm list and the
    speed choices, which are not settings of the method: the engine that samples training rollouts
    (`train.generation.backend`) and how many episodes run at once (`environment.pool_size`). An arm's
    resolved config, in its run folder, records them."""
    return {
        "bench": {k: v for k, v in bench.items() if k != "arms"},
        "train": without(without(train, "generation", "backend"), "environment", "pool_size"),
        "evaluate": without(evaluate, "environment", "pool_size"),
    }


def without(config: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    """`config` less `section.key` (and less `section` if that was all it held)."""
    if key not in (config.get(section) or {}):
        return config
    rest = {k: v for k, v in config[section].items() if k != key}
    return {**{k: v for k, v in config.items() if k != section}, **({section: rest} if rest else {})}


def write_configs(out: Path, train: dict[str, Any], evaluate: dict[str, Any]) -> dict[str, Path]:
    folder = out / "configs"
    folder.mkdir(exist_ok=True)
    paths = {"train": folder / "train.yaml", "evaluate": folder / "evaluate.yaml"}
    paths["train"].write_text(yaml.safe_dump(train, sort_keys=False), encoding="utf-8")
    paths["evaluate"].write_text(yaml.safe_dump(evaluate, sort_keys=False), encoding="utf-8")
    return paths


# ---------------------------------------------------------------------------------------------------
# the data


def kind_of(instance_id: str) -> str:
    """The bug kind of a generated task (`<repo>.<commit8>.<kind>__<hash>`)."""
    return instance_id.rsplit(".", 1)[-1].split("__")[0]


def prepare_data(bench: dict[str, Any], out: Path) -> dict[str, Any]:
    """The split (written once to `OUT/data/split.json`, read back after) and the links to the tasks
    and trajectories it names."""
    folder = out / "data"
    split_path = folder / "split.json"
    if split_path.is_file():
        return json.loads(split_path.read_text(encoding="utf-8"))
    tasks = Path(bench["tasks"])
    kinds = set(bench["kinds"])
    split: dict[str, list[str]] = {"train": [], "seen": [], "unseen": []}
    repo_of: dict[str, str] = {}
    repos = [*bench["train_repos"], bench["unseen_repo"]]
    for repo in repos:
        source = tasks / repo
        manifest, instances = source / "manifest.json", source / "instances.jsonl"
        if not manifest.is_file() or not instances.is_file():
            raise ConfigError(
                f"bench.tasks: {source} is not a make-tasks folder (no manifest.json or instances.jsonl)"
            )
        parts = json.loads(manifest.read_text(encoding="utf-8"))["split"]
        ids = [
            json.loads(line)["instance_id"]
            for line in instances.read_text(encoding="utf-8").splitlines()
            if line
        ]
        chosen = [i for i in ids if not kinds or kind_of(i) in kinds]
        repo_of.update(dict.fromkeys(chosen, repo))
        if repo == bench["unseen_repo"]:
            split["unseen"] += chosen
        else:
            train = [i for i in chosen if i in set(parts["train"])]
            if bench["train_single_read"]:  # the held-out sets keep every task
                train = [i for i in train if not reads_on(source / "trajectories" / f"{i}.traj")]
            split["train"] += train
            split["seen"] += [i for i in chosen if i in set(parts["held_out"])]
    if empty := [name for name, ids in split.items() if not ids]:
        raise ConfigError(f"bench: no task of the kinds {sorted(kinds)} in the {' and '.join(empty)} set(s)")
    (folder / "repos").mkdir(parents=True, exist_ok=True)
    for repo in repos:
        link = folder / "repos" / repo
        if not link.exists():
            link.symlink_to((tasks / repo).resolve())
    for name, ids in split.items():
        target = folder / "trajectories" / name
        target.mkdir(parents=True, exist_ok=True)
        for iid in ids:
            traj = folder / "repos" / repo_of[iid] / "trajectories" / f"{iid}.traj"
            if not traj.is_file():
                raise ConfigError(f"bench.tasks: {iid} has no expert trajectory ({traj})")
            if not (target / traj.name).exists():
                (target / traj.name).symlink_to(traj.resolve())
    data = {
        "repos": {"train": bench["train_repos"], "unseen": bench["unseen_repo"]},
        "kinds": sorted(kinds),
        "counts": {name: count_kinds(ids) for name, ids in split.items()},
        **{name: sorted(ids) for name, ids in split.items()},
    }
    split_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data


def reads_on(traj: Path) -> bool:
    """Whether an expert reads its function past the first `grep -A 49` (`| sed -n '51,100p'`...):
    the policy cannot tell from the first read whether the bug lies further on."""
    if not traj.is_file():
        raise ConfigError(f"bench.tasks: no expert trajectory {traj}")
    steps = json.loads(traj.read_text(encoding="utf-8")).get("trajectory", [])
    return any("| sed -n '" in str(step.get("action", "")) for step in steps)


def count_kinds(ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for iid in ids:
        counts[kind_of(iid)] = counts.get(kind_of(iid), 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------------
# one arm


def stages(arm: str, steps: int, turns: int) -> list[tuple[str, int]]:
    """(stage, optimizer steps) of an arm, in order. An RLVR step samples an episode of up to `turns`
    policy turns where an SRL step samples one turn, so an RLVR stage takes 1/`turns` of the steps: at
    most as many sampled turns (and completions of `generation.max_new_tokens`) as SRL's."""
    if arm == "base":
        return []
    names = arm.split("+")
    share = steps // len(names)
    return [(name, max(1, share // turns) if name == "rlvr" else share) for name in names]


def episode_turns(train: dict[str, Any]) -> int:
    """The most policy turns of one RLVR episode (`train.agent.max_steps`, its default where unset)."""
    from pydantic import ValidationError

    from srl_agent.config import TrainConfig

    try:
        return TrainConfig.model_validate(train).agent.max_steps
    except ValidationError as e:
        raise SystemExit(f"error: the config's train section: {e}") from None


def run_arm(arm: str, base: str, bench: dict, data: dict, configs: dict[str, Path], out: Path,
            turns: int) -> None:  # fmt: skip
    """Train the arm's stages (each resuming), then evaluate its final checkpoint; `arm.json` records it.
    A lock file keeps two processes from running one arm at once."""
    folder = out / arm
    with arm_lock(arm, folder) as mine:
        if mine:
            _run_arm(arm, base, bench, data, configs, out, folder, turns)


def _run_arm(arm: str, base: str, bench: dict, data: dict, configs: dict[str, Path], out: Path,
             folder: Path, turns: int) -> None:  # fmt: skip
    record_path = folder / "arm.json"
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.setdefault("stages", {})
    model = base
    plan = stages(arm, bench["steps"], turns)
    for index, (stage, steps) in enumerate(plan):
        if stage not in record["stages"]:
            # The same seeded stages from the same start in another arm: that run is this one's.
            if not (done := trained_elsewhere(arm, plan[: index + 1], bench["steps"], out, turns)):
                init_from = None if model == base else model
                run_dir = folder / stage
                started = time.perf_counter() - step_seconds(run_dir)  # a killed run's steps count
                run(train_command(stage, steps, bench, data, configs["train"], out, run_dir, init_from))
                done = {"seconds": time.perf_counter() - started, **training_stats(run_dir)}
            record["stages"][stage] = done
            record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        model = str(stage_checkpoint(out, record["stages"][stage].get("trained_in", arm), stage))
    record["model"] = model
    if record["stages"] and not updates(record["stages"]):
        # Every step was skipped (no group had a reward spread): the weights are the base model's, and
        # evaluating them again would measure base twice.
        run_arm("base", base, bench, data, configs, out, turns)
        if evaluated(out / "base" / "arm.json"):
            base_evals = json.loads((out / "base" / "arm.json").read_text())["eval"]
            record["eval_of"] = "base"
            record["eval"] = {name: {**base_evals[name], "seconds": 0.0} for name in SETS}
            record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            return
    evals = record.setdefault("eval", {})
    for name in SETS:
        if name not in evals:
            started = time.perf_counter()
            report = run_json(eval_command(model, name, bench, data, configs["evaluate"], out, folder))
            steps = run_json(step_command(model, name, bench, configs["evaluate"], out))
            evals[name] = {"report": report, "steps": steps, "seconds": time.perf_counter() - started}
            record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def trained_elsewhere(
    arm: str, plan: list[tuple[str, int]], budget: int, out: Path, turns: int
) -> dict[str, Any] | None:
    """The record of `plan`'s last stage where another arm has finished the same stages (names and
    steps) in the same order, marked with the arm it was trained in (`trained_in`); None if no arm has.
    Runs are seeded and deterministic, so `sft+srl` can start from `sft+rlvr`'s SFT stage."""
    stage = plan[-1][0]
    for other in ARMS:
        record_path = out / other / "arm.json"
        if other == arm or stages(other, budget, turns)[: len(plan)] != plan:
            continue
        if record_path.is_file() and (done := json.loads(record_path.read_text())["stages"].get(stage)):
            trained_in = done.get("trained_in", other)
            if stage_checkpoint(out, trained_in, stage).is_dir():
                return {**done, "trained_in": trained_in}
    return None


def stage_checkpoint(out: Path, arm: str, stage: str) -> Path:
    """The last checkpoint of the stage that `arm` trained."""
    return out / arm / stage / "checkpoints" / "last"


def updates(stages: dict[str, dict[str, Any]]) -> int:
    """Optimizer steps the recorded stages took (their steps less those skipped)."""
    return sum(s["steps"] - s["skipped_updates"] for s in stages.values())


def train_command(stage: str, steps: int, bench: dict, data: dict, config: Path, out: Path, run_dir: Path,
                  init_from: str | None) -> list[str]:  # fmt: skip
    command = [
        "srl_agent.train", "--task", "swe", "--stage", stage, "--config", str(config),
        f"run_dir={run_dir}", f"trainer.steps={steps}", f"trainer.batch_size={bench['batch']}",
        f"trainer.save_every={min(SAVE_EVERY, steps)}", f"seed={bench['seed']}",
    ]  # fmt: skip
    if stage == "rlvr":  # episodes on the training split's tasks, rewarded by their tests
        command += [f"data.source={out / 'data' / 'repos'}", "episodes.split=all",
                    f"episodes.instance_ids={json.dumps(data['train'])}"]  # fmt: skip
    else:  # the training split's expert steps
        command.append(f"data.source={out / 'data' / 'trajectories' / 'train'}")
    if init_from:
        command.append(f"model.init_from={init_from}")
    return command


def eval_command(
    model: str, name: str, bench: dict, data: dict, config: Path, out: Path, folder: Path
) -> list[str]:
    return [
        "srl_agent.evaluate", "--task", "swe", "--config", str(config), "--model", model,
        "--instances", str(out / "data" / "repos"), "--out", str(folder / f"eval-{name}"), "--json",
        f"seed={bench['seed']}", "swe.split=all", f"swe.instance_ids={json.dumps(data[name])}",
    ]  # fmt: skip


def step_command(model: str, name: str, bench: dict, config: Path, out: Path) -> list[str]:
    """The SRL step reward (greedy) on the held-out set's expert steps, as training validates."""
    return [
        "srl_agent.evaluate", "--task", "swe", "--config", str(config), "--model", model,
        f"data.source={out / 'data' / 'trajectories' / name}", "data.build.validation_groups=0",
        "eval.split=train", f"data.max_train_examples={bench['step_examples']}", f"seed={bench['seed']}",
    ]  # fmt: skip


def step_seconds(run_dir: Path) -> float:
    """Seconds that the steps up to the stage's last checkpoint took (0 before one): what a killed run
    leaves to its resumption, less its start-up."""
    from srl_agent.runlog import read_metrics

    state = run_dir / "checkpoints" / "last" / "state.json"
    kept = json.loads(state.read_text())["step"] if state.is_file() else 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    return sum(r.get("seconds_total") or 0.0 for r in rows if 0 < r.get("step", 0) <= kept)


def training_stats(run_dir: Path) -> dict[str, Any]:
    """One stage's steps, skipped updates, tokens generated and trained, and its curve (reward or loss
    per step)."""
    from srl_agent.runlog import read_metrics

    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("step", 0) > 0]
    return {
        "steps": len(rows),
        "skipped_updates": sum(bool(r.get("skipped_update")) for r in rows),
        "generated_tokens": sum(r.get("completion_tokens") or 0 for r in rows),
        "trained_tokens": sum(r.get("tokens") or 0 for r in rows),
        "curve": [
            {
                "step": r["step"],
                "reward_mean": r.get("reward_mean"),
                "loss": r.get("loss"),
                "resolved": r.get("resolved"),
            }
            for r in rows
        ],
    }


# ---------------------------------------------------------------------------------------------------
# the table


def patched_files(diff: str) -> set[str]:
    return {
        line.split(" b/", 1)[1]
        for line in diff.splitlines()
        if line.startswith("diff --git ") and " b/" in line
    }


def first_call(step: dict[str, Any]) -> str:
    """An episode's first call in a word or two: `bash pytest`, `str_replace_editor view`, `submit`."""
    action = step.get("action") or {}
    name, arguments = action.get("name") or "(no call)", action.get("arguments") or {}
    if name == "bash":
        words = str(arguments.get("command", "")).replace("&&", " ").split()
        words = [w for w in words if w not in ("cd", "/testbed", "python", "-m")]
        return f"bash {words[0]}" if words else "bash"
    return f"{name} {arguments['command']}" if "command" in arguments else name


def behaviour(folder: Path, gold: dict[str, set[str]], bug_lines: dict[str, str | None]) -> dict[str, Any]:
    """What an evaluation's episodes did, read from their saved trajectories: the share that changed
    the repository at all and that changed a file the bug is in, the share of calls that were
    refused edits (`str_replace` whose old text is not in the file), the `str_replace` calls per episode,
    the share of them that change nothing (`new_str == old_str`) and the share whose old text holds the
    first line the bug wrote (`bug_lines`: the edit is at the bug), and the most common first calls."""
    episodes = [json.loads(p.read_text(encoding="utf-8").splitlines()[0])
                for p in sorted((folder / "trajectories").glob("*.jsonl"))]  # fmt: skip
    if not episodes:
        return {}
    firsts: dict[str, int] = {}
    calls = refused = replaces = unchanged = at_bug = 0
    for e in episodes:
        bug_line = bug_lines.get(e["instance_id"])
        if e["steps"]:
            key = first_call(e["steps"][0])
            firsts[key] = firsts.get(key, 0) + 1
        for step in e["steps"]:
            calls += 1
            refused += "did not appear verbatim" in str(step.get("observation", ""))
            arguments = (step.get("action") or {}).get("arguments") or {}
            if arguments.get("command") == "str_replace":
                replaces += 1
                unchanged += arguments.get("old_str") == arguments.get("new_str")
                at_bug += bool(bug_line) and bug_line in str(arguments.get("old_str", ""))
    n = len(episodes)
    touched = [patched_files(e.get("final_patch") or "") for e in episodes]
    return {
        "episodes": n,
        "edited": sum(bool(files) for files in touched) / n,
        "edited_bug_file": sum(bool(f & gold.get(e["instance_id"], set())) for f, e in zip(touched, episodes))
        / n,
        "refused_edit_rate": refused / calls if calls else None,
        "replaces_per_episode": replaces / n,
        "unchanged_replace_share": unchanged / replaces if replaces else None,
        "at_bug_replace_share": at_bug / replaces if replaces else None,
        "first_calls": dict(sorted(firsts.items(), key=lambda kv: -kv[1])[:4]),
    }


def gold(out: Path) -> tuple[dict[str, set[str]], dict[str, str | None]]:
    """Each task's buggy files (those its bug patch changes) and the first line its bug wrote, from
    the factory folders."""
    files: dict[str, set[str]] = {}
    lines: dict[str, str | None] = {}
    for instances in sorted((out / "data" / "repos").glob("*/instances.jsonl")):
        for text in instances.read_text(encoding="utf-8").splitlines():
            if text:
                row = json.loads(text)
                files[row["instance_id"]] = patched_files(row["patch"])
                bug_line = first_changed_line(row["patch"])
                lines[row["instance_id"]] = bug_line.strip() if bug_line else None
    return files, lines


def resolved_vector(report: dict[str, Any], ids: list[str]) -> list[float]:
    statuses = report.get("instances", {})
    return [1.0 if statuses.get(iid) == "resolved" else 0.0 for iid in ids]


def summarize(bench: dict, data: dict, out: Path, arms: list[str]) -> dict[str, Any]:
    records = {a: json.loads((out / a / "arm.json").read_text()) for a in arms}
    rng = random.Random(bench["seed"])
    files, bug_lines = gold(out)
    rows = []
    for name in SETS:
        ids = data[name]
        draws = [[rng.randrange(len(ids)) for _ in ids] for _ in range(2000)]
        vectors = {a: resolved_vector(records[a]["eval"][name]["report"], ids) for a in arms}
        for arm in arms:
            r, v = records[arm], vectors[arm]
            report, steps = r["eval"][name]["report"], r["eval"][name]["steps"]
            episodes = report.get("episodes") or {}
            turns = episodes.get("turns_mean")
            row = {
                "arm": arm,
                "set": name,
                "tasks": len(ids),
                "resolved": int(sum(v)),
                "resolve_rate": mean(v),
                "ci95": bootstrap(lambda idx, v=v: mean([v[i] for i in idx]), draws),
                "step_similarity": steps.get("reward_mean"),
                "step_format_error_rate": steps.get("format_error_rate"),
                "format_error_rate": (episodes.get("format_errors_mean") or 0) / turns if turns else None,
                "turns_mean": turns,
                "exit_statuses": report.get("exit_statuses"),
                "eval_seconds": r["eval"][name]["seconds"],
                "behaviour": behaviour(out / r.get("eval_of", arm) / f"eval-{name}", files, bug_lines),
                "eval_of": r.get("eval_of"),
            }
            if arm != "base" and "base" in vectors:
                b = vectors["base"]
                row["diff_vs_base"] = mean(v) - mean(b)
                row["diff_ci95"] = bootstrap(lambda idx, v=v, b=b: mean([v[i] - b[i] for i in idx]), draws)
            rows.append(row)
    training = {
        a: {
            "train_seconds": sum(s["seconds"] for s in records[a]["stages"].values()),
            "eval_seconds": sum(e["seconds"] for e in records[a]["eval"].values()),
            "generated_tokens": sum(s["generated_tokens"] for s in records[a]["stages"].values()),
            "trained_tokens": sum(s["trained_tokens"] for s in records[a]["stages"].values()),
            "steps": sum(s["steps"] for s in records[a]["stages"].values()),
            "updates": updates(records[a]["stages"]),
            "eval_of": records[a].get("eval_of"),
            "stages": records[a]["stages"],
        }
        for a in arms
    }
    return {
        "machine": machine(),
        "bench": bench,
        "split_counts": data["counts"],
        "rows": rows,
        "arms": training,
    }


def markdown(summary: dict[str, Any]) -> str:
    b, counts = summary["bench"], summary["split_counts"]
    lines = [
        f"# SWE learning at CPU scale ({b['steps']} optimizer steps x {b['batch']} examples per arm)",
        "",
        (
            f"Machine: {summary['machine']}. Train: {sum(counts['train'].values())} tasks of "
            f"{', '.join(b['train_repos'])}; (a) seen: {sum(counts['seen'].values())} held-out tasks of the same "
            f"repositories; (b) unseen: {sum(counts['unseen'].values())} tasks of {b['unseen_repo']}. "
            f"Bug kinds: {', '.join(b['kinds']) or 'all'}."
        ),
        "",
        (
            "| arm | set | resolved | rate | 95% CI | vs base | 95% CI (paired) | step sim | format err | turns "
            "| exit statuses |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        diff = f"{r['diff_vs_base']:+.3f}" if "diff_vs_base" in r else ""
        dci = "[{:+.3f}, {:+.3f}]".format(*r["diff_ci95"]) if "diff_ci95" in r else ""
        exits = ", ".join(f"{k} {n}" for k, n in sorted((r["exit_statuses"] or {}).items()))
        lines.append(
            f"| {r['arm']} | {r['set']} | {r['resolved']}/{r['tasks']} | {r['resolve_rate']:.3f} "
            f"| [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {diff} | {dci} | {fmt(r['step_similarity'])} "
            f"| {fmt(r['format_error_rate'])} | {fmt(r['turns_mean'], 1)} | {exits} |"
        )
    lines += [
        "",
        "What the episodes did (from their trajectories): the share that changed the repository, that changed",
        "a file the bug is in, the share of calls that were edits refused (old text not in the file), the",
        "`str_replace` calls per episode, the share of them that change nothing (new text = old text) and",
        "that are at the bug (old text holds the first line the bug wrote), the commonest first calls.",
        "",
        (
            "| arm | set | edited | edited the bug's file | refused edits | str_replace/episode | unchanged "
            "| at the bug | first calls |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        if b_ := r.get("behaviour"):
            firsts = ", ".join(f"{k} {n}" for k, n in b_["first_calls"].items())
            lines.append(f"| {r['arm']} | {r['set']} | {b_['edited']:.2f} | {b_['edited_bug_file']:.2f} "
                         f"| {fmt(b_['refused_edit_rate'])} | {b_.get('replaces_per_episode', 0):.1f} "
                         f"| {fmt(b_.get('unchanged_replace_share'))} | {fmt(b_.get('at_bug_replace_share'))} "
                         f"| {firsts} |")  # fmt: skip
    lines += [
        "",
        "Updates: optimizer steps taken of those run (a step whose groups all lack a reward spread is",
        "skipped). An arm that took none has the base model's weights, and base's evaluation. A stage",
        "'in' another arm is that arm's run of the same seeded stages from the same start, counted in both.",
        "",
        "| arm | stages | updates | train s | eval s | tokens generated | tokens trained |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, t in summary["arms"].items():
        stages_ = (
            " + ".join(
                f"{name} {s['steps']}" + (f" (in {s['trained_in']})" if s.get("trained_in") else "")
                for name, s in t["stages"].items()
            )
            or "-"
        )
        evals = f"= {t['eval_of']}'s" if t.get("eval_of") else f"{t['eval_seconds']:.0f}"
        lines.append(f"| {arm} | {stages_} | {t['updates']}/{t['steps']} | {t['train_seconds']:.0f} "
                     f"| {evals} | {t['generated_tokens']} | {t['trained_tokens']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path, path: Path) -> None:
    """Resolve rate by arm and set with 95% intervals (left), each SFT stage's loss (middle) and each RL
    stage's training reward (right), on the share of the arm's budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, losses, rewards) = plt.subplots(1, 3, figsize=(16, 4.5), width_ratios=(1.2, 1, 1))
    arms = list(summary["arms"])
    for k, name in enumerate(SETS):
        rows = {r["arm"]: r for r in summary["rows"] if r["set"] == name}
        xs = [i + (k - 0.5) * 0.35 for i in range(len(arms))]
        ys = [rows[a]["resolve_rate"] for a in arms]
        err = [
            [y - rows[a]["ci95"][0] for a, y in zip(arms, ys)],
            [rows[a]["ci95"][1] - y for a, y in zip(arms, ys)],
        ]
        left.bar(xs, ys, width=0.35, yerr=err, capsize=3, label=f"({'ab'[k]}) {name}: {SETS[name]}")
    ticks = [a + (f"\n(= {t['eval_of']})" if (t := summary["arms"][a]).get("eval_of") else "") for a in arms]
    left.set_xticks(range(len(arms)), ticks, rotation=20)
    left.set_ylabel("held-out resolve rate (95% bootstrap CI)")
    left.legend(fontsize=7)
    for i, (arm, t) in enumerate(summary["arms"].items()):
        # a stage spans its share of the arm's budget (an RLVR step stands for max_steps SRL steps)
        share = 1 / max(1, len(t["stages"]))
        for k, (stage, s) in enumerate(t["stages"].items()):
            axis, key = (losses, "loss") if stage == "sft" else (rewards, "reward_mean")
            points = [
                ((k + c["step"] / s["steps"]) * share, c[key]) for c in s["curve"] if c.get(key) is not None
            ]
            if points:
                # thinner line by arm: a stage that another arm shares stays visible beneath
                axis.plot(*zip(*points), f"C{i}.-", lw=3.5 - 0.4 * i, alpha=0.8, label=f"{arm}: {stage}")
    losses.set_title("SFT stages: loss per token", fontsize=9)
    rewards.set_title("RL stages: training reward (SRL: similarity, -1 = broken; RLVR: resolved)", fontsize=9)
    for axis in (losses, rewards):
        axis.set_xlabel("share of the arm's training budget")
        axis.set_xlim(0, 1)
        if axis.lines:
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
