# fitpilot: one command each for set-up, tests, lint and the demo.
#   make setup   create .venv: torch (CPU build) first, then fitpilot with every extra (dev)
#   make test    set-up, then every test (slow ones included)
#   make lint    ruff
#   make demo    set-up, then the main job: the pretrained controller against Keras'
#                heuristics on the holdout suite (3 seeds x lr x0.1, x1, x10), report in demo/
#   make benchmark-real  set-up, then the published benchmark of the real suite (real data from
#                the data extra; 3 seeds x lr x0.1, x1, x10, every strategy), report in results-real/;
#                about an hour on 2 cores; run it again to resume after a kill
#   make pretrained  set-up, then the shipped controller's recipe: 3 training seeds, each bundle
#                benchmarked on the validation suite, the one the recipe's rule picks copied
# Set-up reruns only when pyproject.toml changes (or .venv is removed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fitpilot-installed
# Static tools (pyright, pylance) cannot follow the folder map of pyproject.toml
# (fitpilot.envs -> envs/): build/static/ is a tree of links laid out as the import names, which
# [tool.pyright] extraPaths points them to. Python itself imports through the editable install.
STATIC := build/static/fitpilot
# The CPU build of torch lies on this machine's disk; a plain `torch` would pull a CUDA build of
# several GB. Installed before the package, it satisfies stable-baselines3's torch requirement.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
# dev: tests, lint and every extra (the real suite's data included).
EXTRAS := dev

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

# `pip install -q ARGS`, silent when it succeeds; on failure its log is shown, less the lines
# in which pip warns about the machine's optional local index folders.
define pip_install
	@echo "setup: pip install $(1)"
	@$(BIN)/python -m pip install -q $(1) > $(VENV)/pip.log 2>&1 \
	  || { sed '/^WARNING: Location .* is ignored/d' $(VENV)/pip.log >&2; exit 1; }
endef

.PHONY: setup test lint demo benchmark-real pretrained

setup: $(STAMP)
	@rm -rf $(STATIC) && mkdir -p $(STATIC)
	@for path in $$(find fitpilot -mindepth 1 -maxdepth 1 ! -name __pycache__); do \
	  ln -s "$(CURDIR)/$$path" $(STATIC)/; done
	@for folder in controller baselines envs agents experiments; do \
	  ln -s "$(CURDIR)/$$folder" $(STATIC)/$$folder; done

$(STAMP): pyproject.toml
	@echo "setup: $(VENV) (the first time takes a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call pip_install,--upgrade pip)
	$(call pip_install,"$(TORCH)")
	$(call pip_install,-e ".[$(EXTRAS)]")
	@touch $@
	@echo "setup: done"

test: setup
	@status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5)" >&2; fi; \
	exit $$status

lint: setup
	$(BIN)/ruff check .

DEMO_OUT ?= demo
demo: setup
	$(BIN)/fitpilot benchmark --controller pretrained --suite holdout --seeds 3 \
	  --lr-factors 0.1,1,10 --oracle-grid 7 --jobs 2 --out $(DEMO_OUT) --force
	@echo "demo: open $(DEMO_OUT)/report.md"

REAL_OUT ?= results-real
benchmark-real: setup
	$(BIN)/fitpilot benchmark --controller pretrained --suite real --seeds 3 \
	  --lr-factors 0.1,1,10 --oracle-grid 7 --jobs 2 --out $(REAL_OUT) --resume
	@echo "benchmark-real: open $(REAL_OUT)/report.md"

PRETRAINED_RUN ?= runs/pretrained-v3
pretrained: setup
	$(BIN)/fitpilot recipe experiments/configs/pretrained_v3.yaml --seeds 3 --out $(PRETRAINED_RUN)
	cp $(PRETRAINED_RUN)/controller.zip controller/pretrained/controller.zip
	@echo "pretrained: controller/pretrained/controller.zip updated from $(PRETRAINED_RUN) (see recipe.md)"
