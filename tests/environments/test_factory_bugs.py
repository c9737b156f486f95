"""environments/factory/bugs.py: SWE-smith's procedural bug candidates on a real fixture repository,
their patches checked with real `git apply`."""

from __future__ import annotations

import ast
import logging
import shutil
import subprocess
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from environments.factory import bugs
from trajectories.config import ConfigError

SHOP = Path(__file__).parent / "fixtures" / "shop"
SHOP_SOURCES = {"shop/__init__.py", "shop/cart.py", "shop/pricing.py"}


@pytest.fixture(scope="module")
def shop_candidates() -> list[bugs.Candidate]:
    return list(bugs.candidates(SHOP))


def git_repo(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        git(target, *args)
    return target


def git(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.autocrlf=false", *args],
        cwd=repo,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )


def assert_applies_to_the_entity_only(repo: Path, candidate: bugs.Candidate) -> None:
    """The patch applies with git, changes the file exactly at the entity's lines, and its reverse (the
    gold fix) restores the file byte for byte."""
    path = repo / candidate.file
    before = path.read_bytes()
    git(repo, "apply", "--check", "-", stdin=candidate.patch)
    git(repo, "apply", "-", stdin=candidate.patch)
    after = path.read_bytes().decode()
    text = before.decode()
    start = sum(len(line) for line in text.split("\n")[: candidate.start_line - 1]) + candidate.start_line - 1
    assert text[start:].startswith(candidate.original), candidate.candidate_id
    rest = text[start + len(candidate.original) :]
    assert after == text[:start] + candidate.modified + rest, candidate.candidate_id
    git(repo, "apply", "-R", "-", stdin=candidate.patch)
    assert path.read_bytes() == before
    assert git(repo, "status", "--porcelain").stdout == ""


def body(source: str) -> ast.AST:
    return ast.parse(textwrap.dedent(source)).body[0]


def count(node: ast.AST, *types: type) -> int:
    return sum(isinstance(n, types) for n in ast.walk(node))


def binops(node: ast.AST) -> list[str]:
    return [ast.dump(n) for n in ast.walk(node) if isinstance(n, ast.BinOp)]


def method_names(node: ast.AST) -> list[str]:
    return [n.name for n in node.body if isinstance(n, ast.FunctionDef)]


# What each modifier must have done to the entity: a check on (before, after) ASTs.
EFFECTS = {
    "func_pm_class_rm_base": lambda a, b: len(b.bases) < len(a.bases),
    "func_pm_class_rm_funcs": lambda a, b: set(method_names(b)) < set(method_names(a)),
    "func_pm_class_shuffle_funcs": lambda a, b: (
        sorted(method_names(a)) == sorted(method_names(b)) and method_names(a) != method_names(b)
    ),
    "func_pm_ctrl_invert_if": lambda a, b: (
        count(a, ast.If) == count(b, ast.If) and ast.dump(a) != ast.dump(b)
    ),
    "func_pm_ctrl_shuffle": lambda a, b: (
        sorted(map(ast.dump, a.body)) == sorted(map(ast.dump, b.body)) and a.body != b.body
    ),
    "func_pm_remove_assign": lambda a, b: (
        count(b, ast.Assign, ast.AugAssign) < count(a, ast.Assign, ast.AugAssign)
    ),
    "func_pm_remove_cond": lambda a, b: count(b, ast.If) < count(a, ast.If),
    "func_pm_remove_loop": lambda a, b: count(b, ast.For, ast.While) < count(a, ast.For, ast.While),
    "func_pm_remove_wrapper": lambda a, b: count(b, ast.Try, ast.With) < count(a, ast.Try, ast.With),
    "func_pm_op_break_chains": lambda a, b: count(b, ast.BinOp) < count(a, ast.BinOp),
    "func_pm_op_change_const": lambda a, b: (
        count(a, ast.BinOp) == count(b, ast.BinOp)
        and [c.value for c in ast.walk(a) if isinstance(c, ast.Constant)]
        != [c.value for c in ast.walk(b) if isinstance(c, ast.Constant)]
    ),
    "func_pm_op_change": lambda a, b: (
        [type(n.op) for n in ast.walk(a) if isinstance(n, ast.BinOp)]
        != [type(n.op) for n in ast.walk(b) if isinstance(n, ast.BinOp)]
    ),
    "func_pm_op_swap": lambda a, b: (
        Counter(binops(a)) != Counter(binops(b)) and count(a, ast.BinOp) == count(b, ast.BinOp)
    ),
}


def test_every_modifier_family_yields_a_candidate_that_does_what_it_says(shop_candidates):
    assert set(EFFECTS) == set(bugs.default_modifiers())
    assert {c.modifier for c in shop_candidates} == set(EFFECTS)
    for c in shop_candidates:
        assert c.original != c.modified
        assert EFFECTS[c.modifier](body(c.original), body(c.modified)), (c.candidate_id, c.modified)
        assert c.candidate_id.startswith(f"{c.modifier}__") and len(c.candidate_id) == len(c.modifier) + 10


def test_patches_apply_with_git_change_only_the_entity_and_reverse_cleanly(shop_candidates, tmp_path):
    repo = git_repo(SHOP, tmp_path / "shop")
    for candidate in shop_candidates:
        assert candidate.patch.startswith(f"diff --git a/{candidate.file} b/{candidate.file}\n")
        assert_applies_to_the_entity_only(repo, candidate)


def test_test_files_are_never_modified(shop_candidates):
    # shop/testing.py and shop/selftest.py would yield candidates (loops, if/else, arithmetic) if taken
    assert {c.file for c in shop_candidates} <= SHOP_SOURCES
    assert {"shop/cart.py", "shop/pricing.py"} <= {c.file for c in shop_candidates}


def test_test_file_rule_is_swesmiths_on_the_repo_relative_path(tmp_path):
    # a repository that itself lives under a "tests" directory is still scanned
    repo = tmp_path / "tests" / "repo"
    code = (SHOP / "shop" / "testing.py").read_text()
    ignored = ["tests/a.py", "pkg/test/b.py", "pkg/specs/c.py", "Test_d.py", "e_test.py", "pkg/testing.py"]
    kept = ["pkg/attest_dir/f.py", "pkg/g.py", "pkg/tests_helpers/h.py"]
    for rel in ignored + kept:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(code)
    (repo / ".tox" / "i.py").parent.mkdir()
    (repo / ".tox" / "i.py").write_text(code)
    assert {c.file for c in bugs.candidates(repo)} == set(kept)


def test_same_seed_gives_the_same_candidates_in_the_same_order_another_seed_does_not(shop_candidates):
    again = list(bugs.candidates(SHOP, seed=24))
    assert again == shop_candidates
    other = list(bugs.candidates(SHOP, seed=7))
    assert [c.candidate_id for c in other] != [c.candidate_id for c in shop_candidates]
    assert other == list(bugs.candidates(SHOP, seed=7))


def test_max_candidates_takes_the_first_of_the_seeded_order_spread_over_files_and_modifiers(shop_candidates):
    first = list(bugs.candidates(SHOP, max_candidates=6))
    assert first == shop_candidates[:6]
    assert len({c.file for c in first}) > 1 and len({c.modifier for c in first}) > 2
    assert list(bugs.candidates(SHOP, max_candidates=0)) == []


def test_modifiers_restricts_the_families_keeping_their_order(shop_candidates):
    families = ["func_pm_op_swap", "func_pm_remove_loop"]
    chosen = list(bugs.candidates(SHOP, modifiers=families))
    assert chosen == [c for c in shop_candidates if c.modifier in families]
    assert chosen == list(bugs.candidates(SHOP, modifiers=families[::-1]))
    assert {c.modifier for c in chosen} == set(families)


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="func_pm_nope"):
        bugs.candidates(SHOP, modifiers=["func_pm_nope"])
    with pytest.raises(ConfigError, match="max_candidates"):
        bugs.candidates(SHOP, max_candidates=-1)
    with pytest.raises(ConfigError, match="not a directory"):
        bugs.candidates(tmp_path / "missing")


