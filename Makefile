# The two commands a user needs: `make repro` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
# Stages run `python`: the venv's, as for a user who activated it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# The HTML template of `dvc plots show` / `dvc plots diff` (.dvc/config plots.html_template), with the
# Vega libraries inlined from the pinned vl-convert-python, so the page renders with no network.
PLOT_PAGE := .dvc/plots/offline.html

.PHONY: repro test bench venv clean-venv check-plots params-style

venv: $(STAMP) $(PLOT_PAGE)

$(PLOT_PAGE): $(STAMP) src/tspnet/plot_page.py
	$(PY) -m tspnet.plot_page build $@

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Ends with the run's headline table, also when DVC had nothing to rerun.
repro: venv
	$(VENV)/bin/dvc repro
	@$(PY) -m tspnet headline

# Rewrite params.yaml as `dvc exp run -S` writes it back, so that -S changes one line only.
params-style: $(STAMP)
	$(PY) -m tests.dvc_repo

test: venv
	$(PY) -m pytest -q

bench: venv
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# `dvc plots show` and `dvc plots diff` (workspace vs HEAD), each opened in headless Chromium with
# the network off: every plot of dvc.yaml drawn, no request, no script error (needs chromium).
check-plots: venv
	mkdir -p dvc_plots
	$(VENV)/bin/dvc plots show -o dvc_plots/show
	$(PY) -m tspnet.plot_page check dvc_plots/show/index.html --screenshot dvc_plots/show/screenshot.png
	$(VENV)/bin/dvc plots diff -o dvc_plots/diff
	$(PY) -m tspnet.plot_page check dvc_plots/diff/index.html --screenshot dvc_plots/diff/screenshot.png

clean-venv:
	rm -rf $(VENV)
