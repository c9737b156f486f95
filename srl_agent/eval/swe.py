"""SWE-bench evaluation of a policy as an agent: `python -m srl_agent.evaluate --task swe --instances SOURCE`.

Reads top to bottom in `evaluate_swe`: load the instances; skip those the output folder already holds
finished; run one agent episode per remaining instance, `workers` at a time on the environment pool
(each instance's image prepared first: bundled tasks are built, SWE-bench images must be present or
pullable; the running episodes' turns are generated in one batch, `policies.BatchedPolicy`); grade the patches (the official `swebench` harness under a run id unique to this call, or
the fast in-container runner); write the report.

`--scaffold oracle` runs the paper's oracle-file setting instead of episodes (`srl_agent.eval.oracle`: one
response per instance with the gold patch's files in the prompt, its SEARCH/REPLACE edits made into
a patch), and `--scaffold agentless` its end-to-end setting (`srl_agent.eval.agentless`: the model
localizes the files, then the oracle's repair on them; `--samples K` votes among K); the ledger,
grading and report below are the same, with the scaffold's statistics in place of an episode's and
`oracle/<instance_id>.json` or `agentless/<instance_id>.json` in place of a trajectory. The agentless
report adds `localization`: recall against the gold patch's files, per instance and on average.
`--scaffold mini-swe-agent` has the mini-swe-agent package run each instance in its image
(`srl_agent.eval.mini_swe_agent`): its trajectory is `mini/<instance_id>.traj.json`, its submission the
patch, its exit status mini's (an exception's name, such as an unreachable model server, is an
infrastructure error).

The output folder (`--out`, default `runs/eval-swe/<model>`, `runs/eval-swe-<scaffold>/<model>` for
the other scaffolds) holds:
- `predictions.jsonl`: SWE-bench predictions (`instance_id`, `model_name_or_path`, `model_patch`);
- `trajectories/<instance_id>.jsonl`: each episode as a trajectory record (`python -m trajectories
  inspect` reads it), with per-turn tokens and seconds and its exit status;
- `results.jsonl`: the ledger, one line per instance whenever it reaches a phase (`episode`, then
  `graded`); appended and flushed line by line, so a kill loses nothing already written, and a rerun
  of the same command goes on from it: graded instances are skipped, episodes not yet graded are
  graded, and instances whose episode or grading failed on the infrastructure's side are redone;
- `report.json` and `report.md`;
- `run.json`: what the run is made with (`run_settings`: model, scaffold, the agent's, prompt's and
  generation's settings); a rerun into the folder with other settings is refused, naming each;
- `manifest.json`: what each call into the folder depended on, down to the model files' hashes, the
  images' ids and the package versions (`srl_agent.eval.manifest`).

Every instance ends in one status: `resolved`, `unresolved` (the tests fail, or the patch does not
apply), `empty_patch` (nothing to grade), `infrastructure_error` (a missing image, a dead engine or
container, a harness failure) or `not_evaluable` (the source's row lacks what an episode or the
grader needs; the reason names the fields). The last two are never the policy's failure, so
`resolve_rate` is resolved over the instances that were graded, and `resolve_rate_all` over all.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from srl_agent.eval.manifest import instance_facts, manifest_entry, write_manifest
from srl_agent.eval.report import Bar, file_name, model_folder, model_string
from trajectories.ledger import (
    Ledger,
    check_run_folder,
)  # a line cut by a kill is skipped: that instance is redone

if TYPE_CHECKING:
    from environments.protocol import TaskInstance
    from srl_agent.config import EvalConfig
    from srl_agent.protocols import Policy

log = logging.getLogger(__name__)

Status = Literal["resolved", "unresolved", "empty_patch", "infrastructure_error", "not_evaluable"]
STATUSES: tuple[Status, ...] = (
    "resolved",
    "unresolved",
    "empty_patch",
    "infrastructure_error",
    "not_evaluable",
)
# where each scaffold keeps its per-instance records in the output folder
RECORDS = {"agent": "trajectories", "oracle": "oracle", "agentless": "agentless", "mini-swe-agent": "mini"}
# GradeResult.status -> the report's status ("error": the grader could not run the tests; "timeout": the
# patch's tests hung, unresolved as on SWE-bench's leaderboards)
_GRADE_STATUS: dict[str, Status] = {
    "resolved": "resolved",
    "unresolved": "unresolved",
    "patch_failed": "unresolved",
    "timeout": "unresolved",
    "empty_patch": "empty_patch",
    "error": "infrastructure_error",
}


@dataclass
class Outcome:
    """What became of one instance so far (one line of `results.jsonl`)."""

    instance_id: str
    phase: Literal["episode", "graded"]
    status: Status | None = None
    exit_status: str | None = None
    detail: str = ""
    episode: dict[str, Any] | None = None
    grade: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.phase == "graded" and self.status != "infrastructure_error"


@dataclass
class Prediction:
    """One line of `predictions.jsonl`, a SWE-bench prediction (the last per instance is its patch)."""

    instance_id: str
    model_name_or_path: str
    model_patch: str


def evaluate_swe(cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the evaluation `cfg` describes; the report (also written to the output folder)."""
    from environments.pool import open_pool
    from srl_agent.policies import make_policy
    from srl_agent.tasks import task_spec

    out = output_dir(cfg)
    results: Ledger[Outcome] = Ledger(out / "results.jsonl", Outcome, key="instance_id")
    check_run_folder(
        out,
        run_settings(cfg),
        holds_results=any(_ran(o) for o in results.latest().values()),
        option="swe.out",
    )
    predictions: Ledger[Prediction] = Ledger(out / "predictions.jsonl", Prediction, key="instance_id")
    tasks, skipped = load_instances(cfg)
    for iid, reason in skipped:
        if (before := results.get(iid)) is None or (before.status, before.detail) != (
            "not_evaluable",
            reason,
        ):
            results.write(Outcome(iid, "graded", "not_evaluable", detail=reason))
    todo = [t for t in tasks if not _finished(results.get(t.instance_id))]
    to_run = [t for t in todo if not _episode_done(results.get(t.instance_id))]
    print(f"swe eval: {len(tasks)} instances, {len(tasks) - len(todo)} already graded, "
          f"{len(to_run)} to run, output in {out}", file=sys.stderr, flush=True)  # fmt: skip
    if to_run and cfg.swe.scaffold in ("oracle", "agentless"):
        run_prompted(cfg, to_run, results, predictions, out, progress)
    elif to_run and cfg.swe.scaffold == "mini-swe-agent":
        run_mini(cfg, to_run, results, predictions, out, progress)
    elif to_run:
        policy = make_policy(
            model_string(cfg),
            cfg.agent,
            model_cfg=cfg.model,
            generation=cfg.generation,
            prompt=cfg.prompt,
            stage=task_spec(cfg.task).stage("srl"),
            seed=cfg.seed,
            api=cfg.api,
        )
        refuse_unknown_instances(cfg, policy, to_run)
        with open_pool(cfg.environment) as pool, Progress(progress, len(to_run)) as bar:
            run = Runner(cfg, policy, pool, out, results, predictions, bar)
            with ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="episode") as executor:
                list(executor.map(run.instance, to_run))
    grade(cfg, [t for t in todo if not _finished(results.get(t.instance_id))], results, predictions, out)
    report = make_report(cfg, tasks, skipped, results)
    report["out"] = str(out)
    write_report(report, out)
    write_manifest(out, manifest_entry(
        run_settings(cfg), model_string(cfg),
        instances=instance_facts(cfg.swe.instances, [t.instance_id for t in tasks] + [i for i, _ in skipped]),
        images=[t.image for t in tasks],
        sections={"grading": cfg.grading.model_dump(mode="json"),
                  "environment": cfg.environment.model_dump(mode="json")},
    ))  # fmt: skip
    return report


