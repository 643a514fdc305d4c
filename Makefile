# The two commands a user needs: `make repro` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
# Stages run `python`: the venv's, as for a user who activated it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test bench venv clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

repro: $(STAMP)
	$(VENV)/bin/dvc repro

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
