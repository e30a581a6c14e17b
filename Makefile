# hitl-loop: two commands on a fresh machine.
#   make demo   set up .venv, start the local stack, run the whole loop on the synthetic world
#   make test   set up .venv and run the test suite (what CI runs); make test-fast: all but e2e and slow tests
#   make bench  the benchmarks behind docs/benchmarks.md (45 min on 2 cores, plus 2 for section 7 and 53 more the first time, to log its MLflow experiment, plus 7.5 for section 8, plus 20 for section 12; bench-quick: under 5)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
# pytest-xdist, one worker per core of the 2-core machines we test on; a module runs whole on one worker (its
# server stack starts once) and the modules that start servers are handed out first (tests/conftest.py).
PYTEST_WORKERS ?= 2
PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: venv demo test test-fast lint down clean browser postgres system bench bench-quick bench-quarters bench-oos bench-selection soak

# torch first, pinned, with pip: the CPU wheel (pip finds it on this machine's disk; nothing else may pull a CUDA
# build). Then the project with uv, pinned: the same versions as pip resolves (compared package by package),
# installed in parallel downloads, a fraction of pip's time on 2 cores. Everything is byte-compiled at install,
# the project's own code too: where PYTHONDONTWRITEBYTECODE is set (it is on this machine), Python never writes a
# .pyc, so each process would otherwise compile every module it imports (measured: importing MLflow, Prefect,
# pandas, pandera, scikit-learn, SciPy and transformers took 6.2 s of CPU without, 3.0 s with; compiling
# everything takes about 22 s once).
UV_VERSION := 0.9.30

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	$(BIN)/python -m compileall -q hitl flows tasks bench >/dev/null
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/hitl demo --config $(CONFIG)

# The browser test drives the Prefect UI in Debian's headless Chromium; install it where we can (root + apt).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "Install chromium and chromium-driver for tests/e2e/test_browser_review.py"; fi; }

# The PostgreSQL run of the end-to-end test needs a local server: Debian's package on loopback (root + apt).
postgres:
	@.ci/postgres

# The apt steps, one after the other (one dpkg lock).
system: browser postgres

# The apt steps run in the background while pip installs; both must succeed before the tests start.
test:
	@$(MAKE) --no-print-directory system & apt=$$!; \
	  $(MAKE) --no-print-directory venv; venv=$$?; \
	  wait $$apt; apt=$$?; [ $$venv = 0 ] && [ $$apt = 0 ]
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PARALLEL) --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not e2e and not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# Three retrain cycles on BANKING77, policy and random picks, 3 seeds: 21 fine-tunes (section 10 of docs/benchmarks.md,
# 77 to 98 min on 2 cores); the same on the synthetic world (14 min); the regression set as it grows, 20 seeds (4 min)
bench-quarters: $(STAMP)
	$(BIN)/python -m bench.quarters
	$(BIN)/python -m bench.quarters --scenario world
	$(BIN)/python -m bench.quarters --estimates

bench-oos: $(STAMP)
	$(BIN)/python -m bench.out_of_scope

# Selection variants against the label-efficiency goal, section 1's seeds and five fresh ones (section 13, 9 min on 2 cores)
bench-selection: $(STAMP)
	$(BIN)/python -m bench.selection_variants

# The chaos soak (issue 26; docs/reliability.md): the deployed stack on a fast clock with faults injected, 30 min on
# SQLite, then 30 on PostgreSQL (37 min each here with start-up and drain). SOAK_ARGS="--minutes 5 --backend sqlite"
soak: $(STAMP) postgres
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

down: $(STAMP)
	$(BIN)/hitl down --config $(CONFIG)

clean:
	-$(BIN)/hitl down --config $(CONFIG)
	rm -rf .hitl
