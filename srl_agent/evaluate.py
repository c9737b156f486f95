"""Evaluate a model or checkpoint: `python -m srl_agent.evaluate --task {swe,math}`.

Two measurements:
- **Held-out step reward** (the default): how well the policy imitates the expert's next step.
- **SWE tasks solved as an agent** (`--task swe --instances [SOURCE]`, SOURCE default: the bundled
  tasks): one agent episode per instance in the Docker environments, patches graded by the official
  swebench harness (or `--grader fast`), predictions, trajectories and a report in `--out`; see
  `srl_agent.eval.swe`. `--model` takes a model name, HF id, local folder, run checkpoint,
  `replay:PATH` (recorded trajectories replayed through the same loop), or `openai:MODEL@URL`: a model
  behind an OpenAI-compatible chat API at URL (`http://HOST:PORT/v1`; `python -m srl_agent.serve
  CHECKPOINT` serves a checkpoint there with vLLM), asked with the same prompts (`srl_agent.remote`). `--json` prints the report as
  one JSON object on stdout (at least `total`, `resolved`, `resolve_rate`, `instances`).
  `--scaffold oracle`: the paper's oracle-file setting instead (`srl_agent.eval.oracle`);
  `--scaffold agentless`: its end-to-end setting, Agentless-mini's file localization then the oracle's
  repair (`srl_agent.eval.agentless`; `--samples K`: K of each, the patch chosen by majority vote);
  `--scaffold mini-swe-agent`: the mini-swe-agent package's agent in each instance's image against a
  served model, `--model openai:MODEL@URL` (`srl_agent.eval.mini_swe_agent`, the `scaffolds` extra).

For the step reward, it builds the same step examples as training (same `data` section, same split), prompts the model with
the same prompts, decodes one completion per example (greedy unless `eval.greedy=false`) and reports
the mean step reward and the format-error rate as one JSON object on stdout. `--checkpoint DIR` is a
shortcut for `model.name=DIR` (any run's checkpoints/best or checkpoints/last).

The step reward measures imitation of the expert's next step, the SRL training signal; the agent
evaluation measures what the field reports, the share of tasks resolved.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from environments.chat_api import is_chat_model, parse_model
from srl_agent.config import EvalConfig
from srl_agent.tasks import TASKS, resolve, task_spec
from trajectories.config import ConfigError, add_config_arguments, explain_config, resolve_config, run_cli

EXAMPLES = """\
examples:
  python -m srl_agent.evaluate --task math
  python -m srl_agent.evaluate --task math --checkpoint runs/math-srl/checkpoints/best
  python -m srl_agent.evaluate --task swe --checkpoint runs/swe-srl/checkpoints/best eval.output=swe_eval.jsonl
  python -m srl_agent.evaluate --task math eval.split=train data.max_val_examples=null
  python -m srl_agent.evaluate --task math --samples runs/qwen-math-eval/aime24.jsonl eval.output=graded.jsonl
  python -m srl_agent.evaluate --task math --benchmark amc23,aime24 --model runs/math-srl/checkpoints/best
  python -m srl_agent.evaluate --task math --benchmark amc23,aime24,aime25,minerva --model Qwen/Qwen2.5-7B-Instruct --k 32 --temperature 1.0 math.max_new_tokens=4096 --json
  python -m srl_agent.evaluate --task swe --instances --model replay:environments/tasks --grader fast
  python -m srl_agent.evaluate --task swe --instances environments/tasks/paginate --model runs/swe-srl/checkpoints/best
  python -m srl_agent.evaluate --task swe --instances princeton-nlp/SWE-bench_Verified --model Qwen/Qwen2.5-Coder-7B-Instruct --workers 8 swe.instance_ids=[astropy__astropy-12907]
  python -m srl_agent.evaluate --task swe --instances --scaffold oracle --model smollm2-135m --grader fast
  python -m srl_agent.evaluate --task swe --instances --scaffold agentless --model smollm2-135m --grader fast
  python -m srl_agent.evaluate --task swe --instances --scaffold mini-swe-agent --model openai:my-model@http://127.0.0.1:8000/v1 --grader fast
  python -m srl_agent.evaluate --task swe --instances --scaffold mini-swe-agent --model replay:environments/tasks swe.mini.mode=text
  python -m srl_agent.evaluate --task swe --instances princeton-nlp/SWE-bench_Verified --scaffold agentless --samples 8 --model Qwen/Qwen2.5-Coder-7B-Instruct generation.temperature=0.8
  python -m srl_agent.evaluate --task swe --instances --model openai:swe-srl-best@http://127.0.0.1:8000/v1 --grader fast --workers 4
  python -m srl_agent.evaluate --task swe --instances runs/factory/toolz swe.split=held_out --model runs/swe-sft/checkpoints/last --repeats 3
  python -m srl_agent.evaluate --task math --benchmark amc23 --model openai:Qwen/Qwen2.5-Math-7B-Instruct@http://gpu-box:8000/v1 --k 32 api.concurrency=32
