# Everything a fresh machine needs: `make demo` runs the main job, `make test` the test suite.
# Both create/refresh the virtual environment in .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: venv demo demo-encoder test test-heavy test-slow proxy-check package-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=77"
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

test-heavy: venv
	$(BIN)/python -m pytest -q -n 2 -m heavy

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# The CI gate: the proxy suite from scratch (fresh proxy data, records and feature cache) against the baseline.
proxy-check: venv
	set -e; d="$${PROXY_RUNS:-$$(mktemp -d -t proxy-runs-XXXXXX)}"; \
	$(BIN)/harness run --suite proxy --out "$$d/runs" --cache-dir "$$d/cache" --data-dir "$$d/tfds"; \
	$(BIN)/harness check "$$d/runs" --baseline reports/baselines/proxy.json

# The package as `pip install .` gives it to a user, away from this checkout: the wheel, built from a copy of
# the sources (no stale build/ files), goes into a fresh venv that borrows .venv's dependencies through a
# path line in a .pth (a plain path: .venv's own .pth files, among them the editable install of this
# checkout, are not run); then, from an empty folder, no top-level `tasks` package, the nine tasks
# registered, one proxy task (lit_zeroshot: the proxy checkpoint, sentencepiece model and CLIP prompts,
# all package data) and its report with the paper's rows (paper.json).
package-check: venv
	set -e; d="$$(mktemp -d -t package-check-XXXXXX)"; trap 'rm -rf "$$d"' EXIT; \
	mkdir "$$d/src" "$$d/elsewhere"; \
	tar -c --exclude=__pycache__ pyproject.toml README.md harness tasks | tar -x -C "$$d/src"; \
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w "$$d/wheel" "$$d/src"; \
	$(BIN)/python -m venv --without-pip "$$d/venv"; \
	$(BIN)/pip --python "$$d/venv/bin/python" install -q --no-deps --no-index "$$d"/wheel/*.whl; \
	py="$$d/venv/bin/python"; harness="$$d/venv/bin/harness"; \
	site="$$("$$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$$site/_harness_deps.pth"; \
	cd "$$d/elsewhere"; \
	if "$$py" -c 'import tasks' 2>/dev/null; then echo "package-check: a top-level 'tasks' is importable"; exit 1; fi; \
	case "$$("$$py" -c 'import harness.tasks; print(harness.tasks.__file__)')" in \
	    "$$site"/harness/tasks/*) ;; *) echo "package-check: harness.tasks is not the wheel's"; exit 1;; esac; \
	test "$$("$$harness" ls tasks | wc -l)" -eq 9; \
	ckpt="$$("$$py" -c 'import harness; print(harness.ASSETS / "proxy_sovit.npz")')"; \
	"$$harness" run --task lit_zeroshot --preset proxy --ckpt "$$ckpt" --out runs --data-dir "$$d/tfds" \
	    --cache-dir "$$d/cache"; \
	"$$harness" report runs --with paper > report.md; \
	grep -q "^| metric | proxy_sovit.npz |" report.md; grep -q "^| metric | .*(paper) |" report.md; \
	echo "package-check: the installed wheel ran lit_zeroshot[proxy] from $$PWD and reported it with the paper's rows"

clean:
	rm -rf $(VENV) .pytest_cache
