"""`python -m trajectories {inspect,build} ...` (see trajectories/cli.py)."""

from trajectories.cli import main
from trajectories.config import run_cli

run_cli(main)
