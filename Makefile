# Everything a fresh machine needs: `make demo` runs the main job, `make test` the test suite.
# Both create/refresh the virtual environment in .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: venv demo demo-encoder test test-slow proxy-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# The proxy suite: every task on the offline proxies with the committed proxy checkpoint, then the table.
demo: venv
	$(BIN)/harness run --suite proxy --out runs/proxy
	$(BIN)/harness report runs/proxy --with paper

# The foundation demo: a tiny encoder saved as big_vision .npz, reloaded, its features and the model table.
demo-encoder: venv
	$(BIN)/harness demo

test: venv
	$(BIN)/python -m pytest -q -n 2

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# The CI gate: the proxy suite from scratch (fresh proxy data, records and feature cache) against the baseline.
proxy-check: venv
	set -e; d="$${PROXY_RUNS:-$$(mktemp -d -t proxy-runs-XXXXXX)}"; \
	$(BIN)/harness run --suite proxy --out "$$d/runs" --cache-dir "$$d/cache" --data-dir "$$d/tfds"; \
	$(BIN)/harness check "$$d/runs" --baseline reports/baselines/proxy.json

clean:
	rm -rf $(VENV) .pytest_cache
