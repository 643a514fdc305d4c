# The two commands a user needs: `make repro` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
# Stages run `python`: the venv's, as for a user who activated it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test bench venv clean-venv params-style

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Ends with the run's headline table, also when DVC had nothing to rerun.
repro: $(STAMP)
	$(VENV)/bin/dvc repro
	@$(PY) -m tspnet headline

# Rewrite params.yaml as `dvc exp run -S` writes it back, so that -S changes one line only.
params-style: $(STAMP)
	$(PY) -m tests.dvc_repo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
