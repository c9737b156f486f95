"""Train a policy with SRL (default), RLVR or SFT: `python -m srl_agent.train --task {swe,math}`.

Reads top to bottom: resolve the config, make the run folder, load data and model, loop (roll out,
score, advantage, loss, step, log, save), then report where everything is.
"""

from __future__ import annotations

import argparse
import sys

from srl_agent.config import TrainConfig
from trajectories.config import add_config_arguments, dump_config, resolve_config, run_cli


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    parser = argparse.ArgumentParser(prog="python -m srl_agent.train", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["swe", "math"], required=True)
    parser.add_argument("--stage", choices=["srl", "rlvr", "sft"], default=None, help="default: srl")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    flags = [f"task={args.task}"] + ([f"stage={args.stage}"] if args.stage else [])
    return args, resolve_config(TrainConfig, args.config, flags + args.overrides)


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    print(f"srl_agent.train: the {cfg.stage} stage is not implemented yet (issue 4).", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_cli(main)
