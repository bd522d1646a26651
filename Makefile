# Corral's entry points. `make test` is what CI runs (.ci/run calls exactly it).

CARGO ?= cargo
# Where cargo puts binaries (honours CARGO_TARGET_DIR like cargo does).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: test deps build release

## test: install what the tests need, then formatting, clippy (warnings denied), every test
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked
	bash tests/tutorial/run.sh $(TARGET_DIR)/debug/corral

## deps: Blender, Node.js with express and axios, curl, iproute2 (apt-get when root)
deps:
	bash scripts/install-deps.sh

## build: debug build of the `corral` binary
build:
	$(CARGO) build -p corral --locked

## release: optimised build at target/release/corral
release:
	$(CARGO) build -p corral --release --locked
