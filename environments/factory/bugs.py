"""Procedural bug candidates for a Python repository, SWE-smith's way (arXiv 2504.21798).

`candidates(repo, seed, max_candidates, modifiers)` yields `Candidate`s: a patch, `git apply`-able at
the repository root, that introduces a bug into one function or class. Nothing is validated here: a
candidate is a proposal that the repository's tests must still catch (the factory's validation).

Contract:
- Entities are SWE-smith's: every `def` and `class` (nested ones included, `async def` excluded) in the
  `.py` files that are not test files. A test file is SWE-smith's rule applied to the repo-relative
  path: the file name starts with `test` (any case) or its stem ends with `test`, or a directory on its
  path is `tests`, `test` or `specs`. Hidden directories (`.git`, `.tox`, `.venv`, ...) are not walked
  (they are not the repository's code; SWE-smith walks fresh clones, which have none but `.git`).
- Modifiers are SWE-smith's 13 defaults (`default_modifiers()`), each with its likelihood, conditions
  (entity tags) and complexity bounds. One attempt per (entity, modifier) pair that the modifier can
  change: the modifier's LibCST transformer runs on the entity up to `max_attempts` (5) passes until the
  code changes; a pair that changes nothing yields nothing.
- Deterministic by `seed`: each (entity, modifier) pair has a key, (seed, modifier, file, entity); the
  pairs run in the order of their keys' SHA-256 (a seeded shuffle in which a pair's place does not
  depend on which other pairs exist), and each pair's modifier draws from its own `random.Random`
  seeded by its key, so a pair's bug does not depend on which pairs ran before it. The same repository
  and seed give the same candidates in the same order; `max_candidates=N` gives the first N of them,
  `modifiers=[...]` the subsequence of those families (but for a patch that another family made
  first), and a file added to the repository interleaves its candidates without reordering the
  others'. The bugs are not byte-identical to SWE-smith's own run (it seeds one generator per
  modifier, shared across entities in its walk order).
- Identical patches are yielded once (the first in that order). A rewritten entity that no
  longer parses is dropped (SWE-smith keeps it and lets validation drop it; checking here is cheaper).
- A file that cannot be read as UTF-8, has lone carriage returns, or does not parse (with `ast` or
  LibCST) is skipped, never an error: each is logged as a WARNING on this module's logger
  (`environments.factory.bugs`) with its reason.

From the `swesmith` package (0.0.9, imported in `_swesmith()` only): the modifier classes and their
default likelihoods (`MODIFIERS_PYTHON`), their `can_change` selection, and the entity tags and
complexity (`PythonEntity`). The package `__init__`s of `swesmith.bug_gen.procedural` and
`swesmith.bug_gen.adapters` import tree-sitter grammars for other languages that the Python parts do
not use; where they fail to import, a stub package standing for each is registered so that the Python
modules import with LibCST alone.
Ours: the file walk and test-file rule, entity extraction (with qualified names), the pair order and
seeding, the 5-pass loop (as SWE-smith's `PythonProceduralModifier.modify`, catching the same errors),
the rewrite and the diff. SWE-smith rewrites a dedented copy of the entity and re-indents it line by
line, which corrupts multi-line strings and entities indented by other than 4 spaces; here the
transformer runs on the entity's node inside the file's own LibCST tree, so everything outside the
rewritten nodes is reproduced byte for byte.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import logging
import os
import sys
import types
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from trajectories.config import ConfigError

logger = logging.getLogger(__name__)

TEST_DIRS = frozenset({"tests", "test", "specs"})
# Parsed LibCST trees kept at once: pairs come in seeded random order, revisiting files at random; a
# tree costs tens of MB for a large file, so the cache is bounded rather than whole-repository.
PARSED_FILES_KEPT = 32


@dataclass(frozen=True)
class Candidate:
    candidate_id: str  # f"{modifier}__{sha8 of patch}", unique per distinct patch
    modifier: str  # SWE-smith's name, e.g. "func_pm_op_change"
    file: str  # repo-relative POSIX path of the modified file
    entity: str  # qualified name of the function/class modified ("Paginator.page")
    patch: str  # unified diff, `git apply`-able at the repo root (a/ b/ prefixes), INTRODUCING the bug
    original: str  # the entity's source text before (exact lines as in the file)
    modified: str  # the entity's source text after
    start_line: int  # 1-based first line of the entity in the original file


@dataclass(frozen=True)
class _Modifier:
    name: str
    cls: type
    likelihood: float
    prototype: Any  # SWE-smith's default instance: only its `can_change` is used (its RNG is shared)


@dataclass(frozen=True)
class _Entity:
    file: str
    qualname: str
    occurrence: int  # how many earlier defs in the file share `qualname` (property setters, overloads)
    start_line: int  # the `def`/`class` line (decorators are above it), as SWE-smith
    end_line: int
    first_line: int  # the first decorator's line, else start_line
    info: Any  # swesmith's PythonEntity: tags and complexity for `can_change`


@dataclass
class _Parsed:
    lines: list[str]
    module: Any  # libcst.Module
    nodes: dict[tuple[str, int], Any]  # (qualname, occurrence) -> libcst FunctionDef/ClassDef


def default_modifiers() -> tuple[str, ...]:
    """SWE-smith's default Python modifier names, in its order."""
    return tuple(m.name for m in _swesmith().modifiers)


