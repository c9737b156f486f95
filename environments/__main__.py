"""Command line of the environments package.

    python -m environments doctor                                # can this machine run environments?
    python -m environments build [--rebuild] [--dataset PATH]    # base image + every bundled task's image
    python -m environments replay TRAJ [--instance ID] [--json]  # replay a trajectory, grade its patch
    python -m environments check-experts SOURCE [--tasks TASKS] [--out DIR] [--workers N] [--json]
    python -m environments make-tasks SOURCE --out DIR [--max-tasks N] [--seed S] [--workers N] [--json]

`check-experts` replays every trajectory of SOURCE on its task and keeps those that resolve it
(`environments.expert_check`). `make-tasks` makes validated bug-injection tasks with expert
trajectories from a Python repository (`environments.factory.make_tasks`).

`--help` of each command ends with examples, which run from the repository root (`EXAMPLES`).

Every command takes the typed config (`--config FILE`, `--dry-run`, dotted `KEY=VALUE` overrides) with
four sections: `environment` (`EnvConfig`: images, container limits, shell, the pool's size, which
`--workers` sets), `grading` (`GradingConfig`: grader and test timeout, as evaluation and training
grade), e.g. `grading.grader=harness environment.memory=4g`, `replay` (`ReplayConfig`: work_dir, max
steps), and `experts` (`ExpertCheckConfig`: the task source and output folder of `check-experts`; its
options set the same fields).

Exit status: 0 success (for `replay`: the patch resolved the task), 1 failure (a doctor check failed,
and it names the fix; a build failed; the replayed patch did not resolve the task; the engine is
unreachable), 2 bad input (config, trajectory file, instance). `replay --json` prints exactly one JSON
object on stdout, with at least `instance_id`, `steps_replayed`, `patch` and `resolved`; everything
else goes to stderr. `check-experts` exits 0 when it ran, however many trajectories it dropped (the
summary and `DIR/report.json` list them by reason; `--json` prints the report as one JSON object), 2
on a source or task source that cannot be read, 1 when the engine is unavailable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pydantic import Field

from environments.chat_api import is_chat_model, parse_model
from environments.config import EnvConfig, GradingConfig
from environments.expert_check import ExpertCheckConfig
from environments.factory.make_tasks import MakeTasksConfig
from environments.replay import ReplayConfig
from trajectories.config import Section, add_config_arguments, explain_config, resolve_config, run_cli

# Shown under "examples:" in --help (the top level shows them all); each one runs as written from the
# repository root, `build` first.
EXAMPLES = {
    "doctor": ["python -m environments doctor"],
    "build": [
        "python -m environments build",
        "python -m environments build --dataset runs/tasks.json  # and the swebench dataset of the tasks",
    ],
    "replay": [
        "python -m environments replay environments/tasks/paginate/expert.traj --json grading.grader=fast",
        "python -m environments replay environments/tasks/intervals/expert.traj replay.work_dir=runs/replay",
    ],
    "check-experts": [
        "python -m environments check-experts 'environments/tasks/*/expert.traj' --out runs/expert-check",
        (
            "python -m environments check-experts environments/tasks/paginate/expert.traj --json "
            "--out runs/harness-check grading.grader=harness"
        ),
    ],
    "make-tasks": [
        (
            "python -m environments make-tasks environments/tasks/intervals/repo --out runs/tasks-intervals "
            "--max-tasks 5"
        ),
        "python -m environments make-tasks pypi:toolz==1.0.0 --out runs/tasks-toolz --max-tasks 100 --workers 2",
    ],
}


class EnvironmentsCliConfig(Section):
    environment: EnvConfig = Field(default_factory=EnvConfig)
    """Images, container limits, the shell and the pool."""
    grading: GradingConfig = Field(default_factory=GradingConfig)
    """How `replay` and `check-experts` grade a patch."""
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    """How `replay` runs, and where the harness writes."""
    experts: ExpertCheckConfig = Field(default_factory=ExpertCheckConfig)
    """Where `check-experts` finds tasks and where it writes."""
    tasks: MakeTasksConfig = Field(default_factory=MakeTasksConfig)
    """What `make-tasks` makes tasks from, how many, and where it writes them."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow options (`replay T --json grading.grader=fast`), which argparse alone
    # does not take once the positionals have been consumed.
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    cfg = resolve_config(EnvironmentsCliConfig, args.config, args.overrides)
    if hasattr(args, "configure"):  # options that set config fields, applied after the overrides
        args.configure(args, cfg)
    if args.dry_run:
        print(explain_config(cfg), end="")
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from environments.docker_engine import EngineUnavailable

    try:
        return args.run(args, cfg)
    except EngineUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    every_example = [line for lines in EXAMPLES.values() for line in lines]
    parser = argparse.ArgumentParser(
        prog="python -m environments",
        description=__doc__,
        epilog=_examples(every_example),
        formatter_class=raw,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, epilog=_examples(EXAMPLES[name]),
                                   formatter_class=raw)  # fmt: skip

    doctor = command("doctor", "check the engine, the base image and that a container runs")
    doctor.set_defaults(run=run_doctor)

    build = command("build", "build the base image and the bundled tasks' images (cached)")
    build.add_argument("--rebuild", action="store_true", help="rebuild even when the inputs did not change")
    build.add_argument(
        "--dataset",
        default=None,
        metavar="PATH",
        help="also write the tasks' swebench instances to PATH (.json), the dataset of "
        "`python -m swebench.harness.run_evaluation -d PATH -p gold -id RUN_ID`",
    )
    build.set_defaults(run=run_build)

    replay = command("replay", "replay a trajectory in a fresh environment and grade its patch")
    replay.add_argument("trajectory", help="a .traj file (or any single-trajectory file the readers know)")
    replay.add_argument("--instance", default=None, help="bundled task id (default: the trajectory's own)")
    replay.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    replay.set_defaults(run=run_replay)

    check = command(
        "check-experts", "replay every trajectory of a source; keep those that resolve their task"
    )
    check.add_argument("source", help="trajectories: a file, folder, glob or HF dataset id the readers know")
    check.add_argument("--tasks", default=None, metavar="TASK_SOURCE",
                       help="where the tasks are (experts.tasks; default: the bundled tasks)")  # fmt: skip
    check.add_argument("--out", default=None, metavar="DIR", help="output folder (experts.out)")
    check.add_argument(
        "--workers", type=_positive, default=None, metavar="N", help="replays at once (environment.pool_size)"
    )
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.set_defaults(run=run_check_experts, configure=configure_check)

    make = command(
        "make-tasks", "make validated bug-injection tasks with expert trajectories from a repository"
    )
    make.add_argument("source", help="a local folder, pypi:NAME==VERSION or a git URL (tasks.source)")
    make.add_argument("--out", default=None, metavar="DIR", help="output folder (tasks.out)")
    make.add_argument("--max-tasks", type=_positive, default=None, metavar="N", help="tasks.max_tasks")
    make.add_argument("--seed", type=int, default=None, metavar="S", help="tasks.seed")
    make.add_argument("--test-cmd", default=None, metavar="CMD", help="tasks.test_cmd")
    make.add_argument("--split-by", choices=["task", "file", "repo"], default=None, help="tasks.split_by")
    make.add_argument(
        "--modifiers",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        metavar="NAMES",
        help="only these bug modifiers, comma-separated (tasks.modifiers; default: SWE-smith's all)",
    )
    make.add_argument(
        "--issue-model",
        default=None,
        metavar="MODEL",
        help="a model writes the problem statements: openai:NAME@URL (the OpenAI-compatible API at URL,"
        " e.g. http://127.0.0.1:8000/v1), or NAME on the server at tasks.issue_api_base",
    )
    make.add_argument(
        "--statements",
        choices=["test", "template", "template-line"],
        default=None,
        help="how statements read without --issue-model: a failing test and its output, a short"
        " template naming the file, the function and the failing tests, or that template quoting the"
        " first line the bug changed (tasks.statements)",
    )
    make.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="candidates at once (environment.pool_size)",
    )
    make.add_argument("--json", action="store_true", help="print the report as one JSON object")
    make.set_defaults(run=run_make_tasks, configure=configure_make)

    for sub in (doctor, build, replay, check, make):
        add_config_arguments(sub, "grading.grader=fast")
    return parser