"""


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, EvalConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m srl_agent.evaluate",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder (same as model.name=DIR)")
    parser.add_argument("--model", default=None,
                        help="model name, HF id, folder, checkpoint, replay:PATH or openai:MODEL@URL")  # fmt: skip
    parser.add_argument("--instances", nargs="?", const="bundled", default=None, metavar="SOURCE",
                        help="evaluate as an agent on these SWE tasks (no SOURCE: the bundled tasks)")  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=None, help="episodes in parallel (environment.pool_size)"
    )
    parser.add_argument("--grader", choices=["auto", "harness", "fast"], default=None, help="grading.grader")
    parser.add_argument("--out", default=None, help="output folder (swe.out; with --benchmark, math.out)")
    parser.add_argument("--scaffold", choices=["agent", "oracle", "agentless", "mini-swe-agent"], default=None,
                        help="swe.scaffold: act as an agent, edit the gold patch's files (oracle setting), "
                             "localize the files then edit them (agentless, the end-to-end setting), or "
                             "run mini-swe-agent against a served model (--model openai:MODEL@URL)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--repeats", type=int, default=None, metavar="K",
                        help="swe: run the evaluation K times, report mean and spread (swe.repeats)")  # fmt: skip
    parser.add_argument("--samples", default=None, metavar="FILE|K",
                        help="math: grade responses generated elsewhere (Qwen2.5-Math output JSONL), no model; "
                             "swe: the agentless scaffold's samples per instance (swe.samples)")  # fmt: skip
    parser.add_argument("--benchmark", default=None, metavar="NAMES",
                        help="math: final-answer accuracy on these benchmarks, comma-separated (math.benchmarks)")  # fmt: skip
    parser.add_argument("--k", type=int, default=None, help="math: samples per problem for avg@k (math.k)")
    parser.add_argument("--temperature", type=float, default=None, help="math: math.temperature")
    add_config_arguments(parser, "eval.split=train")
    args = parser.parse_args(argv)
    flags = [f"task={args.task}"]
    if args.samples is not None and task_spec(args.task).agent:  # swe: a count, not a file to grade
        flags.append(f"swe.samples={args.samples}")
    if args.benchmark is not None:
        names = [name.strip() for name in args.benchmark.split(",") if name.strip()]
        flags.append(f"math.benchmarks={json.dumps(names)}")
    for key, value in [("model.name", args.checkpoint or args.model), ("swe.instances", args.instances),
                       ("environment.pool_size", args.workers), ("grading.grader", args.grader),
                       ("math.out" if args.benchmark else "swe.out", args.out), ("math.k", args.k),
                       ("math.temperature", args.temperature), ("swe.scaffold", args.scaffold),
                       ("swe.repeats", args.repeats)]:  # fmt: skip
        if value is not None:  # as JSON, so a value YAML would misread (`replay:`) stays what was typed
            flags.append(f"{key}={json.dumps(value)}")
    cfg = resolve(resolve_config(EvalConfig, args.config, flags + args.overrides))
    if cfg.swe.instances is not None and not task_spec(cfg.task).agent:
        raise ConfigError(f"swe.instances: --task {cfg.task} has no agent evaluation (it is for --task swe)")
    if cfg.swe.scaffold != "agent" and cfg.swe.instances is None:
        raise ConfigError(
            f"swe.scaffold: the {cfg.swe.scaffold} scaffold runs on SWE instances: add --instances"
        )
    if cfg.swe.scaffold == "mini-swe-agent":
        from srl_agent.eval.mini_swe_agent import check_model

        check_model(cfg.model.init_from or cfg.model.name)
        if cfg.environment.docker_hosts:
            raise ConfigError(
                "environment.docker_hosts: the mini-swe-agent scaffold starts its containers with the docker "
                "CLI on the default engine (DOCKER_HOST); leave docker_hosts empty"
            )
    if cfg.swe.repeats > 1 and cfg.swe.instances is None:
        raise ConfigError(
            "swe.repeats (--repeats): repeats are of a SWE evaluation on instances: add --instances"
        )
    if cfg.swe.samples != 1 and cfg.swe.scaffold != "agentless":
        raise ConfigError(
            f"swe.samples: only the agentless scaffold samples several responses (--scaffold agentless), "
            f"not the {cfg.swe.scaffold} scaffold"
        )
    if is_chat_model(model := cfg.model.init_from or cfg.model.name):
        parse_model(model)  # a bad form names --model before anything loads
        if cfg.swe.instances is None and not cfg.math.benchmarks and args.samples is None:
            raise ConfigError(
                f"model.name (--model): {model} is a model behind a chat API: it answers the SWE scaffolds "
                "(--instances) and the math benchmarks (--benchmark); the held-out step reward needs its "
                "weights and tokenizer (a model name, folder or checkpoint)"
            )
    if cfg.math.benchmarks and not task_spec(cfg.task).final_answers:
        raise ConfigError(f"math.benchmarks: --task {cfg.task} solutions have no final answers to check")
    if cfg.math.benchmarks and args.samples is not None:
        raise ConfigError("--samples grades responses made elsewhere; it takes no --benchmark")
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    if args.dry_run:
        print(explain_config(cfg), end="")
        return 0
    if args.samples is not None and not task_spec(cfg.task).agent:
        return grade_samples_file(args.samples, cfg, args.json)
    if cfg.math.benchmarks:
        from srl_agent.eval.math_bench import evaluate_benchmarks

        return print_report(
            evaluate_benchmarks(cfg, progress=not args.json and sys.stderr.isatty()), args.json
        )
    if cfg.swe.instances is None:
        print(json.dumps(evaluate(cfg)))
        return 0
    from srl_agent.eval.swe import evaluate_repeats, evaluate_swe

    progress = not args.json and sys.stderr.isatty()
    if cfg.swe.repeats > 1:
        summary = evaluate_repeats(cfg, progress)
        print(json.dumps(summary) if args.json else (Path(summary["out"]) / "repeats.md").read_text(), end="")
        return 0
    return print_report(evaluate_swe(cfg, progress), args.json)


def print_report(report: dict[str, object], as_json: bool) -> int:
    """A report on stdout: one JSON object, or the markdown its output folder holds."""
    if as_json:
        print(json.dumps(report))
    else:
        print((Path(str(report["out"])) / "report.md").read_text(encoding="utf-8"), end="")
    return 0


def grade_samples_file(path: str, cfg: EvalConfig, as_json: bool) -> int:
    """`--samples FILE`: the report of `srl_agent.eval.math_report.grade_samples` on stdout (one JSON object
    with `--json`, else markdown; without the per-row verdicts, which `eval.output` writes as JSONL)."""
    from srl_agent.eval.math_report import grade_samples, markdown

    if not task_spec(cfg.task).final_answers:
        raise ConfigError(f"--samples grades final answers, which --task {cfg.task} solutions do not have")
    report = grade_samples(path, cfg.math.check_timeout, cfg.math.lenient)
    write_rows(cfg.eval.output, report.pop("rows"))
    if as_json:
        print(json.dumps(report))
    else:
        print(markdown(f"Graded samples: `{path}`", {Path(path).stem: report}, None), end="")
    return 0


def evaluate(cfg: EvalConfig) -> dict[str, object]:
    """The mean step reward and format-error rate of `cfg.model` on the `cfg.eval.split` examples."""
    import torch

    from srl_agent.data import load_splits
    from srl_agent.generation.loader import load_inference
    from srl_agent.rollouts import evaluate_examples

    spec = task_spec(cfg.task)
    stage = spec.stage("srl")  # the step reward is what this evaluation measures
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="srl-eval-") as work:
        source = spec.data_source(cfg.data.source)
        splits = load_splits(cfg.task, source, cfg.data, Path(work), need_train=cfg.eval.split == "train")
    examples = splits.val if cfg.eval.split == "val" else splits.train
    if not examples:
        print(f"error: no {cfg.eval.split} examples in {splits.source}", file=sys.stderr)
        return {"examples": 0}
    inference = load_inference(
        cfg.model.init_from or cfg.model.name, cfg.model, stage, cfg.generation, cfg.prompt, cfg.seed
    )
    reward = stage.reward(cfg.reward, cfg.prompt.prefill)
    started = time.perf_counter()
    result = evaluate_examples(
        examples,
        inference.prompts,
        inference.generator,
        reward,
        cfg.generation.max_new_tokens,
        cfg.generation.temperature,
        greedy=cfg.eval.greedy,
    )
    write_rows(cfg.eval.output, result.rows)
    return {
        "model": cfg.model.init_from or cfg.model.name,
        "split": cfg.eval.split,
        "source": splits.source,
        **result.summary,
        "seconds": round(time.perf_counter() - started, 2),
    }


def write_rows(path: str | None, rows: list[dict[str, object]]) -> None:
    """The per-example results as JSONL at `eval.output` (nothing when it is not set)."""
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