def check_modifiers(names: Sequence[str]) -> None:
    """A ConfigError naming the unknown ones when `names` are not all SWE-smith modifier names."""
    _select_modifiers(names)


def candidates(
    repo: Path, seed: int = 24, max_candidates: int | None = None, modifiers: Sequence[str] | None = None
) -> Iterator[Candidate]:
    """The repository's bug candidates, deterministic by `seed` (see the module docstring).

    `max_candidates` stops after that many distinct candidates; `modifiers` restricts to those names
    (an unknown name is a ConfigError). The files are scanned when this is called; the rewrites happen
    lazily, as the iterator is consumed.
    """
    if max_candidates is not None and max_candidates < 0:
        raise ConfigError(f"max_candidates must be >= 0 or None, got {max_candidates}")
    repo = Path(repo)
    if not repo.is_dir():
        raise ConfigError(f"bug candidates: {repo} is not a directory")
    chosen = _select_modifiers(modifiers)
    pairs = [(e, m) for e in _entities(repo) for m in chosen if m.prototype.can_change(e.info)]
    pairs.sort(key=lambda pair: hashlib.sha256(_pair_key(seed, *pair).encode()).digest())
    return _generate(repo, pairs, seed, max_candidates)


def _generate(
    repo: Path, pairs: list[tuple[_Entity, _Modifier]], seed: int, limit: int | None
) -> Iterator[Candidate]:
    parsed: OrderedDict[str, _Parsed | None] = OrderedDict()
    seen: set[str] = set()
    for entity, modifier in pairs:
        if limit is not None and len(seen) >= limit:
            return
        source = _parsed(repo, entity.file, parsed)
        candidate = source and _attempt(source, entity, modifier, seed)
        if candidate is None or candidate.patch in seen:
            continue
        seen.add(candidate.patch)
        yield candidate


def _pair_key(seed: int, entity: _Entity, modifier: _Modifier) -> str:
    return f"{seed}\0{modifier.name}\0{entity.file}\0{entity.qualname}\0{entity.occurrence}"


