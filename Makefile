# The two commands that matter: `make up` (the whole stack on 127.0.0.1) and `make test`.
# Everything else here is a step they run; each step is skipped when already done.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# SECURE=1: the security plugin on for this command (TLS, users, the adapter's token; credentials in .cache/run/).
# Give it to every command of a secured stack (up, bootstrap, status, demo, bench …), or set opensearch.security: true
# in visual-search.yaml instead.
ifeq ($(SECURE),1)
export VS_OPENSEARCH__SECURITY := true
endif
# TRITON_REPLICAS=N: N local Triton servers (replica i on the configured ports + 10 × i); the adapter spreads
# requests over them and re-sends a dead one's requests to another. Same rule: give it to every command.
ifdef TRITON_REPLICAS
export VS_TRITON__REPLICAS := $(TRITON_REPLICAS)
endif
# NODES=N: N local OpenSearch nodes formed as one cluster (node i on 9200 + i, transport 9300 + i; shards = N,
# 1 replica). Same rule: give it to every command of that stack.
ifdef NODES
export VS_OPENSEARCH__NODES := $(NODES)
endif

.PHONY: up down status bootstrap models opensearch browser test test-cluster test-unit lint bench bench-quick bench-gpu demo replay venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -e ".[all,dev]"
	@touch $(STAMP)

venv: $(STAMP)

models: venv
	$(PY) -m export

opensearch: venv
	$(PY) -m localstack.opensearch_dist

up: models opensearch
	$(PY) -m cli up

down:
	@test -x $(PY) && $(PY) -m cli down || echo "nothing to stop (no venv)"

status: venv
	$(PY) -m cli status

bootstrap: venv
	$(PY) -m cli bootstrap

# the headless browser the viewer's tests drive (Debian's chromium + chromium-driver), installed when missing
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null || \
		($(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver)

# the tests also start a secured node (tests/integration/test_security.py): the security plugin's build too
test: models opensearch browser
	VS_OPENSEARCH__SECURITY=true $(PY) -m localstack.opensearch_dist
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -rs --durations=15

# three secure OpenSearch nodes and two Triton replicas under faults (tests/cluster); CI runs it after `make test`
test-cluster: models opensearch
	VS_OPENSEARCH__SECURITY=true $(PY) -m localstack.opensearch_dist
	$(PY) -m pytest -q -rA --durations=10 -m cluster tests/cluster

test-unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: up
	$(PY) -m bench

bench-quick: up
	$(PY) -m bench --quick

bench-gpu: venv
	$(PY) -m bench.gpu

demo: up
	$(PY) -m cli demo $(FOLDER)

# re-drive dead letters (retryable ones; ALL=1 also the permanently failed) through the ingest pipeline
replay: venv
	$(PY) -m cli replay $(if $(ALL),--all)

clean: down
	rm -rf $(VENV) .cache/run
