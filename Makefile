# fetchmux — the two commands a new machine needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build deps demo test lint ci clean bench bench-smoke

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(CARGO) build --release

## The main job: serve fixtures on 127.0.0.1 and download them through fetchmux.
demo: build
	@bash scripts/demo.sh

## Every test: unit tests, integration tests against the test server, doc tests; then the
## Python client's tests (clients/python) against the debug binary cargo built for them,
## wherever cargo puts it (CARGO_TARGET_DIR or a config: asked of `cargo metadata`).
test: deps
	$(CARGO) test --all-targets
	$(CARGO) build
	FETCHMUX="$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/fetchmux" \
	  python3 -m unittest discover -s clients/python/tests -v

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