def _attempt(source: _Parsed, entity: _Entity, modifier: _Modifier, seed: int) -> Candidate | None:
    """One (entity, modifier) attempt: up to `max_attempts` passes of the transformer over the node."""
    node = source.nodes.get((entity.qualname, entity.occurrence))
    if node is None:  # LibCST and ast disagree on the file's defs; never seen, but not worth a crash
        return None
    pm = modifier.cls(likelihood=modifier.likelihood, seed=_pair_key(seed, entity, modifier))
    transformer = pm.Transformer(pm)
    before = source.module.code_for_node(node)
    try:
        for _ in range(pm.max_attempts):
            rewritten = node.visit(transformer)
            after = source.module.code_for_node(rewritten) if isinstance(rewritten, type(node)) else before
            if after != before:
                break
        else:
            return None
        # the rewrite alone, as LibCST renders it at top level: the rest of the file is unchanged, and
        # parsing all of it would cost 30 ms for a 5,000-line file
        ast.parse(after)
        new = _splice(source, entity, node, rewritten)
    except (AttributeError, TypeError, ValueError):  # what SWE-smith's modify() treats as "no bug"
        return None  # (SyntaxError is a ValueError)
    return _candidate(source.lines, new, entity, modifier.name)


def _splice(source: _Parsed, entity: _Entity, node: Any, rewritten: Any) -> list[str]:
    """The file's lines with `node` replaced by `rewritten`.

    Rendering just the two nodes at the entity's indentation is exact and costs the entity's size;
    `Module.deep_replace` is exact too but re-renders the whole file (half a second for a 5,000-line
    file), so it is only the fallback for a node whose rendering is not found at its lines.
    """
    old = source.lines
    first = entity.first_line - 1
    indent = _indentation(old[entity.start_line - 1])
    before = _split_lines(_render_at(source.module, node, indent))
    if old[first : first + len(before)] != before:
        return _split_lines(source.module.deep_replace(node, rewritten).code)
    after = _split_lines(_render_at(source.module, rewritten, indent))
    return old[:first] + after + old[first + len(before) :]


def _render_at(module: Any, node: Any, indent: str) -> str:
    """The node's code, its comments above left out, as it reads at `indent` inside `module`."""
    libcst = _swesmith().libcst
    node = node.with_changes(leading_lines=())
    if not indent:
        return module.code_for_node(node)
    # the public way to render at an indentation: inside a block of that indent, minus its header line
    block = libcst.If(test=libcst.Name("True"), body=libcst.IndentedBlock(body=[node], indent=indent))
    return module.with_changes(body=[block], header=[], footer=[]).code.split("\n", 1)[1]


def _indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _candidate(old: list[str], new: list[str], entity: _Entity, modifier: str) -> Candidate | None:
    head, tail = entity.start_line - 1, len(old) - entity.end_line
    new_end = len(new) - tail
    # The node spans its decorators and the comments above it; a rewrite reaching outside the entity's
    # lines (which none of the modifiers do) would make `original`/`modified` lie, so it is dropped.
    if new_end < head or new[:head] != old[:head] or new[new_end:] != old[entity.end_line :]:
        return None
    modified = "".join(new[head:new_end])
    patch = _unified_diff(entity.file, old, new)
    return Candidate(
        candidate_id=f"{modifier}__{hashlib.sha256(patch.encode()).hexdigest()[:8]}",
        modifier=modifier,
        file=entity.file,
        entity=entity.qualname,
        patch=patch,
        original="".join(old[head : entity.end_line]),
        modified=modified,
        start_line=entity.start_line,
    )


def _unified_diff(path: str, old: list[str], new: list[str], context: int = 3) -> str:
    """`git diff`'s form of the change.

    difflib matches only the changed middle (the common head and tail are equal by construction): on
    whole files it costs a tenth of a second for a 5,000-line file, and it may align the blank lines of
    the tail elsewhere, leaving a hunk without trailing context that git then anchors at the end of
    the file."""
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    middle = difflib.SequenceMatcher(None, old[head : len(old) - tail], new[head : len(new) - tail], False)
    ops = [("equal", 0, head, 0, head)]
    for tag, i1, i2, j1, j2 in middle.get_opcodes():
        ops.append((tag, i1 + head, i2 + head, j1 + head, j2 + head))
    ops.append(("equal", len(old) - tail, len(old), len(new) - tail, len(new)))
    out = [f"diff --git a/{path} b/{path}\n", f"--- a/{path}\n", f"+++ b/{path}\n"]
    for group in _Opcodes(_merge_equal(ops)).get_grouped_opcodes(context):
        _, i1, _, j1, _ = group[0]
        _, _, i2, _, j2 = group[-1]
        out.append(f"@@ -{_hunk_range(i1, i2)} +{_hunk_range(j1, j2)} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(" " + line for line in old[i1:i2])
                continue
            out.extend("-" + line for line in old[i1:i2])
            out.extend("+" + line for line in new[j1:j2])
    # a last line without its newline needs git's marker to apply
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in out)


