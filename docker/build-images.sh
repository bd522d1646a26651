#!/usr/bin/env bash
# Builds Corral's two images from a `corral` binary built on this machine:
#   corral-node          Blender from Debian, corral, a demo scene   (docker/node.Dockerfile)
#   corral-orchestrator  a slim Debian with corral only             (docker/orchestrator.Dockerfile)
#   corral-postgres      PostgreSQL for several orchestrators         (docker/postgres.Dockerfile)
# Usage: docker/build-images.sh [CORRAL_BINARY]     (default target/release/corral)
#
# Without BASE_IMAGE, the bases are made locally (docker/base-image.sh: debootstrap and
# `docker import`, for engines that cannot pull). With a registry, BASE_IMAGE=debian:bookworm-slim
# builds both FROM Debian's image the usual way. The binary must run on Debian bookworm
# (glibc 2.36); one built on bookworm, as CI does, does.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BINARY=${1:-$ROOT/target/release/corral}
TAG=${CORRAL_IMAGE_TAG:-latest}
say() { echo "build-images: $*"; }

[[ -x $BINARY ]] || { say "no corral binary at $BINARY (run: cargo build --release -p corral)" >&2; exit 1; }

if [[ -n ${BASE_IMAGE:-} ]]; then
    node_base=$BASE_IMAGE
    orchestrator_base=$BASE_IMAGE
    postgres_base=$BASE_IMAGE
else
    bash "$HERE/base-image.sh"
    node_base=corral-base-node:bookworm
    orchestrator_base=corral-base:bookworm
    postgres_base=corral-base-postgres:bookworm
fi

# A small build context: only what the Dockerfiles copy (the repository has target/).
CONTEXT=$ROOT/target/docker/context
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin" "$CONTEXT/postgres-bin"
cp "$BINARY" "$CONTEXT/bin/corral"
strip "$CONTEXT/bin/corral" 2>/dev/null || true
cp "$HERE/entrypoint.sh" "$CONTEXT/bin/corral-entrypoint"
cp "$HERE/healthcheck.sh" "$CONTEXT/bin/corral-healthcheck"
cp "$ROOT/scripts/make_scene.py" "$CONTEXT/"
cp "$HERE/postgres-entrypoint.sh" "$CONTEXT/postgres-bin/corral-postgres-entrypoint"
cp "$HERE/postgres-healthcheck.sh" "$CONTEXT/postgres-bin/corral-postgres-healthcheck"
chmod 755 "$CONTEXT"/bin/* "$CONTEXT"/postgres-bin/*
chmod 644 "$CONTEXT/make_scene.py"

# BuildKit when the buildx plugin is there; otherwise the classic builder, which builds
# these Dockerfiles the same (the client warns that it is deprecated; its log is kept).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

build() {
    local name=corral-$1 base=$2 t=$SECONDS log=$ROOT/target/docker/corral-$1.build.log
    say "building $name:$TAG FROM $base ..."
    if ! docker build \
        -f "$HERE/$1.Dockerfile" \
        --build-arg "BASE_IMAGE=$base" \
        -t "$name:$TAG" "$CONTEXT" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        say "building $name failed (full log: $log)" >&2
        exit 1
    fi
    say "built $name:$TAG in $((SECONDS - t)) s"
}
build orchestrator "$orchestrator_base"
build node "$node_base"
build postgres "$postgres_base"
# The images these tags pointed to before (a new binary makes a new top layer).
for name in corral-orchestrator corral-node corral-postgres; do
    docker image prune -f --filter "label=org.opencontainers.image.title=$name" >/dev/null || true
done
for image in corral-orchestrator corral-node corral-postgres; do
    say "$image:$TAG $(docker image inspect --format '{{.Size}}' "$image:$TAG" | awk '{printf "%.0f MB", $1 / 1e6}')"
done
