"""The dependency rule, read off the code: every import of every module, lazy and TYPE_CHECKING ones too.

- `trajectories` imports neither `srl_agent` nor `environments`;
- `environments` never imports `srl_agent`;
- no two modules of one package import each other (a cycle hides a missing seam);
- nothing in `srl_agent.eval` imports the training loop (`srl_agent.train`): evaluation takes a model
  or checkpoint, never a running trainer.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trajectories", "environments", "srl_agent")
FORBIDDEN = {"trajectories": {"srl_agent", "environments"}, "environments": {"srl_agent"}, "srl_agent": set()}
# (importing package, imported module): a subpackage kept apart from one module of its own package
FORBIDDEN_WITHIN = [("srl_agent.eval", "srl_agent.train")]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path, known: set[str]) -> set[str]:
    """The modules `path` imports anywhere in its body; `from pkg import name` counts as importing
    `pkg.name` when that is a module, else `pkg`."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    files = [p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))]
    known = {module_name(p, root) for p in files}
    return {module_name(p, root): imported_modules(p, root, known) & known for p in files}


def violations(graph: dict[str, set[str]], forbidden: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imports in sorted(graph.items()):
        top = module.split(".")[0]
        for target in sorted(imports):
            if target.split(".")[0] in forbidden.get(top, set()):
                problems.append(f"{module} imports {target}")
            for package, banned in FORBIDDEN_WITHIN:
                if module.startswith(package + ".") and (target == banned or target.startswith(banned + ".")):
                    problems.append(f"{module} imports {target}")
            same_package = target.split(".")[0] == top
            if same_package and target != module and module in graph.get(target, set()) and module < target:
                problems.append(f"{module} and {target} import each other")
    return problems


def test_the_dependency_rule_holds():
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 40 and graph["srl_agent.train"], "the scan found the project's modules"
    assert violations(graph, FORBIDDEN) == []


def test_the_checker_sees_forbidden_lazy_and_mutual_imports(tmp_path):
    """The rule is only as good as its reader: a planted lazy import, a TYPE_CHECKING import and a
    relative-import cycle are all reported."""
    (tmp_path / "trajectories").mkdir()
    (tmp_path / "trajectories" / "__init__.py").write_text("")
    (tmp_path / "trajectories" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from environments import box\n"
        "def f():\n    from . import b\n"
    )
    (tmp_path / "trajectories" / "b.py").write_text("from .a import f\n")
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "__init__.py").write_text("")
    (tmp_path / "environments" / "box.py").write_text("def g():\n    import srl_agent.train\n")
    (tmp_path / "srl_agent").mkdir()
    (tmp_path / "srl_agent" / "__init__.py").write_text("")
    (tmp_path / "srl_agent" / "train.py").write_text("import environments.box\nimport trajectories.a\n")
    (tmp_path / "srl_agent" / "eval").mkdir()
    (tmp_path / "srl_agent" / "eval" / "__init__.py").write_text("")
    (tmp_path / "srl_agent" / "eval" / "swe.py").write_text(
        "def h():\n    from srl_agent.train import main\n"
    )
    graph = import_graph(tmp_path, PACKAGES)
    assert violations(graph, FORBIDDEN) == [
        "environments.box imports srl_agent.train",
        "srl_agent.eval.swe imports srl_agent.train",
        "trajectories.a imports environments.box",
        "trajectories.a and trajectories.b import each other",
    ]