def run_settings(cfg: EvalConfig) -> dict[str, Any]:
    """What the results in an output folder depend on: a rerun goes on from the folder only with these.
    The grader is not among them: the fast runner and the harness agree by construction (tested), so
    a folder graded by one is resumed by the other."""
    return {
        "model": model_string(cfg),
        "scaffold": cfg.swe.scaffold,
        "dtype": cfg.model.dtype,
        "seed": cfg.seed,
        "agent": cfg.agent.model_dump(mode="json"),
        "build": cfg.data.build.model_dump(mode="json"),
        "prompt": cfg.prompt.model_dump(mode="json"),
        "generation": cfg.generation.model_dump(mode="json"),
        "oracle_max_new_tokens": (
            cfg.swe.oracle_max_new_tokens if cfg.swe.scaffold in ("oracle", "agentless") else None
        ),
        **({"samples": cfg.swe.samples} if cfg.swe.scaffold == "agentless" else {}),
        **({"mini": cfg.swe.mini.model_dump(mode="json")} if cfg.swe.scaffold == "mini-swe-agent" else {}),
        "test_timeout": cfg.grading.test_timeout,
    }


def refuse_unknown_instances(cfg: EvalConfig, policy: Policy, tasks: list[TaskInstance]) -> None:
    """ConfigError (a bad `--model`) when the policy cannot act on one of `tasks` (a replay without
    its trajectory): a user's mistake, refused before any container starts, never an instance's
    infrastructure error that every rerun would retry."""
    from srl_agent.policies import PolicyError
    from trajectories.config import ConfigError

    for task in tasks:
        try:
            policy.check_instance(task.instance_id)
        except PolicyError as e:
            raise ConfigError(
                f"--model {model_string(cfg)}: {e}; choose the instances it has with swe.instance_ids"
            ) from None


