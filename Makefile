# fetchmux — the two commands a new machine needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build deps demo test fuzz lint ci clean bench bench-smoke

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(CARGO) build --release

## The main job: serve fixtures on 127.0.0.1 and download them through fetchmux.
demo: build
	@bash scripts/demo.sh

## Every test: unit tests, integration tests against the test server, doc tests.
test: deps
	$(CARGO) test --all-targets

## The request parser and validator on generated input (src/front/jsonl/fuzz.rs), far longer
## than `make test` runs it: FUZZ_CASES cases per property (a few minutes at the default).
FUZZ_CASES ?= 100000
fuzz: deps
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --lib front::jsonl::fuzz

## Formatting, lints, and no import cycle between source files.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	python3 scripts/import_cycles.py

## Benchmarks against curl, wget2, aria2 and a one-at-a-time baseline (root; installs
## nginx, curl, wget2, aria2 from Debian when missing; writes docs/benchmarks.md and
## docs/benchmarks.svg; settings in bench/bench.py). bench-smoke: small, correctness only (CI).
bench: build
	bash bench/run.sh

bench-smoke: build
	bash bench/run.sh --smoke

## What CI runs (.ci/run).
ci: test lint demo bench-smoke

clean:
	$(CARGO) clean
