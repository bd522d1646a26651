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
set -euo pipefail

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

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: everything the tests need is installed ($(blender --version 2>/dev/null | head -n1))"
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install-deps: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]} with apt-get ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: installed ${missing[*]} ($(blender --version 2>/dev/null | head -n1))"
