# The two commands a new user runs: `make demo` and `make test`.
# torch is installed first from the pinned CPU wheel: any other torch spec pulls a
# multi-GB CUDA build. Never use uv or poetry for torch.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
STAMP   = $(VENV)/.installed-$(EXTRAS)
# Extras installed with the package; CI adds ray and mlflow (~280 MB) so their tests run:
# `make test EXTRAS=dev,ray,mlflow` (tests marked `ray` / needing mlflow skip without them).
EXTRAS ?= dev

.PHONY: install demo test test-fast bench lint clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/attractor demo --out runs/demo

# The report's browser test needs Debian's chromium; install it when missing (root only).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "note: could not install chromium; browser tests will be skipped"; \
	  else echo "note: chromium missing and not root; browser tests will be skipped"; fi; }

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser and not ray"

bench: install
	$(PY) benchmarks/ensemble_speed.py

# ruff (lint, and format at 100 columns) and the layers of DESIGN.md (import-linter;
# tests/unit/test_layers.py runs it in `make test` too).
lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