def test_identical_patches_are_yielded_once(tmp_path):
    # `outer`'s only operation is `inner`'s: swapping it is the same patch whichever entity it came from
    (tmp_path / "calc.py").write_text(
        textwrap.dedent(
            """\
            def outer(a, b):
                def inner(x, y):
                    if x > y:
                        return x - y
                    return 0

                return inner(a, b)
            """
        )
    )
    entities = Counter()
    for seed in range(8):  # at p=.4 a pair misses its one swap in 5 passes 8% of the time
        found = list(bugs.candidates(tmp_path, seed=seed, modifiers=["func_pm_op_swap"]))
        assert len(found) <= 1
        for candidate in found:
            assert "return y - x" in candidate.patch
            entities[candidate.entity] += 1
    assert set(entities) == {"outer", "outer.inner"}  # both pairs make it; whichever came first was kept


def test_a_file_that_does_not_parse_is_skipped_and_logged(tmp_path, caplog):
    shutil.copy(SHOP / "shop" / "pricing.py", tmp_path / "pricing.py")
    (tmp_path / "broken.py").write_text("def broken(:\n    return 1 +\n")
    (tmp_path / "latin1.py").write_bytes("def f(x):\n    return x + 1  # caf\xe9\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="environments.factory.bugs"):
        found = list(bugs.candidates(tmp_path))
    assert found and {c.file for c in found} == {"pricing.py"}
    skipped = [r.getMessage() for r in caplog.records]
    assert any("skipped broken.py: does not parse" in m for m in skipped), skipped
    assert any("skipped latin1.py: cannot be read as UTF-8" in m for m in skipped), skipped


def test_layouts_swesmith_would_corrupt_are_byte_exact(tmp_path):
    """Two-space indentation, a multi-line string at column 0 inside a method, CRLF line ends, a form
    feed between functions and no newline at the end of the file: every patch applies with git and the
    text outside the rewritten nodes is unchanged (SWE-smith re-indents line by line)."""
    nested = (
        "class Report(object):\n"
        "  def render(self, rows):\n"
        "    text = '''\\\n"
        "header\n"
        "  indented\n"
        "'''\n"
        "    for row in rows:\n"
        "      if row > 0 and row < 10:\n"
        "        text += str(row * 2 + 1)\n"
        "      else:\n"
        "        text += '-'\n"
        "    return text\n"
        "\x0c\n"
        "def last(values):\n"
        "  out = 0\n"
        "  for v in values:\n"
        "    if v > 1:\n"
        "      out += v - 1\n"
        "  return out"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "report.py").write_text(nested)
    (tmp_path / "src" / "dos.py").write_bytes(nested.replace("\n", "\r\n").encode())
    repo = git_repo(tmp_path / "src", tmp_path / "repo")
    found = list(bugs.candidates(repo))
    assert {c.file for c in found} == {"report.py", "dos.py"}
    assert {"Report.render", "last"} <= {c.entity for c in found}
    for candidate in found:
        assert_applies_to_the_entity_only(repo, candidate)
        git(repo, "apply", "-", stdin=candidate.patch)
        changed = (repo / candidate.file).read_bytes().decode()
        if candidate.file == "dos.py":
            assert changed.count("\n") == changed.count("\r\n")
        if candidate.entity == "Report.render" and candidate.modifier != "func_pm_remove_assign":
            assert "'''\\\nheader\n  indented\n'''" in changed.replace("\r\n", "\n")
        git(repo, "apply", "-R", "-", stdin=candidate.patch)
