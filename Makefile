# Two commands on a fresh machine:  make demo   and   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
QUESTION ?= What drug classes reduce mortality in heart failure with reduced ejection fraction?

.PHONY: demo demo-base test setup models lint typecheck unit clean-index

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# torch is pinned in the same pip command: an unpinned torch pulls several GB of CUDA packages.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0 -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

models: setup
	$(BIN)/python app.py models fetch

demo: models
	$(BIN)/python app.py query "$(QUESTION)"

# The same question answered by the base model, without our LoRA adapter (for comparison).
demo-base: models
	$(BIN)/python app.py --config configs/base.yaml query "$(QUESTION)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q -m "not integration"

test: models lint
	$(BIN)/python -m pytest -q

clean-index:
	rm -rf .cds/index
