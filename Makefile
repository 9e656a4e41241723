# fitpilot: one command each for set-up, tests, lint and the demo.
#   make setup   create .venv: torch (CPU build) first, then fitpilot with its dev extras
#   make test    set-up, then every test (slow ones included)
#   make lint    ruff
#   make demo    set-up, then the main job
# Set-up reruns only when pyproject.toml changes (or .venv is removed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fitpilot-installed
# The CPU build of torch lies on this machine's disk; a plain `torch` would pull a CUDA build of
# several GB. Installed before the package, it satisfies stable-baselines3's torch requirement.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

# `pip install -q ARGS`, silent when it succeeds; on failure its log is shown, less the lines
# in which pip warns about the machine's optional local index folders.
define pip_install
	@echo "setup: pip install $(1)"
	@$(BIN)/python -m pip install -q $(1) > $(VENV)/pip.log 2>&1 \
	  || { sed '/^WARNING: Location .* is ignored/d' $(VENV)/pip.log >&2; exit 1; }
endef

.PHONY: setup test lint demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "setup: $(VENV) (the first time takes a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call pip_install,--upgrade pip)
	$(call pip_install,"$(TORCH)")
	$(call pip_install,-e ".[dev]")
	@touch $@
	@echo "setup: done"

test: setup
	@status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5)" >&2; fi; \
	exit $$status

lint: setup
	$(BIN)/ruff check .

demo: setup
	$(BIN)/fitpilot tasks --suite holdout
