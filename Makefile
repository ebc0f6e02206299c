# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   -- create .venv, install lesionatlas, run the main job on the embedded synthetic cohort
#   make test   -- create .venv, install lesionatlas with its test tools, run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_run

.PHONY: setup test demo lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(VENV)/bin/ruff check --quiet src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n 2 -q

demo: setup
	$(VENV)/bin/lesionatlas demo --out $(DEMO_OUT)

bench: setup
	$(PY) benchmarks/data_scale.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
