# Corral's entry points. `make test` is what CI runs (.ci/run calls exactly it).

CARGO ?= cargo
# Where cargo puts binaries (honours CARGO_TARGET_DIR like cargo does).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: test deps build release demo images docker-test fuzz addon

## test: install what the tests need, then formatting, clippy (warnings denied), every test
## (the node's tests and the tutorial test once per render mode, warm and cold), the fault
## soak (about 3 minutes, alone: it is #[ignore]d in the workspace run so it never shares
## the cores with other tests; it prints its seed), the hostile-nodes-and-clients test on
## its own (tests/hostile.rs: memory bound), the Docker end-to-end test (SKIPPED, loudly,
## when no Docker engine answers), a short fuzzing run of every fuzz target (20 s each),
## and the property-based API tests (schemathesis against a real orchestrator and nodes)
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked
	$(CARGO) test -p corral --test soak --locked -- --ignored --nocapture
	$(CARGO) test -p corral --test hostile --locked -- --ignored --nocapture
	CORRAL_TEST_RENDER_MODE=cold $(CARGO) test -p corral --test node --locked
	bash tests/tutorial/run.sh $(TARGET_DIR)/debug/corral
	CORRAL_RENDER_MODE=cold bash tests/tutorial/run.sh $(TARGET_DIR)/debug/corral
	python3 tests/docker/e2e.py
	bash scripts/fuzz.sh short
	bash tests/api/run.sh $(TARGET_DIR)/debug/corral

## fuzz: every fuzz target for 10 minutes (scripts/fuzz.sh long [SECONDS])
fuzz:
	bash scripts/fuzz.sh long

## deps: Blender, Node.js with express and axios, curl, iproute2 (apt-get when root),
## cargo-fuzz, and schemathesis in a venv (target/api-venv)
deps:
	bash scripts/install-deps.sh

## build: debug build of the `corral` binary
build:
	$(CARGO) build -p corral --locked

## demo: the first command: installs Blender if missing, builds, starts `corral up`, renders a
## generated animation with a progress bar, and prints where the frames are (target/demo/)
demo:
	CARGO="$(CARGO)" bash scripts/demo.sh

## addon: the Blender add-on, installable from Blender's preferences, at
## $(TARGET_DIR)/corral-addon.zip (README, "Blender add-on")
addon:
	python3 scripts/build_addon.py $(TARGET_DIR)/corral-addon.zip

## release: optimised build at target/release/corral
release:
	$(CARGO) build -p corral --release --locked

## images: the Docker images corral-node and corral-orchestrator (README, "Docker"); without
## BASE_IMAGE their Debian bases are made locally with debootstrap (root), with
## BASE_IMAGE=debian:bookworm-slim they are built FROM a registry's image
images: release
	bash docker/build-images.sh $(TARGET_DIR)/release/corral

## docker-test: the Docker end-to-end test (builds the images, runs a compose farm of three
## nodes through node loss, a partition and an orchestrator restart, then a farm sharing no
## volume with uploaded scenes and tokens, compose.remote.yaml); SKIPPED without Docker
docker-test:
	python3 tests/docker/e2e.py
