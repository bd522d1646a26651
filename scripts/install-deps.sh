#!/usr/bin/env bash
# Installs what Corral's tests need when it is missing: Blender (Debian's package), PostgreSQL
# (the store's tests start a server of their own with initdb and pg_ctl), and for
# the tutorial drop-in test Node.js with express and axios (Debian's packages, since the npm
# registry may be out of reach), curl, iproute2 and util-linux's unshare; and where a Docker
# engine is installed, what the Docker end-to-end test needs: debootstrap (the images' base
# is made locally) and Compose (Debian's docker-compose, when `docker compose` is missing);
# for the dashboard, FFmpeg (preview videos) and, for its browser test, Chromium with
# chromedriver.
# As root it uses apt-get; otherwise it prints one line naming what is missing and fails.
# Then, from the language registries: cargo-fuzz (`cargo install --locked`, for
# scripts/fuzz.sh) and schemathesis in a Python venv (for tests/api/run.sh; the venv is
# CORRAL_API_VENV, default target/api-venv, with python3-venv from apt-get when missing).
set -euo pipefail

# Versions the fuzz and API steps were verified with.
CARGO_FUZZ_VERSION=0.13.2
SCHEMATHESIS_VERSION=4.32.5

export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
missing=()
command -v blender >/dev/null || missing+=(blender)
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
# The dashboard's preview videos, and its browser test (headless Chromium via chromedriver).
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# The store's tests run on a real PostgreSQL server the tests start themselves.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if ! command -v node >/dev/null; then
    missing+=(nodejs node-express node-axios)
elif ! node -e "require('express'); require('axios')" >/dev/null 2>&1; then
    missing+=(node-express node-axios)
fi
if command -v docker >/dev/null; then
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
        missing+=(docker-compose)
    fi
fi

# Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${CORRAL_API_VENV:-$root/target/api-venv}
if [[ ! -x $venv/bin/schemathesis ]] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: every system package the tests need is installed ($(blender --version 2>/dev/null | head -n1))"
elif [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install-deps: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
else
    echo "install-deps: installing ${missing[*]} with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    echo "install-deps: installed ${missing[*]} ($(blender --version 2>/dev/null | head -n1))"
fi

# cargo-fuzz, for scripts/fuzz.sh (the fuzz targets build with the stable toolchain
# through RUSTC_BOOTSTRAP=1).
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked) ..."
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

# schemathesis, for tests/api/run.sh, pinned to the version the API tests were written
# against, in its own venv (Debian's pip refuses to install into the system Python).
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "install-deps: installing schemathesis $SCHEMATHESIS_VERSION into $venv ..."
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
echo "install-deps: $(cargo fuzz --version), $("$venv/bin/schemathesis" --version)"
