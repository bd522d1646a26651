# Corral's entry points. `make test` is what CI runs (.ci/run calls exactly it).

CARGO ?= cargo

.PHONY: test deps check build release

## test: install what the tests need, then formatting, clippy (warnings denied), every test
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked
	bash tests/tutorial/run.sh target/debug/corral

## deps: Blender, Node.js with express and axios, curl, iproute2 (apt-get when root)
deps:
	bash scripts/install-deps.sh

## build: debug build of the `corral` binary
build:
	$(CARGO) build -p corral --locked

## release: optimised build at target/release/corral
release:
	$(CARGO) build -p corral --release --locked
