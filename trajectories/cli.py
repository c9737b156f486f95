"""Look at expert data (`inspect`) and turn it into SRL step examples (`build`).

    python -m trajectories inspect environments/tasks/paginate/expert.traj --json
    python -m trajectories build trajectories/data/math_steps.jsonl --task math --out runs/math-steps
    python -m trajectories build hf:SWE-bench/SWE-smith-trajectories --task swe --out runs/swe hf_split=xml

A source is a file, a folder, a glob, `hf:NAME` or a Hub id `owner/name`. Both commands take
`--config FILE`, `--dry-run` and `KEY=VALUE` overrides of `BuildConfig` (reader options such as
`unknown_tools=skip` or `hf_split=xml` matter to `inspect` too). `inspect --json` prints exactly one
JSON object on stdout: `format` (the most common record format), `formats`, `trajectories` (items
read: trajectories or math problems), `kinds`, `steps`, `tools` (canonical name -> count),
`original_tools`, `format_error_turns`, `skipped` (list of `{record, reason}`). `build` writes
`train.jsonl`, `validation.jsonl`, `report.json` (kept and skipped) and `config.yaml` into `--out`,
and exits 1 when no example came out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from trajectories.build import BuildConfig, build
from trajectories.config import add_config_arguments, explain_config, resolve_config, run_cli, save_config
from trajectories.errors import SourceError
from trajectories.math_steps import MathProblem


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, BuildConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m trajectories",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect",
        help="read a source and summarise it",
        description="Read a source and summarise it: formats, steps, tools, skipped records.",
        epilog="example:\n  python -m trajectories inspect environments/tasks/paginate/expert.traj --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("source", help="file, folder, glob, hf:NAME or owner/name")
    inspect.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_config_arguments(inspect, "unknown_tools=skip")
    make = commands.add_parser(
        "build",
        help="write train/validation step examples",
        description="Cut a source into SRL step examples: train.jsonl, validation.jsonl, report.json.",
        epilog="example:\n  python -m trajectories build trajectories/data/math_steps.jsonl --task math --out runs/math-steps",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    make.add_argument("source", help="file, folder, glob, hf:NAME or owner/name")
    make.add_argument("--task", choices=["swe", "math"], required=True)
    make.add_argument("--out", type=Path, required=True, help="output folder")
    add_config_arguments(make, "context_steps=1")
    # Overrides may follow options (`build SRC --task swe --out d k=v`), which argparse's greedy
    # positional matching leaves over; collect them here.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, resolve_config(BuildConfig, args.config, [*args.overrides, *extra])


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    if args.dry_run:
        print(explain_config(cfg), end="")
        return 0
    try:
        if args.command == "inspect":
            return _inspect(args.source, cfg, as_json=args.json)
        return _build(args.source, args.task, args.out, cfg)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def inspect_source(source: str, cfg: BuildConfig) -> dict[str, Any]:
    """The summary `inspect` prints, streaming over the source."""
    reader = cfg.reader(source)
    kinds: Counter = Counter()
    tools: Counter = Counter()
    original: Counter = Counter()
    steps = errors = 0
    for item in reader:
        steps += len(item.steps)
        if isinstance(item, MathProblem):
            kinds["math"] += 1
            continue
        kinds["swe"] += 1
        errors += item.meta.get("format_error_turns", 0)
        for s in item.steps:
            tools[s.action.name] += 1
            original[s.action.original_name or s.action.name] += 1
    fmt = reader.formats.most_common(1)[0][0] if reader.formats else None
    return {
        "source": source,
        "format": fmt,
        "formats": dict(reader.formats),
        "trajectories": sum(kinds.values()),
        "kinds": dict(kinds),
        "steps": steps,
        "tools": dict(tools.most_common()),
        "original_tools": dict(original.most_common()),
        "format_error_turns": errors,
        "skipped": [s.to_dict() for s in reader.skipped],
    }


def _inspect(source: str, cfg: BuildConfig, as_json: bool) -> int:
    summary = inspect_source(source, cfg)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(f"{source}: {summary['trajectories']} read {summary['kinds']}, {summary['steps']} steps")
    print(f"  formats: {summary['formats']}")
    if summary["tools"]:
        print(f"  tools: {summary['tools']}")
        print(f"  original tool names: {summary['original_tools']}")
    if summary["format_error_turns"]:
        print(f"  format-error turns left out: {summary['format_error_turns']}")
    _print_skipped(summary["skipped"])
    return 0


def _build(source: str, task: str, out: Path, cfg: BuildConfig) -> int:
    report = build(source, task, out, cfg)  # type: ignore[arg-type]
    save_config(cfg, out / "config.yaml")
    (out / "report.json").write_text(
        json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    ex, groups = report.examples, report.groups
    print(
        f"{source} -> {out}: {ex['train']} train / {ex['validation']} validation examples from "
        f"{groups['train']} / {groups['validation']} groups ({report.read} read, {report.formats and dict(report.formats)}) "
        f"in {report.seconds:.1f}s"
    )
    _print_skipped([s.to_dict() for s in report.skipped])
    if not ex["train"] and not ex["validation"]:
        print(f"error: no {task} step examples came out of {source}", file=sys.stderr)
        return 1
    return 0


def _print_skipped(skipped: list[dict[str, str]], show: int = 10) -> None:
    """Counts per reason, then the first records (every one is in --json / report.json)."""
    if not skipped:
        return
    reasons = Counter(s["reason"] for s in skipped)
    print(f"  skipped {len(skipped)}:")
    for reason, n in reasons.most_common(show):
        first = next(s["record"] for s in skipped if s["reason"] == reason)
        print(f"    {n} x {reason}  (first: {first})")
    if len(reasons) > show:
        print(f"    ... {len(reasons) - show} more reasons (all records listed in --json / report.json)")


if __name__ == "__main__":
    run_cli(main)
