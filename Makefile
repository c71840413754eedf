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
	@echo "make test         install what is missing, then ruff check . and pytest"
	@echo "make screenshots  drive Chromium through the app, PNGs in screenshots/ (needs /usr/bin/chromium)"
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

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

screenshots: $(DEV_STAMP)
	$(PY) scripts/screenshots.py --out screenshots

clean:
	rm -rf .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
