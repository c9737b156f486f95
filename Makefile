# The two commands of the README. Both install first (scripts/setup.sh, idempotent).
#   make demo  - SRL training on the bundled math data with the embedded default model (CPU)
#   make test  - the whole test suite, every tier this machine can run
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench-rewards

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

demo: setup
	$(PY) -m srl_agent.train --task math

test: setup
	$(PY) -m pytest
