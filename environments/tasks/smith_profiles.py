"""SWE-smith's repository profiles, read from its installed package without importing it.

SWE-smith (the `swesmith` package, 0.0.9) ships one profile per repository at one commit in
`swesmith/profiles/python.py`: a dataclass subclassing `PythonProfile` with `owner`, `repo` and
`commit`, optionally its own `test_cmd`, and in a few cases its own `log_parser`, `get_test_cmd` or
`get_test_files`. SWE-smith registers them under `<owner>__<repo>.<commit[:8]>`, the name its rows
carry in `repo` (`swesmith/<owner>__<repo>.<commit8>`). Importing that module needs ghapi, dotenv,
unidiff and a newer swebench than this project pins, so `read_profiles` parses its source with `ast`
instead: the string fields are evaluated from literals, f-strings over the module-level string
constants of `swesmith.constants` (`ENV_NAME`), and `+`; nothing else is evaluated.

A profile is gradable here when it keeps SWE-smith's default log parser (`PythonProfile.log_parser`:
per line, `^(\\S+)\\s+<STATUS>` over `pytest --verbose` output, `grading.parse_pytest_verbose`) and the
default way of naming the tests to run (`get_test_cmd`, `get_test_files`); otherwise `unsupported`
says which override it has, and its rows are reported with that reason.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Methods whose override changes how the tests are named or their log is read; the rest (build_image,
# the conda yml path) only concern building SWE-smith's own images.
GRADING_METHODS = ("log_parser", "get_test_cmd", "get_test_files")
BASE_CLASS = "PythonProfile"


class ProfileReadError(RuntimeError):
    """The profiles file cannot be read as expected; names the file and what is wrong."""


@dataclass(frozen=True)
class SmithProfile:
    """One SWE-smith repository profile: how its tests run and whether this project can grade with it."""

    owner: str
    repo: str
    commit: str
    test_cmd: str
    """The command the tests run with (SWE-smith appends the tests to run)."""
    class_name: str = ""
    """The profile's class in SWE-smith's python.py ('' for one made here)."""
    overrides: tuple[str, ...] = ()
    """The `GRADING_METHODS` the profile overrides."""

    @property
    def key(self) -> str:
        """SWE-smith's registry key and repository name: `<owner>__<repo>.<commit8>`."""
        return f"{self.owner}__{self.repo}.{self.commit[:8]}"

    @property
    def unsupported(self) -> str | None:
        """Why rows of this repository cannot be graded here; None when they can."""
        if not self.overrides:
            return None
        return (
            f"SWE-smith's profile {self.class_name or self.key} overrides {', '.join(self.overrides)}, "
            "which this project does not implement (it grades with PythonProfile's default test naming "
            "and log parser)"
        )


def package_file(relative: str) -> Path | None:
    """A file of the installed `swesmith` package (without importing it); None when it is not installed."""
    spec = importlib.util.find_spec("swesmith")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


@functools.cache
def installed_profiles() -> Mapping[str, SmithProfile]:
    """SWE-smith's Python profiles by key, from the installed package; empty when it is not installed."""
    python = package_file("profiles/python.py")
    if python is None:
        return {}
    constants = package_file("constants.py")
    return read_profiles(python, _string_constants(constants) if constants else {})


def read_profiles(path: Path, constants: Mapping[str, str]) -> dict[str, SmithProfile]:
    """Every `PythonProfile` subclass in `path` by key; `constants` resolve names in f-strings.

    Raises ProfileReadError when the file has no `PythonProfile` or its default `test_cmd` cannot be read.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    base = classes.get(BASE_CLASS)
    if base is None:
        raise ProfileReadError(f"{path}: no class {BASE_CLASS}")
    default_cmd = _fields(base, constants).get("test_cmd")
    if default_cmd is None:
        raise ProfileReadError(f"{path}: {BASE_CLASS}.test_cmd is not a string this reader can evaluate")
    profiles: dict[str, SmithProfile] = {}
    for node in classes.values():
        if [ast.unparse(b) for b in node.bases] != [BASE_CLASS]:
            continue
        fields = _fields(node, constants)
        if not all(fields.get(key) for key in ("owner", "repo", "commit")):
            continue
        methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        profile = SmithProfile(
            owner=fields["owner"],
            repo=fields["repo"],
            commit=fields["commit"],
            test_cmd=fields.get("test_cmd", default_cmd),
            class_name=node.name,
            overrides=tuple(m for m in GRADING_METHODS if m in methods),
        )
        profiles[profile.key] = profile
    return profiles


def _fields(node: ast.ClassDef, constants: Mapping[str, str]) -> dict[str, str]:
    """The class body's string-valued assignments (`x: str = ...` or `x = ...`) that evaluate here."""
    return _assigned(node.body, constants)


def _assigned(body: list[ast.stmt], constants: Mapping[str, str]) -> dict[str, str]:
    """`{name: value}` of the `name = ...` / `name: T = ...` statements of `body` whose value is a string
    expression `_string` evaluates."""
    found: dict[str, str] = {}
    for item in body:
        if isinstance(item, ast.AnnAssign) and item.value is not None:
            target, value = item.target, item.value
        elif isinstance(item, ast.Assign) and len(item.targets) == 1:
            target, value = item.targets[0], item.value
        else:
            continue
        text = _string(value, constants) if isinstance(target, ast.Name) else None
        if isinstance(target, ast.Name) and text is not None:
            found[target.id] = text
    return found


def _string(node: ast.expr, constants: Mapping[str, str]) -> str | None:
    """The value of a string expression made of literals, f-strings over `constants` and `+`; else None."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string(node.left, constants), _string(node.right, constants)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                if value.conversion != -1 or value.format_spec is not None:
                    return None
                value = value.value
            part = _string(value, constants)
            if part is None:
                return None
            parts.append(part)
        return "".join(parts)
    return None


def _string_constants(path: Path) -> dict[str, str]:
    """The module-level string assignments of `path` (`ENV_NAME = "testbed"`)."""
    return _assigned(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body, {})