def load_instances(cfg: EvalConfig) -> tuple[list[TaskInstance], list[tuple[str, str]]]:
    """The instances `cfg.swe.instances` names and those it could not load, as (id, reason)."""
    from environments.grader import refused
    from environments.tasks.sources import TaskSourceError, load_task_source
    from trajectories.config import ConfigError

    swe = cfg.swe
    source = None if swe.instances == "bundled" else swe.instances
    try:
        tasks, skipped = load_task_source(source, split=swe.split, instance_ids=swe.instance_ids or None)
    except TaskSourceError as e:
        raise ConfigError(f"swe.instances: {e}") from None
    ungradable = refused(tasks, cfg.grading)  # e.g. the fast grader on a SWE-bench row
    return [t for t in tasks if t.instance_id not in dict(ungradable)], [*skipped, *ungradable]


def output_dir(cfg: EvalConfig) -> Path:
    out = output_path(cfg)
    (out / RECORDS[cfg.swe.scaffold]).mkdir(parents=True, exist_ok=True)
    return out


def output_path(cfg: EvalConfig) -> Path:
    pattern, scaffold = cfg.swe.out, cfg.swe.scaffold
    if pattern == "auto":  # the scaffolds keep apart: a ledger says nothing about another scaffold
        pattern = "runs/eval-swe/{model}" if scaffold == "agent" else f"runs/eval-swe-{scaffold}/{{model}}"
    return model_folder(pattern, cfg)


