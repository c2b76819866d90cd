# Tokens Forge — targets a newcomer can guess. Everything installs itself on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml layers/forge/requirements.txt | sha1sum | cut -c1-12)
PORT ?= 8080
# The JS clients tests/compat drives, pinned by their lock; reinstalled only when it changes.
COMPAT_JS := tests/compat/js
COMPAT_STAMP := $(COMPAT_JS)/node_modules/.installed-$(shell cat $(COMPAT_JS)/package-lock.json | sha1sum | cut -c1-12)

.PHONY: dev test test-fast test-compat test-console compat-deps compat-table browser sim sim-throughput lint format typecheck bench bench-peers bench-statements cost build validate deploy deploy-guided deploy-prod clean

$(STAMP): pyproject.toml layers/forge/requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

$(COMPAT_STAMP): $(COMPAT_JS)/package.json $(COMPAT_JS)/package-lock.json
	npm ci --prefix $(COMPAT_JS) --no-audit --no-fund --loglevel=error
	@rm -f $(COMPAT_JS)/node_modules/.installed-* && touch $@

## The JS clients of the compatibility suite (and the Node.js they run on), from npm.
compat-deps: $(COMPAT_STAMP)

## Debian's Chromium and its driver, for the console's browser tests (tests/console; Playwright
## drives /usr/bin/chromium: no browser is downloaded from anywhere else). Needs root or sudo.
## A CJK font lets the screenshots of the Chinese pages show their text.
browser:
	@test -x /usr/bin/chromium -a -d /usr/share/fonts/truetype/wqy || { \
	  $$(test "$$(id -u)" = 0 || echo sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(test "$$(id -u)" = 0 || echo sudo) \
	    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-wqy-zenhei; }

## The web console's browser tests alone (headless Chromium against the local stack).
test-console: $(STAMP) browser
	$(BIN)/pytest tests/console

## The compatibility suite alone: the official clients against the local stack.
test-compat: $(STAMP) compat-deps
	$(BIN)/pytest tests/compat

## Rewrite README's compatibility table from tests/compat (clients, versions, pending features).
compat-table: $(STAMP) compat-deps
	FORGE_WRITE_COMPAT_TABLE=1 $(BIN)/pytest tests/compat -q -k test_readme_table_matches_the_suite

## Run the whole stack locally on 127.0.0.1:$(PORT) (embedded DynamoDB/S3, demo provider).
dev: $(STAMP)
	PORT=$(PORT) $(BIN)/forge-dev

## Run the whole test suite: lint, types, unit, integration, end-to-end, client compatibility,
## and the SAM app checks.
test: $(STAMP) compat-deps browser lint typecheck
	$(BIN)/pytest

## Tests without the SAM build (faster inner loop).
test-fast: $(STAMP) compat-deps browser
	$(BIN)/pytest -m "not sam"

## The deterministic simulation of the money path, longer than `make test` runs it; a failure
## prints its seed and shortest failing prefix. SEEDS=n runs n seeds from SEED; SIM_FLAGS takes
## more options (--late-requests, --trace, --no-shrink: see python -m tests.sim --help).
SEED ?= 1
STEPS ?= 20000
SEEDS ?= 1
SIM_FLAGS ?=
sim: $(STAMP)
	$(BIN)/python -m tests.sim --seed $(SEED) --steps $(STEPS) --seeds $(SEEDS) $(SIM_FLAGS)

## One account's wallet under DynamoDB's semantics (4 ms a call, per-item serialisation,
## TransactionConflict, 1,000 write units a second per item), in virtual time: settled
## requests a second, refusals, conflicts and throttles by shard count and containers, every
## money rule checked after each run; writes bench/wallet_throughput.json (not part of
## `make test`; docs/simulation.md). THROUGHPUT_FLAGS takes more options, e.g.
## THROUGHPUT_FLAGS="--containers 8,64 --shards 1,4" (python -m tests.sim.throughput --help).
THROUGHPUT_FLAGS ?=
sim-throughput: $(STAMP)
	$(BIN)/python -m tests.sim.throughput --seed $(SEED) --json bench/wallet_throughput.json $(THROUGHPUT_FLAGS)

## Measure overhead, round trips, cold starts and a busy wallet (not part of `make test`).
## The cold starts' bytecode lever reads the built layer (`make build` first); BENCH_ARGS
## passes options, e.g. BENCH_ARGS="--cold-start-before main" (python -m bench --help).
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## Forge beside LiteLLM's proxy, same fake upstream and load, interleaved (not part of
## `make test`): the `peers` part of bench/results.json and docs/performance.md. LiteLLM goes
## into its own virtualenv on first use, pinned to a version checked here (never 1.82.7 or
## 1.82.8: compromised releases); if it cannot be installed the target says so and skips.
## PEERS_ARGS passes options (python -m bench.peers --help).
PEERS_VENV ?= .venv-peers
LITELLM_PIN ?= litellm[proxy]==1.106.12
PEERS_STAMP = $(PEERS_VENV)/.installed-$(shell echo '$(LITELLM_PIN)' | sha1sum | cut -c1-12)
PEERS_ARGS ?=
bench-peers: $(STAMP)
	@set -o pipefail; if [[ ! -f "$(PEERS_STAMP)" ]]; then \
	    echo "make bench-peers: installing $(LITELLM_PIN) into $(PEERS_VENV)"; \
	    { rm -rf "$(PEERS_VENV)" && $(PYTHON) -m venv "$(PEERS_VENV)" \
	      && "$(PEERS_VENV)/bin/python" -m pip install --quiet '$(LITELLM_PIN)' 2>&1 \
	         | { grep -v -F "is ignored: it is neither a file nor a directory" || true; } \
	      && touch "$(PEERS_STAMP)"; } \
	    || { echo "make bench-peers: skipped: $(LITELLM_PIN) could not be installed"; exit 0; }; \
	fi; \
	PEERS_PYTHON="$(PEERS_VENV)/bin/python" $(BIN)/python -m bench.peers $(PEERS_ARGS)

## One statement of an account with 12 months x 5,000 ledger entries, from all history and
## from its compacted month: build time and S3 requests; writes bench/statements.json and its
## table in docs/performance.md (about half an hour on the emulator; not part of `make test`).
bench-statements: $(STAMP)
	$(BIN)/python -m bench.statements

## Dollars per 1M paid requests by part, from a measured run and a dated price file; writes
## bench/cost.json, docs/performance.md's cost section and README's table (not part of
## `make test`). PRICES=path prices with your own file; COST_REQUESTS=n calls of each kind.
PRICES ?= bench/prices.json
COST_REQUESTS ?= 50
cost: $(STAMP)
	$(BIN)/python -m bench.cost --requests $(COST_REQUESTS) --prices $(PRICES)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layer contracts in .importlinter

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy layers/forge/forge tools/forge_tools bench
	@# Each handler module is named `app`, as Lambda imports it: check them one at a time.
	for handler in functions/*/app.py; do $(BIN)/mypy $$handler || exit 1; done

validate:
	tools/sam.sh validate --lint

build:
	tools/sam.sh build

## Deploy the dev stack (samconfig.toml [default]) without questions; PARAMS adds template
## parameters, e.g. make deploy PARAMS="AlarmEmail=ops@example.com". See README "Deploying".
PARAMS ?=
deploy: build
	tools/sam.sh deploy $(if $(PARAMS),--parameter-overrides "Stage=dev $(PARAMS)")

## Choose the stack name, region and parameters interactively (README lists the answers).
deploy-guided: build
	tools/sam.sh deploy --guided

## The prod stack; shows its change set and asks before applying it.
deploy-prod: build
	tools/sam.sh deploy --config-env prod $(if $(PARAMS),--parameter-overrides "Stage=prod $(PARAMS)")

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .local
