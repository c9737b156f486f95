"""The typed config system: defaults, YAML layer, dotted overrides, errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest
import yaml
from pydantic import Field

from trajectories.config import ConfigError, Section, dump_config, parse_override, resolve_config


class Inner(Section):
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    tags: list[str] = Field(default_factory=list)


class Outer(Section):
    mode: Literal["a", "b"] = "a"
    trainer: Inner = Field(default_factory=Inner)


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("trainer:\n  lr: 0.5\n  steps: 3\n")
    cfg = resolve_config(Outer, path, ["trainer.steps=7", "mode=b", "trainer.tags=[p, q]"])
    assert cfg.trainer.lr == 0.5  # from the file
    assert cfg.trainer.steps == 7  # the override wins over the file
    assert cfg.trainer.name == "x"  # untouched default
    assert cfg.mode == "b" and cfg.trainer.tags == ["p", "q"]


def test_override_values_are_typed():
    cfg = resolve_config(Outer, None, ["trainer.lr=1e-6", "trainer.name=123"])
    assert cfg.trainer.lr == pytest.approx(1e-6)
    assert cfg.trainer.name == "123"  # a number given to a string field stays a string


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["trainer.nope=1"], "unknown config key trainer.nope (from command line)"),
        (["nosuch.key=1"], "unknown config key nosuch.key"),
        (["trainer.steps=many"], "bad value for trainer.steps (from command line)"),
        (["mode=c"], "bad value for mode"),
        (["trainer"], "must look like section.key=value"),
        (["trainer..lr=1"], "must look like section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as err:
        resolve_config(Outer, None, overrides)
    assert needle in str(err.value)


def test_yaml_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        resolve_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"trainer\.lr \(from .*bad\.yaml\)"):
        resolve_config(Outer, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        resolve_config(Outer, listy)


def test_dump_round_trips():
    cfg = resolve_config(Outer, None, ["trainer.steps=4"])
    again = Outer.model_validate(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_parse_override_reads_yaml_scalars():
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=") == ("a.b", "")
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=x=y") == ("a.b", "x=y")


def test_train_cli_dry_run_and_bad_key():
    ok = subprocess.run(
        [sys.executable, "-m", "srl_agent.train", "--task", "math", "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    assert resolved["task"] == "math" and resolved["model"]["name"] == "smollm2-135m"
    bad = subprocess.run(
        [sys.executable, "-m", "srl_agent.train", "--task", "math", "--dry-run", "trainer.nope=1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "trainer.nope" in bad.stderr


def test_a_moved_key_is_an_error_naming_its_new_key_wherever_it_is_set(tmp_path):
    """Old keys users may still have: in a YAML file or on the command line, nested or not."""
    from srl_agent.config import EvalConfig, TrainConfig

    old = tmp_path / "old.yaml"
    old.write_text("swe:\n  grader: fast\nagent:\n  command_timeout: 30\n")
    with pytest.raises(ConfigError) as caught:
        resolve_config(EvalConfig, old, ["swe.workers=4"])
    message = str(caught.value)
    assert f"swe.grader is now grading.grader (from {old})" in message
    assert "swe.workers is now environment.pool_size (from command line)" in message
    assert f"agent.command_timeout is now environment.command_timeout (from {old})" in message
    with pytest.raises(ConfigError, match=r"episodes.test_timeout is now grading.test_timeout"):
        resolve_config(TrainConfig, None, ["episodes.test_timeout=30"])
    new = resolve_config(EvalConfig, None, ["grading.grader=fast", "environment.pool_size=4"])
    assert (new.grading.grader, new.environment.pool_size) == ("fast", 4)