def _examples(lines: list[str]) -> str:
    return "examples:\n" + "".join(f"  {line}\n" for line in lines)


def run_doctor(args: argparse.Namespace, cfg: EnvironmentsCliConfig) -> int:
    from environments.doctor import diagnose, format_checks

    checks = diagnose(cfg.environment)
    print(format_checks(checks))
    return 0 if all(check.ok for check in checks) else 1


def run_build(args: argparse.Namespace, cfg: EnvironmentsCliConfig) -> int:
    from environments.images import ImageBuildError
    from environments.tasks.bundled import build_images, load_tasks, write_dataset

    tasks = load_tasks()
    try:
        images = build_images(tasks, cfg.environment, rebuild=args.rebuild)
    except ImageBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"base image: {cfg.environment.base_image}")
    for task, image in zip(tasks, images, strict=True):
        print(f"{task.instance_id}: {image}")
    if args.dataset:
        print(f"dataset: {write_dataset(tasks, args.dataset)}")
    return 0


def run_replay(args: argparse.Namespace, cfg: EnvironmentsCliConfig) -> int:
    from environments.replay import ReplayError, check_instance, load_trajectory, replay
    from environments.tasks.bundled import TaskError, get_task

    try:
        trajectory = load_trajectory(args.trajectory)
        instance_id = args.instance or trajectory.instance_id
        if not instance_id:
            raise ReplayError(f"{args.trajectory} names no instance; pass --instance ID")
        task = get_task(instance_id)
        check_instance(trajectory, task)
    except (ReplayError, TaskError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = replay(trajectory, task, cfg.replay, cfg.environment, cfg.grading)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        grade = result.grade
        print(f"{result.instance_id}: replayed {result.steps_replayed}/{result.steps_total} steps, "
              f"{'submitted' if result.submitted else 'no submit'}, "
              f"{result.observations_matched}/{result.observations_recorded} observations as recorded")  # fmt: skip
        for error in result.tool_errors:
            print(f"  step {error.step} ({error.tool}) failed: {error.observation.splitlines()[0][:200]}")
        print(f"{grade.grader} grade: {grade.status}" + (f" ({grade.detail})" if grade.detail else ""))
    return 0 if result.resolved else 1


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def configure_check(args: argparse.Namespace, cfg: EnvironmentsCliConfig) -> None:
    """`--tasks` and `--out` set their `experts` fields, `--workers` `environment.pool_size`, after the
    overrides."""
    for name in ("tasks", "out"):
        if getattr(args, name) is not None:
            setattr(cfg.experts, name, getattr(args, name))
    if args.workers is not None:
        cfg.environment.pool_size = args.workers


def run_check_experts(args: argparse.Namespace, cfg: EnvironmentsCliConfig) -> int:
    from environments.expert_check import CheckInputError, check_experts, format_report

    try:
        report = check_experts(args.source, cfg.experts, cfg.replay, cfg.environment, cfg.grading)
    except CheckInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def configure_make(args: argparse.Namespace, cfg: EnvironmentsCliConfig) -> None:
    """The options of `make-tasks` set their `tasks` fields (`--workers`: `environment.pool_size`)."""
    cfg.tasks.source = args.source
    for name in ("out", "max_tasks", "seed", "test_cmd", "split_by", "modifiers", "statements"):
        if getattr(args, name) is not None:
            setattr(cfg.tasks, name, getattr(args, name))
    if args.workers is not None:
        cfg.environment.pool_size = args.workers
    if args.issue_model is not None:
        if is_chat_model(args.issue_model):
            parse_model(args.issue_model, "--issue-model")  # its ConfigError, before the field's own
        cfg.tasks.issue_model = args.issue_model


def run_make_tasks(args: argparse.Namespace, cfg: EnvironmentsCliConfig) -> int:
    from environments.factory.issues import IssueWriterError, writer_for
    from environments.factory.make_tasks import make_tasks
    from environments.factory.source import SourceError

    writer = None
    if cfg.tasks.issue_model:
        writer = writer_for(cfg.tasks.issue_model, cfg.tasks.issue_api_base, cfg.tasks.issue_api)
        try:
            writer.check()
        except IssueWriterError as e:
            print(f"error: --issue-model: {e}", file=sys.stderr)
            return 2
    try:
        report = make_tasks(cfg.tasks, cfg.environment, progress=not args.json, writer=writer)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        dropped = ", ".join(f"{k} {v}" for k, v in report["dropped"].items()) or "none"
        print(f"{report['tasks']} tasks from {report['candidates']} candidates ({report['yield']:.0%} kept) "
              f"in {report['seconds']['total']:.0f} s; dropped: {dropped}; output in {report['out']}")  # fmt: skip
        if report["failure"]:
            print(f"failed: {report['failure']}")
    return 0 if not report["failure"] else 1


if __name__ == "__main__":
    run_cli(main)
