# FER Lab: `make run` starts the app, `make test` runs the checks. Both create/reuse .venv and
# reinstall only when requirements*.txt or pyproject.toml changed (stamp file .venv/.installed).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
BOOTSTRAP_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
# torch/torchvision exact pins, read from requirements.txt so they live in one place.
TORCH_PINS = $$(grep -E '^(torch|torchvision)==' requirements.txt)

.PHONY: help install run test lint format screenshots clean

help:
	@echo "make run          install what is missing, then start the app (streamlit run app/Home.py)"
	@echo "make test         install what is missing (dev tools too), then ruff check . and pytest, the browser test included"
	@echo "                  (Chromium: installed as root with apt-get, else the command to run; BROWSER=skip leaves it out)"
	@echo "make screenshots  drive Chromium through every page, PNGs in docs/screenshots/ (needs /usr/bin/chromium"
	@echo "                  and the group e1-scn-noise of scripts/experiments.py in runs/, copied, never modified)"
	@echo "make format       ruff format + ruff check --fix"
	@echo "make clean        remove caches (keeps .venv and runs/)"

$(PY):
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app/Home.py

# The dev requirements bring playwright for tests/test_browser.py; Chromium itself comes from
# scripts/ensure_chromium.sh (nothing when /usr/bin/chromium exists; apt-get as root; else it stops, naming the
# command). `make test BROWSER=skip` runs every other check and says that the browser test was not run.
# BROWSER is also a common environment variable (the user's web browser): from there only `skip` is taken.
BROWSER_TEST := $(if $(filter skip,$(BROWSER)),skip,$(if $(filter command line,$(origin BROWSER)),$(BROWSER),))
ifneq ($(filter test,$(MAKECMDGOALS)),)
ifneq ($(filter-out skip,$(BROWSER_TEST)),)
$(error BROWSER=$(BROWSER) is not understood: use `make test BROWSER=skip` or leave BROWSER out)
endif
endif
test: $(STAMP) $(DEV_STAMP)
ifeq ($(BROWSER_TEST),skip)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not browser"; status=$$?; \
		echo "BROWSER=skip: the browser test (tests/test_browser.py) was skipped, not run"; exit $$status
else
	@bash scripts/ensure_chromium.sh
	$(PY) -m ruff check .
	$(PY) -m pytest
endif

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The README's screenshots: the browser tour (scripts/screenshots.py) over a temporary copy of these runs.
SHOT_RUNS ?= runs
screenshots: $(DEV_STAMP)
	$(PY) scripts/screenshots.py --out docs/screenshots --compact --from-runs $(SHOT_RUNS) \
		--copy e1-scn-noise --run e1-scn-noise--uniform30--scn--s0 --compare $(SHOT_COMPARE) --filters 6,32
SHOT_COMPARE := $(shell echo e1-scn-noise--uniform30--{baseline,scn}--s{0,1,2} | tr ' ' ',')

clean:
	rm -rf .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
