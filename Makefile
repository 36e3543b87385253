# Two commands on a fresh machine:  make demo   and   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
QUESTION ?= What drug classes reduce mortality in heart failure with reduced ejection fraction?

.PHONY: demo demo-base test setup models lint typecheck unit clean-index browser serve

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

# Debian's chromium for the clinician page's browser test (tests/test_serve_browser.py, skipped without it).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
		echo "chromium could not be installed (not root?): the browser tests will be skipped"

# The warm API and the clinician page on http://127.0.0.1:8000 (README, "Serving").
serve: models
	$(BIN)/python app.py serve

test: models lint browser
	$(BIN)/python -m pytest -q

clean-index:
	rm -rf .cds/index