def evaluate_repeats(cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """`cfg.swe.repeats` whole evaluations, the i-th in `<out>/repeat-<i>` with seed `cfg.seed + i - 1`
    (each resumable on its own), and their summary (`repeats_summary`), also in `<out>/repeats.json`
    and `<out>/repeats.md`."""
    base = output_path(cfg)
    reports = []
    for i in range(1, cfg.swe.repeats + 1):
        folder = str(base / f"repeat-{i}").replace("{", "{{").replace("}", "}}")  # out is a pattern
        swe = cfg.swe.model_copy(update={"out": folder, "repeats": 1})
        reports.append(evaluate_swe(cfg.model_copy(update={"seed": cfg.seed + i - 1, "swe": swe}), progress))
    summary = {"model": model_string(cfg), "scaffold": cfg.swe.scaffold, "instances_source": cfg.swe.instances,
               **repeats_summary(reports, [cfg.seed + i for i in range(cfg.swe.repeats)]), "out": str(base)}  # fmt: skip
    (base / "repeats.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (base / "repeats.md").write_text(repeats_markdown(summary), encoding="utf-8")
    return summary


def repeats_summary(reports: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The resolve rate over repeated runs of one evaluation: mean, sample standard deviation (0 for
    one run), range, each run's figures, and per instance the number of runs that resolved it."""
    rates = [r["resolve_rate"] for r in reports]
    counts: Counter[str] = Counter()
    for r in reports:
        counts.update({iid: status == "resolved" for iid, status in r["instances"].items()})
    return {
        "repeats": len(reports),
        "resolve_rate_mean": statistics.fmean(rates),
        "resolve_rate_std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "resolve_rate_min": min(rates),
        "resolve_rate_max": max(rates),
        "runs": [
            {
                "seed": seed,
                "resolved": r["resolved"],
                "resolve_rate": r["resolve_rate"],
                "out": r.get("out"),
                "graded": r["resolved"] + r["unresolved"] + r["empty_patch"],
            }
            for seed, r in zip(seeds, reports, strict=True)
        ],
        "resolved_in_runs": dict(sorted(counts.items())),
        "always_resolved": sum(n == len(reports) for n in counts.values()),
        "sometimes_resolved": sum(0 < n < len(reports) for n in counts.values()),
    }


def repeats_markdown(summary: dict[str, Any]) -> str:
    rows = [
        f"| {i} | {run['seed']} | {run['resolved']} | {run['graded']} | {run['resolve_rate']:.3f} |"
        for i, run in enumerate(summary["runs"], 1)
    ]
    spread = (
        f"Resolve rate: mean {summary['resolve_rate_mean']:.3f}, standard deviation "
        f"{summary['resolve_rate_std']:.3f}, range [{summary['resolve_rate_min']:.3f}, "
        f"{summary['resolve_rate_max']:.3f}]. Instances resolved in every run: {summary['always_resolved']}; "
        f"in some but not all: {summary['sometimes_resolved']}."
    )
    title = f"# {summary['repeats']} runs of `{summary['model']}` ({summary['scaffold']} scaffold)"
    return "\n".join([title, "", "| run | seed | resolved | graded | resolve rate |", "|---|---|---|---|---|",
                      *rows, "", spread, ""])  # fmt: skip


@dataclass
class Runner:
    """One episode per instance (any thread) on the one episode path (`environments.episodes`):
    prepare the image, act in a pooled environment, grade (the fast grader at once, so the progress
    bar counts resolved instances as they come; the harness grades them all at the end), save."""

    cfg: EvalConfig
    policy: Policy
    pool: Any
    out: Path
    results: Ledger[Outcome]
    predictions: Ledger[Prediction]
    bar: Progress

    def instance(self, task: TaskInstance) -> None:
        from environments.episodes import Acted, run_graded
        from srl_agent.agent import run_episode, save_episode

        iid, cfg = task.instance_id, self.cfg

        def act(env: Any) -> Acted:  # the agent loop turns the environment's faults into an exit status
            episode = run_episode(policy, env, task.problem_statement, iid, cfg.agent, cfg.data.build)
            return Acted(episode, episode.patch, episode.detail if episode.infrastructure_error else None)

        with self.policy.episode() as policy:
            done = run_graded(
                task, act, self.pool, cfg.grading, env_cfg=cfg.environment, work_dir=self.out / "harness",
                defer_harness=True,
            )  # fmt: skip
        episode = done.episode
        if episode is None:  # no episode ran to its end: the instance's status, the run goes on
            outcome = Outcome(iid, "graded", "infrastructure_error", detail=done.masked or "")
            self.results.write(outcome)
            self.bar.advance(outcome)
            return
        save_episode(episode, self.out / "trajectories" / f"{file_name(iid)}.jsonl")
        infra = episode.infrastructure_error
        outcome = Outcome(
            iid,
            "graded" if infra else "episode",
            "infrastructure_error" if infra else None,
            episode.exit_status,
            episode.detail,
            episode.stats(),
        )
        if not infra:
            self.predictions.write(Prediction(iid, model_string(cfg), episode.patch or ""))
        self.results.write(outcome)
        if done.grade is not None:
            detail = f"{done.grade.detail} ({done.seconds_grading:.1f} s)".strip()
            outcome = _graded(self.results, iid, done.grade, detail, done.seconds_grading)
            self.results.write(outcome)
        elif done.masked is not None and not infra:  # the grader failed: no verdict
            outcome = _graded(self.results, iid, None, done.masked)
            self.results.write(outcome)
        self.bar.advance(outcome)


def run_prompted(
    cfg: EvalConfig,
    tasks: list[TaskInstance],
    results: Ledger[Outcome],
    predictions: Ledger[Prediction],
    out: Path,
    progress: bool,
) -> None:
    """The prompted scaffolds, oracle and agentless: responses made into one patch per instance
    (`srl_agent.eval.oracle`, `srl_agent.eval.agentless`), saved with its record and left for `grade`
    like an episode; an instance no response could be asked for is graded at once with its status.
    A model behind a chat API (`openai:`) is asked for `environment.pool_size` instances at once, as
    Agentless-mini sends concurrent requests (the server batches them); a model loaded here answers one
    instance at a time."""
    from environments.chat_api import OPENAI_PREFIX
    from srl_agent.eval import agentless, oracle

    scaffold, model = cfg.swe.scaffold, model_string(cfg)
    if scaffold == "agentless":
        attempt: Any = agentless.attempt
        respond: Any = agentless.make_asker(cfg, model)
    else:
        attempt, respond = oracle.attempt, oracle.make_responder(cfg, model)

    def instance(task: TaskInstance) -> None:
        iid, done = task.instance_id, attempt(cfg, task, respond)
        if done.error is not None:
            outcome = Outcome(iid, "graded", done.error[0], detail=done.error[1])
        else:
            record = json.dumps(done.record, indent=1) + "\n"
            (out / scaffold / f"{file_name(iid)}.json").write_text(record, encoding="utf-8")
            stats = done.stats
            outcome = Outcome(iid, "episode", None, stats["exit_status"], stats["detail"], stats)
            predictions.write(Prediction(iid, model, done.patch or ""))
        results.write(outcome)
        bar.advance(outcome)

    at_once = cfg.environment.pool_size if model.startswith(OPENAI_PREFIX) else 1
    workers = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix=scaffold)
    with Progress(progress, len(tasks)) as bar, workers:
        list(workers.map(instance, tasks))


def run_mini(
    cfg: EvalConfig,
    tasks: list[TaskInstance],
    results: Ledger[Outcome],
    predictions: Ledger[Prediction],
    out: Path,
    progress: bool,
) -> None:
    """The mini-swe-agent scaffold: mini runs each instance (`srl_agent.eval.mini_swe_agent`),
    `environment.pool_size` at once; its submission is left for `grade` like an episode's patch, an
    instance it ended on an exception is graded at once as an infrastructure error."""
    from srl_agent.eval import mini_swe_agent as mini

    model = model_string(cfg)
    replays = mini.Replays.from_model(model) if model.startswith(mini.REPLAY_PREFIX) else None
    if replays is not None:
        replays.check([t.instance_id for t in tasks])
    mini.load_package()  # a missing extra is one message before any instance

    def instance(task: TaskInstance) -> None:
        replay = replays.trajectories[task.instance_id] if replays is not None else None
        done = mini.run_instance(cfg, task, model, out / RECORDS["mini-swe-agent"], replay)
        iid, infra = task.instance_id, done.infrastructure_error
        outcome = Outcome(iid, "graded" if infra else "episode", "infrastructure_error" if infra else None,
                          done.exit_status, done.detail, done.stats)  # fmt: skip
        if not infra:
            predictions.write(Prediction(iid, model, done.submission))
        results.write(outcome)
        bar.advance(outcome)

    workers = ThreadPoolExecutor(max_workers=cfg.environment.pool_size, thread_name_prefix="mini")
    with Progress(progress, len(tasks)) as bar, mini.api_attempts(cfg.swe.mini.api_attempts), workers:
        list(workers.map(instance, tasks))


def grade(
    cfg: EvalConfig,
    tasks: list[TaskInstance],
    results: Ledger[Outcome],
    predictions: Ledger[Prediction],
    out: Path,
) -> None:
    """Grade every instance whose episode ended and is not graded yet (left for the harness, or an
    episode of a killed run); one ledger line each."""
    from environments.grader import grade_all

    pending = [t for t in tasks if _episode_done(results.get(t.instance_id))]
    if not pending:
        return
    patches = {iid: p.model_patch for iid, p in predictions.latest().items()}
    print(f"grading {len(pending)} patches", file=sys.stderr)
    started = time.perf_counter()
    grades = grade_all(
        [(t, patches.get(t.instance_id)) for t in pending],
        cfg.grading,
        env_cfg=cfg.environment,
        work_dir=out / "harness",
        run_prefix=f"eval-{out.name}",
        max_workers=cfg.environment.pool_size,
        model_name=file_name(model_string(cfg)),
    )
    seconds = (time.perf_counter() - started) / max(len(pending), 1)
    for iid, result in grades.items():
        results.write(_graded(results, iid, result, result.detail, seconds))


def _graded(results: Ledger[Outcome], iid: str, result: Any, detail: str, seconds: float = 0.0) -> Outcome:
    before = results.get(iid)
    assert before is not None  # graded after its episode line
    status: Status = _GRADE_STATUS[result.status] if result is not None else "infrastructure_error"
    grade = {**result.to_dict(), "seconds": seconds} if result is not None else None
    return Outcome(iid, "graded", status, before.exit_status, detail, before.episode, grade)


def _ran(outcome: Outcome) -> bool:
    """Whether an instance's outcome came of running the policy (not_evaluable is decided by the
    source and the grader alone)."""
    return outcome.status != "not_evaluable"


def _episode_done(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.phase == "episode"


def _finished(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.finished


def make_report(
    cfg: EvalConfig, tasks: list[TaskInstance], skipped: list[tuple[str, str]], results: Ledger[Outcome]
) -> dict[str, Any]:
    """Counts per status, resolve rates and episode statistics over the instances of this source."""
    outcomes = results.latest()
    ids = [t.instance_id for t in tasks] + [iid for iid, _ in skipped]
    statuses = {iid: (outcomes[iid].status if iid in outcomes else None) or "not_run" for iid in ids}
    counts = Counter(statuses.values())
    graded = sum(counts[s] for s in ("resolved", "unresolved", "empty_patch"))
    episodes = [o.episode for iid, o in outcomes.items() if iid in statuses and o.episode]
    localization = {}
    if cfg.swe.scaffold == "agentless":
        from srl_agent.eval.agentless import localization_summary

        stats = {iid: o.episode for iid, o in outcomes.items() if iid in statuses and o.episode}
        localization = {"localization": localization_summary(stats)}
    return {
        "model": model_string(cfg),
        "instances_source": cfg.swe.instances,
        "grader": cfg.grading.grader,
        "scaffold": cfg.swe.scaffold,
        "total": len(ids),
        **{s: counts[s] for s in STATUSES},
        "not_run": counts["not_run"],
        "resolve_rate": counts["resolved"] / graded if graded else 0.0,
        "resolve_rate_all": counts["resolved"] / len(ids) if ids else 0.0,
        "exit_statuses": dict(
            Counter(o.exit_status for o in outcomes.values() if o.instance_id in statuses and o.exit_status)
        ),
        "episodes": _episode_stats(episodes),
        **localization,
        "instances": statuses,
        "instance_details": {
            iid: {"exit_status": outcomes[iid].exit_status, "detail": outcomes[iid].detail}
            for iid in ids
            if iid in outcomes
        },
    }


def _episode_stats(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    if not episodes:
        return {"count": 0}
    keys = sorted(
        {k for e in episodes for k, v in e.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    )
    return {  # a key's mean over the episodes that have it (the agentless scores need a gold patch)
        "count": len(episodes),
        **{f"{k}_mean": statistics.fmean(e[k] for e in episodes if k in e) for k in keys},
    }


def write_report(report: dict[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [
        f"# SWE evaluation of `{report['model']}` ({report['scaffold']} scaffold, {report['grader']} grader)",
        "",
        "| total | resolved | unresolved | empty patch | infrastructure error | not evaluable | resolve rate |",
        "|---|---|---|---|---|---|---|",
        (
            f"| {report['total']} | {report['resolved']} | {report['unresolved']} | {report['empty_patch']} "
            f"| {report['infrastructure_error']} | {report['not_evaluable']} | {report['resolve_rate']:.1%} |"
        ),
    ]
    loc = report.get("localization")  # the agentless scaffold's
    recall = loc["recall"] if loc else {}
    lines += [*(_localization_lines(loc) if loc else []), "", "| instance | status | exit status |"]
    lines[-1] += " localization recall |" if loc else ""
    lines.append("|---|---|---|" + ("---|" if loc else ""))
    details = report["instance_details"]
    for iid, status in report["instances"].items():
        row = f"| {iid} | {status} | {(details.get(iid) or {}).get('exit_status') or ''} |"
        lines.append(row + (f" {recall[iid]:.2f} |" if iid in recall else " |" if loc else ""))
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _localization_lines(loc: dict[str, Any]) -> list[str]:
    """The report's table of how the agentless localization covers the gold patch's files."""
    scores = [f"{loc['recall_mean']:.1%}", *(str(loc[k]) for k in ("top1_hits", "any_hits", "all_hits"))]
    return [
        "",
        f"Localization against the gold patch's files ({loc['instances']} instances with a gold patch):",
        "",
        "| mean recall | first file a gold file | some gold file named | every gold file named |",
        "|---|---|---|---|",
        "| " + " | ".join(scores) + " |",
    ]


class Progress:
    """The episodes' bar with the running counts of their statuses (plain lines when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._bar = Bar(enabled, "[bold]episodes", "{task.description}")
        self._task = self._bar.add("", total)

    def __enter__(self) -> Self:
        self._bar.__enter__()
        return self

    def advance(self, outcome: Outcome) -> None:
        with self._lock:
            self.counts[outcome.status or outcome.exit_status or "?"] += 1
            text = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
            if self._bar.enabled:
                self._bar.advance(self._task, description=text)
            else:
                self._bar.print(f"{outcome.instance_id}: {outcome.status or outcome.exit_status} ({text})")

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)
