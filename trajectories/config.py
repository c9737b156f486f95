"""Typed configuration shared by every srl-agent entry point.

Each component declares one `Section` (a pydantic model): its defaults live there and nowhere else.
A run is resolved in three layers, later ones winning:

1. the defaults of the section classes,
2. a YAML file (`--config configs/x.yaml`) that holds only what differs,
3. dotted command-line overrides (`optim.lr=1e-6 generation.stop='[</function>]'`), whose values
   are read as YAML scalars/lists.

An unknown key, a wrong type or a missing file raises `ConfigError` naming the key (with where it came
from) or the path; `run_cli` prints it (and a file system error on a named path) as one line.
`dump_config` writes the resolved config as YAML (the run folder's `config.yaml`); `explain_config`
writes the same YAML with each field's description as a comment above it (`--dry-run`).

This module lives in `trajectories`, the package every other one may import, so that all three
packages' entry points share it without breaking the one-way dependency rule.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration cannot be resolved; the message names the key or the file."""


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated.

    A field is documented by a string literal right under it (an attribute docstring); pydantic keeps
    it as the field's description, which `--dry-run` prints beside the value.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, coerce_numbers_to_str=True, use_attribute_docstrings=True
    )

    moved: ClassVar[dict[str, str]] = {}
    """Keys this section had and no longer has, each with the full dotted key that now holds its value:
    a config or override that still sets one gets a ConfigError naming the new key."""


def add_config_arguments(parser: argparse.ArgumentParser, example: str = "section.key=value") -> None:
    """`--config`, `--dry-run` and the `KEY=VALUE` overrides; `example` is an override that the
    entry point's own config takes, shown in the help."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file overriding the defaults")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"dotted overrides of config fields, applied last, e.g. {example} (--dry-run lists the fields)",
    )


def resolve_config(
    cls: type[T],
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> T:
    """Build a `cls` from its defaults, a YAML file and dotted overrides (`key.sub=value`), in that order."""
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        from_file = load_yaml(config_file)
        _merge(data, from_file)
        for key in _flat_keys(from_file):
            sources[key] = str(config_file)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
        sources[key] = "command line"
    _refuse_moved(cls, data, sources)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, sources)) from None


def run_cli(main: Callable[[], int]) -> NoReturn:
    """Run an entry point's `main`, turning a ConfigError into a one-line message and exit status 2, and
    an OSError on a named path (an `--out` on a read-only file system, a folder without permission, a
    full disk) into one naming the path and why, exit status 1. Other errors keep their traceback."""
    try:
        code = main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except OSError as e:
        if e.filename is None:
            raise
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
        print(f"error: {where}: {e.strerror or e}", file=sys.stderr)
        code = 1
    sys.exit(code)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def explain_config(cfg: BaseModel) -> str:
    """The resolved config as YAML, each field preceded by its description as `#` comments.

    It loads back to exactly what `dump_config` writes (comments are ignored by YAML readers).
    """
    return "".join(_explain(cfg, ""))


def _explain(model: BaseModel, indent: str) -> list[str]:
    lines: list[str] = []
    values = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        for text in (info.description or "").splitlines():
            lines.append(f"{indent}# {text.strip()}\n" if text.strip() else f"{indent}#\n")
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:\n")
            lines += _explain(value, indent + "  ")
        else:
            dumped = yaml.safe_dump({name: values[name]}, sort_keys=False, allow_unicode=True, width=10**6)
            lines += [f"{indent}{line}\n" for line in dumped.splitlines()]
    return lines


def save_config(cfg: BaseModel, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg), encoding="utf-8")
    return path


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[leaf] = value


def _flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, dotted + "."))
    return keys


def _refuse_moved(cls: type[BaseModel], data: dict[str, Any], sources: dict[str, str]) -> None:
    """ConfigError naming every key of `data` that a section's `moved` map names, with its new key."""
    lines = _moved_keys(cls, data, sources, "")
    if lines:
        raise ConfigError("moved config keys:\n  " + "\n  ".join(lines))


def _moved_keys(
    cls: type[BaseModel], data: dict[str, Any], sources: dict[str, str], prefix: str
) -> list[str]:
    moved: dict[str, str] = getattr(cls, "moved", {})
    lines = []
    for key, value in data.items():
        where = f" (from {sources[prefix + key]})" if prefix + key in sources else ""
        field = cls.model_fields.get(key)
        sub = field.annotation if field is not None else None
        if key in moved:
            lines.append(f"{prefix}{key} is now {moved[key]}{where}")
        elif isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            lines += _moved_keys(sub, value, sources, f"{prefix}{key}.")
    return lines


def _describe(error: ValidationError, sources: dict[str, str]) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        origin = sources.get(key)
        where = f" (from {origin})" if origin else ""
        if err["type"] == "extra_forbidden":
            # An unknown section: name the full keys the user wrote under it, not just the section.
            written = [
                k for k in sources if k.startswith(key + ".") and not isinstance(err.get("input"), str)
            ]
            leaves = [k for k in written if not any(o.startswith(k + ".") for o in written)] or [key]
            lines += [
                f"unknown config key {k}{f' (from {sources[k]})' if k in sources else where}" for k in leaves
            ]
        else:
            lines.append(f"bad value for {key}{where}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)