class _Opcodes(difflib.SequenceMatcher):
    """difflib's hunk grouping over opcodes computed elsewhere."""

    def __init__(self, opcodes: list[tuple[str, int, int, int, int]]) -> None:
        super().__init__(None, [], [])
        self.opcodes = opcodes

    def get_opcodes(self) -> list[tuple[str, int, int, int, int]]:
        return self.opcodes


def _merge_equal(ops: list[tuple[str, int, int, int, int]]) -> list[tuple[str, int, int, int, int]]:
    merged: list[tuple[str, int, int, int, int]] = []
    for op in ops:
        if op[1] == op[2] and op[3] == op[4]:
            continue
        if merged and op[0] == merged[-1][0] == "equal":
            merged[-1] = ("equal", merged[-1][1], op[2], merged[-1][3], op[4])
        else:
            merged.append(op)
    return merged


def _hunk_range(start: int, stop: int) -> str:
    """A hunk's line range as unified diffs write it: 1-based start, the line before for an empty one."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _split_lines(text: str) -> list[str]:
    """Lines with their endings, split on "\\n" only, as git and `ast` line numbers count them
    (str.splitlines also splits on form feeds and other separators)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


# ---------------------------------------------------------------------------------------- entities


def _source_files(repo: Path) -> list[str]:
    """Repo-relative POSIX paths of the non-test `.py` files, sorted."""
    found = []
    for root, dirs, files in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_dir = Path(root).relative_to(repo)
        if TEST_DIRS & set(rel_dir.parts):
            continue
        for name in sorted(files):
            if name.endswith(".py") and not _is_test_file(name):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def _is_test_file(name: str) -> bool:
    return name.lower().startswith("test") or name.rsplit(".", 1)[0].endswith("test")


def _read(repo: Path, rel: str) -> str | None:
    try:
        # bytes, not read_text: universal newlines would turn CRLF files into patches that miss
        text = (repo / rel).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        _skip(rel, f"cannot be read as UTF-8 ({e})")
        return None
    if "\r" in text.replace("\r\n", ""):
        _skip(rel, "has lone carriage returns (line numbers would not match git's)")
        return None
    return text


def _skip(rel: str, reason: str) -> None:
    logger.warning("bug candidates: skipped %s: %s", rel, reason)


def _entities(repo: Path) -> list[_Entity]:
    entity_cls = _swesmith().entity
    found: list[_Entity] = []
    for rel in _source_files(repo):
        text = _read(repo, rel)
        if text is None:
            continue
        try:
            tree = ast.parse(text, filename=rel)
        except (SyntaxError, ValueError) as e:
            _skip(rel, f"does not parse ({e})")
            continue
        lines = _split_lines(text)
        for qualname, occurrence, node in _defs(tree):
            if isinstance(node, ast.AsyncFunctionDef):  # SWE-smith's adapters take only sync defs
                continue
            start, end = node.lineno, node.end_lineno
            # only `node` is read for tags and complexity; the rest is filled in to construct it
            src = "".join(lines[start - 1 : end])
            info = entity_cls(
                rel, indent_level=0, indent_size=4, line_end=end, line_start=start, node=node, src_code=src
            )
            first = min([start, *(d.lineno for d in node.decorator_list)])
            found.append(_Entity(rel, qualname, occurrence, start, end, first, info))
    return found


