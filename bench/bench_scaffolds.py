"""The same held-out SWE tasks through every scaffold: the embedded default and the learning benchmark's
checkpoints, each run by the agent loop, the oracle-file repair, agentless and mini-swe-agent.

    python bench/bench_scaffolds.py --bench runs/bench-swe-6 [--arms base,sft] [--set seen]
        [--scaffolds agent,oracle,agentless,mini-swe-agent] [--out runs/scaffolds-6] [--threads 2]
        [--prompted served|local]

What runs (every one through `python -m srl_agent.evaluate --task swe`, with the learning benchmark's
`evaluate` settings, `BENCH/configs/evaluate.yaml`: greedy, the same window, turns and tokens; every
model call of every scaffold is capped at its `generation.max_new_tokens`, the oracle's and agentless's
answers too, where Agentless-mini allows 4,096: a small model that writes to the cap would take hours
of a 2-core machine there, and a localization or a one-line repair needs far fewer):
- Tasks: the held-out set `--set` of a finished learning benchmark (`bench/bench_swe_learning.py`),
  `BENCH/data/split.json`, its task folders `BENCH/data/repos`.
- Models: the final checkpoint of each of `--arms` (`BENCH/ARM/arm.json`; `base` is the embedded
  default, `train.model.name`).
- Scaffolds: `agent` (the SRL agent loop the policy was trained for; its evaluation is the benchmark's
  own, `BENCH/ARM/eval-SET`, taken as it is: the same command), `oracle` (one repair of the gold
  patch's files), `agentless` (the model localizes up to 5 files, then the repair; the paper's
  end-to-end column, greedy, one sample), `mini-swe-agent` (the package itself, bash only, text mode;
  the agent's limits: as many model calls as `agent.max_steps`, `agent.time_limit` seconds, the same
  completion length). The last three ask the model served by `python -m srl_agent.serve` on a local
  port (`--model openai:MODEL@URL`), one server per model, `environment.pool_size` instances at once;
  with `--prompted local` oracle and agentless load the checkpoint themselves instead.

The table (`OUT/summary.md`, `summary.json`): per model and scaffold the resolved count, the rate with a
95% bootstrap interval over tasks, exit statuses and (agentless) localization recall. Each evaluation
resumes from its folder `OUT/ARM/SCAFFOLD`; `--report` tables what is done. `OUT/run.json` holds the
benchmark, the set and `--prompted`: a rerun into OUT with others is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_outcomes import bootstrap, machine, mean, run_json
from bench_swe_learning import SETS, evaluated

from trajectories.config import ConfigError
from trajectories.ledger import check_run_folder

REPO = Path(__file__).resolve().parents[1]
SCAFFOLDS = ("agent", "oracle", "agentless", "mini-swe-agent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a learning benchmark's --out folder")
    parser.add_argument("--arms", default="base,sft", help="comma-separated arms of that benchmark")
    parser.add_argument("--set", default="seen", choices=list(SETS), help="the held-out set")
    parser.add_argument(
        "--scaffolds", default=",".join(SCAFFOLDS), help="comma-separated, any of " + ", ".join(SCAFFOLDS)
    )
    parser.add_argument("--out", type=Path, default=None, help="default: BENCH-scaffolds")
    parser.add_argument("--port", type=int, default=8011, help="where the model is served")
    parser.add_argument(
        "--prompted", choices=["served", "local"], default="served",
        help="how oracle and agentless reach the model: the server mini-swe-agent asks (instances at once) "
        "or loaded in the evaluation (one instance at a time; for models vLLM cannot serve)",
    )  # fmt: skip
    parser.add_argument("--report", action="store_true", help="only table what is done")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each command")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    out = args.out or args.bench.with_name(args.bench.name + "-scaffolds")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    scaffolds = [s.strip() for s in args.scaffolds.split(",") if s.strip()]
    if unknown := [s for s in scaffolds if s not in SCAFFOLDS]:
        raise SystemExit(f"error: --scaffolds: unknown {unknown}; the scaffolds are {', '.join(SCAFFOLDS)}")
    split_path = args.bench / "data" / "split.json"
    if not split_path.is_file():
        raise SystemExit(
            f"error: --bench: {args.bench} holds no learning benchmark ({split_path} is missing)"
        )
    ids = json.loads(split_path.read_text(encoding="utf-8"))[args.set]
    settings = yaml.safe_load((args.bench / "configs" / "evaluate.yaml").read_text(encoding="utf-8")) or {}
    records = {arm: finished_arm(args.bench, arm) for arm in arms}
    results_path = out / "results.json"
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    identity = {"bench": str(args.bench.resolve()), "set": args.set, "prompted": args.prompted}
    try:  # the rows of one table come from one benchmark, one set and one way of asking the model
        check_run_folder(out, identity, holds_results=bool(results), option="--out")
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if not args.report:
        for arm in arms:
            todo = [s for s in scaffolds if f"{arm}/{s}" not in results]
            model = records[arm]["model"]
            if "agent" in todo:  # the benchmark's own evaluation, the same command
                own = records[arm]["eval"][args.set]
                results[f"{arm}/agent"] = {"model": model, "report": own["report"], "seconds": own["seconds"]}
                results_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
            local = [s for s in todo if s in ("oracle", "agentless") and args.prompted == "local"]
            remote = [s for s in todo if s != "agent" and s not in local]
            with served(model, args.port) if remote else contextlib.nullcontext(model) as address:
                for scaffold in local + remote:
                    started = time.perf_counter()
                    report = evaluate(args, model if scaffold in local else address, arm, scaffold, ids,
                                      settings, out)  # fmt: skip
                    results[f"{arm}/{scaffold}"] = {
                        "model": model,
                        "report": report,
                        "seconds": time.perf_counter() - started,
                    }
                    results_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    summary = summarize(results, ids, args.set, args.bench)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    table = markdown(summary)
    (out / "summary.md").write_text(table, encoding="utf-8")
    print(table)


def finished_arm(bench: Path, arm: str) -> dict[str, Any]:
    """The record of an arm the benchmark has trained and evaluated: its `model` is the final checkpoint
    (the base model's name for `base`), its `eval` the agent scaffold's reports."""
    record = bench / arm / "arm.json"
    if not evaluated(record):
        raise SystemExit(
            f"error: --arms: {bench} has no finished arm {arm} ({record} is missing or incomplete)"
        )
    return json.loads(record.read_text(encoding="utf-8"))


def evaluate(args: argparse.Namespace, model: str, arm: str, scaffold: str, ids: list[str],
             settings: dict[str, Any], out: Path) -> dict[str, Any]:  # fmt: skip
    """One model (`--model`: the served one's `openai:MODEL@URL`, or the checkpoint itself) through one
    scaffold on the tasks: the evaluation's report."""
    command = [
        "srl_agent.evaluate", "--task", "swe", "--config", str(args.bench / "configs" / "evaluate.yaml"),
        "--instances", str(args.bench / "data" / "repos"), "--scaffold", scaffold, "--model", model,
        "--out", str(out / arm / scaffold), "--json", "seed=0", "swe.split=all",
        f"swe.instance_ids={json.dumps(ids)}",
    ]  # fmt: skip
    tokens = (settings.get("generation") or {}).get("max_new_tokens", 512)
    if scaffold in ("oracle", "agentless"):
        command.append(f"swe.oracle_max_new_tokens={tokens}")
    if scaffold == "mini-swe-agent":
        agent = settings.get("agent") or {}
        limits = {"temperature": 0.0, "max_tokens": tokens}
        command += ["swe.mini.mode=text", f"swe.mini.step_limit={agent.get('max_steps', 8)}",
                    f"swe.mini.wall_time_limit={int(agent.get('time_limit', 900))}",
                    f"swe.mini.model_kwargs={json.dumps(limits)}"]  # fmt: skip
    return run_json(command)


@contextlib.contextmanager
def served(model: str, port: int) -> Iterator[str]:
    """`python -m srl_agent.serve MODEL --port PORT` running until the block ends; yields the `--model`
    string it prints once the server answers."""
    if answers(f"http://127.0.0.1:{port}/v1/models"):  # its answers would be taken for this model's
        raise SystemExit(f"error: --port: a server already answers on port {port}; stop it or pick another")
    command = [sys.executable, "-m", "srl_agent.serve", model, "--port", str(port)]
    print("+ " + " ".join(command[1:]), flush=True)
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        address = next((line.strip() for line in proc.stdout or () if line.startswith("openai:")), None)
        if address is None:
            raise SystemExit(
                f"error: `srl_agent.serve {model}` exited with {proc.wait()} before naming its address"
            )
        # the server logs each request to stdout: read on, or a full pipe would stall it
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        deadline = time.monotonic() + 900
        while not answers(f"http://127.0.0.1:{port}/v1/models"):
            if proc.poll() is not None:
                raise SystemExit(f"error: the server of {model} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"error: the server of {model} did not answer on port {port} in 900 s")
            time.sleep(2)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def summarize(results: dict[str, Any], ids: list[str], set_name: str, bench: Path) -> dict[str, Any]:
    rng = random.Random(0)
    draws = [[rng.randrange(len(ids)) for _ in ids] for _ in range(2000)]
    rows = []
    for key, result in results.items():
        arm, scaffold = key.split("/", 1)
        report = result["report"]
        statuses = report.get("instances", {})
        v = [1.0 if statuses.get(iid) == "resolved" else 0.0 for iid in ids]
        localization = report.get("localization") or {}
        rows.append({
            "arm": arm,
            "scaffold": scaffold,
            "model": result["model"],
            "tasks": len(ids),
            "resolved": int(sum(v)),
            "resolve_rate": mean(v),
            "ci95": bootstrap(lambda idx, v=v: mean([v[i] for i in idx]), draws),
            "statuses": dict(sorted(Counter(statuses.get(iid, "missing") for iid in ids).items())),
            "exit_statuses": report.get("exit_statuses"),
            "localization_recall": localization.get("recall_mean"),
            "seconds": result["seconds"],
        })  # fmt: skip
    arms = list(dict.fromkeys(row["arm"] for row in rows))  # each model's scaffolds together, in order
    rows.sort(key=lambda row: (arms.index(row["arm"]), SCAFFOLDS.index(row["scaffold"])))
    return {"machine": machine(), "bench": str(bench), "set": set_name, "rows": rows}


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Every scaffold on held-out set {summary['set']} of {summary['bench']}",
        "",
        f"Machine: {summary['machine']}. Greedy, one sample; intervals: bootstrap over tasks, 2000 draws.",
        "",
        "| model | scaffold | resolved | rate | 95% CI | grades | exit statuses | localization recall | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        grades = ", ".join(f"{k} {n}" for k, n in r["statuses"].items())
        exits = ", ".join(f"{k} {n}" for k, n in sorted((r["exit_statuses"] or {}).items()))
        recall = "" if r["localization_recall"] is None else f"{r['localization_recall']:.3f}"
        lines.append(
            f"| {r['arm']} | {r['scaffold']} | {r['resolved']}/{r['tasks']} | {r['resolve_rate']:.3f} "
            f"| [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {grades} | {exits} | {recall} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
