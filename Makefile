# fetchmux — the two commands a new machine needs are `make demo` and `make test`.
CARGO ?= cargo
# Where `make install` puts things: $(DESTDIR)$(PREFIX)/bin/fetchmux, the man pages, the
# completions of bash, zsh and fish, and the protocol documents.
PREFIX ?= /usr/local
DESTDIR ?=
BIN ?= $(or $(CARGO_TARGET_DIR),target)/release/fetchmux

.PHONY: all build deps demo test fuzz lint ci clean bench bench-smoke install install-files

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

## The release binary, its man pages (fetchmux.1, fetchmux-get.1, …), bash/zsh/fish
## completions and the protocol documents, under $(DESTDIR)$(PREFIX).
install: build
	@$(MAKE) --no-print-directory install-files

## The same from an already built $(BIN) (tests/get_cli.rs runs it with the debug binary).
install-files:
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d $(DESTDIR)$(PREFIX)/share/doc/fetchmux
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/fetchmux
	$(BIN) generate man $(DESTDIR)$(PREFIX)/share/man/man1
	$(BIN) generate completions bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/fetchmux
	$(BIN) generate completions zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_fetchmux
	$(BIN) generate completions fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/fetchmux.fish
	install -m 644 docs/protocol.md docs/protocol.schema.json docs/fronts.md docs/get.md \
	  $(DESTDIR)$(PREFIX)/share/doc/fetchmux

## What CI runs (.ci/run).
ci: test lint demo bench-smoke

clean:
	$(CARGO) clean
