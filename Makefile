# The two commands of the README. `make demo` sets up and runs the main job on
# an embedded default; `make test` sets up and runs the tests, the docstring
# examples and the documentation build. `make docs` builds the documentation
# site alone (offline) into docs/_build/html.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test docs lint bench browser

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pin the CPU build first: an unpinned torch can resolve to a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) scripts/demo.py --out demo_out

# The explorer page tests drive headless Chromium (they skip without it). As root
# on Debian/Ubuntu (CI), install it when missing; elsewhere leave the system alone.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && apt-get install -y -qq chromium chromium-driver \
	  || echo "warning: could not install chromium; the browser tests will skip"; fi

test: setup browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest
	$(VENV)/bin/pytest --doctest-modules graphlstm segmentation
	$(MAKE) docs

# Warnings are errors; --keep-going reports all of them before failing; -E rereads
# every page, so that a warning of an unchanged page is not hidden by the cache (the
# gallery keeps its own cache: an unchanged example does not run again).
docs: setup
	$(VENV)/bin/sphinx-build -W --keep-going -E -q -b html docs docs/_build/html

bench: setup
	$(PY) scripts/benchmark.py all
