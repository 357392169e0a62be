# The CGC research companion: one entry point per job a reader has.
#   make book     build the HTML book (executes every chapter on the embedded test bed)
#   make test     lint, type-check, then the whole test suite (unit tests, notebooks with CI
#                 parameters, ledger checks, the rendered book in headless Chromium)
#   make test-unit  the library's unit tests alone (well under a minute)
#   make lint     ruff (lint and format check) over cgclib, tests and the notebooks' code; mypy
#   make format   apply ruff's formatting and safe fixes to the same files
#   make testbed  train the test-bed family from scratch: three seeds and a 12-block model per
#                 architecture, one after another, each run resumable (several hours on 2 cores)
#   make saes     retrain the SAEs the book uses (data/saes) from scratch and ship them
#   make replicates  run the chapters on the other training seeds where not cached; ship the records and tables
#   make bench    run the benchmarks into _build/bench
#   make pdf      the whole book as one PDF, _build/pdf/book.pdf (after make book; needs Chromium)
#   make student  the student edition: each chapter's notebook with its exercises, no solutions
#   make lock     regenerate constraints.txt from a fresh environment

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MATHJAX := book/_static/mathjax

.PHONY: book test test-unit lint lint-notebooks format testbed saes replicates bench lock clean install static browser pdf student

install: $(STAMP)

# torch is installed first on its own so that its pinned version is resolved before any
# package that merely asks for "torch" (an unpinned torch would pull CUDA wheels on CPU).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

# MathJax is served from the book's own static files so that math renders offline.
$(MATHJAX)/tex-chtml-full.js: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	rm -rf $(MATHJAX) && mkdir -p $(MATHJAX)
	cp node_modules/mathjax/es5/tex-chtml-full.js $(MATHJAX)/
	cp -r node_modules/mathjax/es5/{input,output,ui,a11y,adaptors,sre} $(MATHJAX)/

static: $(MATHJAX)/tex-chtml-full.js

# Every chapter is executed afresh (several at once) into the cache the Sphinx build reads.
book: $(STAMP) static
	rm -rf _build/results _build/.jupyter_cache
	$(BIN)/cgc execute $(if $(JOBS),--jobs $(JOBS))
	$(BIN)/jupyter-book build . --all -W -n --keep-going

# Headless Chromium for the browser test, from Debian (no browser download). Where it cannot
# be installed (not root, no apt-get), the test says so and is skipped.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver >/dev/null; } || echo "could not install Chromium: the browser test will be skipped"; \
	else echo "Chromium is not installed and this user cannot install it: the browser test will be skipped"; fi

test: lint static browser
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/book -q

# The notebooks are MyST markdown: jupytext hands their code to ruff as a Python script placed
# beside them (so notebooks/ruff.toml applies). Formatting is checked by piping each notebook
# through ruff format into a scratch file and comparing.
NOTEBOOKS := $(wildcard notebooks/*.md)
lint: lint-notebooks
	$(BIN)/ruff check cgclib tests
	$(BIN)/ruff format --check cgclib tests
	$(BIN)/mypy

lint-notebooks: $(STAMP)
	@set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	for nb in $(NOTEBOOKS); do \
	  PATH="$(BIN):$$PATH" $(BIN)/jupytext --quiet --check "ruff check --quiet {}" "$$nb"; \
	  PATH="$(BIN):$$PATH" $(BIN)/jupytext --quiet --pipe "ruff format --quiet {}" "$$nb" -o "$$scratch/$$(basename $$nb)"; \
	  diff -q "$$nb" "$$scratch/$$(basename $$nb)" >/dev/null || { echo "$$nb is not formatted: run make format"; exit 1; }; \
	done; echo "notebooks: lint and format clean"

format: $(STAMP)
	$(BIN)/ruff check --fix cgclib tests
	$(BIN)/ruff format cgclib tests
	for nb in $(NOTEBOOKS); do \
	  PATH="$(BIN):$$PATH" $(BIN)/jupytext --quiet --pipe "ruff check --fix --quiet --exit-zero {}" "$$nb"; \
	  PATH="$(BIN):$$PATH" $(BIN)/jupytext --quiet --pipe "ruff format --quiet {}" "$$nb"; \
	done

testbed: $(STAMP)
	$(BIN)/python -m cgclib.testbed train --all

# A book build with an empty cache and the shipped SAEs ignored trains exactly the SAEs the
# default chapters need; those are then shipped in data/saes with their manifest. Chapters run
# one at a time here, in book order, so that which chapter trains which SAEs never depends on timing.
saes: $(STAMP) static
	rm -rf _build/saes-cache
	CGC_CACHE_DIR=$(CURDIR)/_build/saes-cache CGC_IGNORE_SHIPPED_SAES=1 $(MAKE) book JOBS=1
	$(BIN)/python -m cgclib.saes ship _build/saes-cache/saes

# Every chapter executed on the other training seeds of the test-bed family (where its cached
# records are not for this code and these models), shipped in data/replicates; the cached
# tables of each chapter's own default run (cgclib.tables), shipped in data/tables.
replicates: $(STAMP)
	$(BIN)/cgc replicates

bench: $(STAMP)
	$(BIN)/python -m cgclib.book.bench

# One page of the whole book (jupyter-book's singlehtml, from the execution cache of make book)
# printed to PDF by headless Chromium, offline (cgclib.book.pdf).
pdf: $(STAMP) static browser
	$(BIN)/python -m cgclib.book.pdf

# Each chapter's notebook followed by its exercises and answer cells, solutions left out.
student: $(STAMP)
	$(BIN)/python -m cgclib.book.student

lock:
	rm -rf /tmp/cgc-lock-venv && $(PYTHON) -m venv /tmp/cgc-lock-venv
	/tmp/cgc-lock-venv/bin/python -m pip install --quiet torch==2.13.0
	/tmp/cgc-lock-venv/bin/python -m pip install --quiet -e .
	{ sed -n '1,3p' constraints.txt; /tmp/cgc-lock-venv/bin/python -m pip freeze --exclude-editable \
	  | sed 's/+cpu$$//'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf _build