def _defs(tree: ast.AST) -> list[tuple[str, int, ast.AST]]:
    """Every def/class in source (pre-)order with its qualified name and occurrence number; the same
    walk as `_CstDefs`, so the two trees' nodes pair up by (qualname, occurrence)."""
    counts: Counter[str] = Counter()
    found: list[tuple[str, int, ast.AST]] = []

    def walk(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = ".".join((*scope, child.name))
                found.append((qualname, counts[qualname], child))
                counts[qualname] += 1
                walk(child, (*scope, child.name))
            else:
                walk(child, scope)

    walk(tree, ())
    return found


def _parsed(repo: Path, rel: str, cache_: OrderedDict[str, _Parsed | None]) -> _Parsed | None:
    if rel in cache_:
        cache_.move_to_end(rel)
        return cache_[rel]
    libcst = _swesmith().libcst
    text = _read(repo, rel)
    source = None
    if text is not None:
        try:
            module = libcst.parse_module(text)
        except libcst.ParserSyntaxError as e:
            _skip(rel, f"LibCST cannot parse it ({str(e).splitlines()[0]})")
        else:
            visitor = _swesmith().defs_visitor()
            module.visit(visitor)
            source = _Parsed(_split_lines(text), module, visitor.nodes)
    cache_[rel] = source
    if len(cache_) > PARSED_FILES_KEPT:
        cache_.popitem(last=False)
    return source


# ---------------------------------------------------------------------------------------- swesmith


def _select_modifiers(names: Sequence[str] | None) -> list[_Modifier]:
    available = [_Modifier(pm.name, type(pm), pm.likelihood, pm) for pm in _swesmith().modifiers]
    if names is None:
        return available
    unknown = sorted(set(names) - {m.name for m in available})
    if unknown:
        raise ConfigError(
            f"unknown bug modifier(s) {', '.join(unknown)}; known: {', '.join(m.name for m in available)}"
        )
    return [m for m in available if m.name in set(names)]


@cache
def _swesmith() -> types.SimpleNamespace:
    """The one place swesmith and libcst are imported (heavy, needed only by the factory)."""
    import libcst

    importlib.import_module("swesmith.bug_gen")
    for package in ("swesmith.bug_gen.procedural", "swesmith.bug_gen.adapters"):
        try:
            importlib.import_module(package)
        except ImportError:  # the other languages' tree-sitter grammars; the Python modules need none
            stub = types.ModuleType(package)
            bug_gen = sys.modules["swesmith.bug_gen"]
            stub.__path__ = [str(Path(bug_gen.__file__).parent / package.rsplit(".", 1)[1])]
            sys.modules[package] = stub
    python_modifiers = importlib.import_module("swesmith.bug_gen.procedural.python")
    adapter = importlib.import_module("swesmith.bug_gen.adapters.python")

    class _CstDefs(libcst.CSTVisitor):
        """LibCST defs keyed as `_defs` keys the ast ones."""

        def __init__(self) -> None:
            super().__init__()
            self.scope: list[str] = []
            self.counts: Counter[str] = Counter()
            self.nodes: dict[tuple[str, int], Any] = {}

        def _enter(self, node: Any) -> None:
            qualname = ".".join((*self.scope, node.name.value))
            self.nodes[(qualname, self.counts[qualname])] = node
            self.counts[qualname] += 1
            self.scope.append(node.name.value)

        def visit_FunctionDef(self, node: Any) -> None:
            self._enter(node)

        def visit_ClassDef(self, node: Any) -> None:
            self._enter(node)

        def leave_FunctionDef(self, original_node: Any) -> None:
            self.scope.pop()

        def leave_ClassDef(self, original_node: Any) -> None:
            self.scope.pop()

    return types.SimpleNamespace(
        libcst=libcst,
        modifiers=python_modifiers.MODIFIERS_PYTHON,
        entity=adapter.PythonEntity,
        defs_visitor=_CstDefs,
    )
