"""`python -m trajectories inspect|build ...`: the commands are in trajectories/cli.py (`--help` lists them)."""

from trajectories.cli import main
from trajectories.config import run_cli

run_cli(main)
