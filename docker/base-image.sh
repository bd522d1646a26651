#!/usr/bin/env bash
# Makes Corral's Debian base images locally, for machines whose Docker engine cannot pull
# from a registry: `debootstrap --variant=minbase bookworm` from the Debian mirror that apt
# already uses, then `docker import`:
#   corral-base:bookworm       minimal Debian + tini            (FROM of the orchestrator)
#   corral-base-node:bookworm  the same + Blender from Debian    (FROM of the node)
#   corral-base-postgres:bookworm  the same + PostgreSQL from Debian (FROM of corral-postgres,
#                              the database of a farm of several orchestrators)
# Each image carries a label with a hash of this script; an image whose label matches is
# kept, so only the first run on a machine pays for debootstrap (~35 s) and Blender (~55 s).
# CORRAL_BASE_REBUILD=1 forces a rebuild; DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR override
# the mirrors read from /etc/apt/sources.list*. Needs root (debootstrap, chroot).
set -euo pipefail

SUITE=bookworm
BASE_TAG=corral-base:$SUITE
NODE_TAG=corral-base-node:$SUITE
PG_TAG=corral-base-postgres:$SUITE
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${CORRAL_BASE_WORKDIR:-$HERE/../target/docker/rootfs}
RECIPE=$(sha256sum "$0" | cut -c1-16)
LABEL=org.corral.base-recipe

say() { echo "base-image: $*"; }

recipe_of() { docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

if [[ ${CORRAL_BASE_REBUILD:-0} != 1 && $(recipe_of "$BASE_TAG") == "$RECIPE" && $(recipe_of "$NODE_TAG") == "$RECIPE" && $(recipe_of "$PG_TAG") == "$RECIPE" ]]; then
    say "$BASE_TAG, $NODE_TAG and $PG_TAG are up to date (recipe $RECIPE); CORRAL_BASE_REBUILD=1 rebuilds them"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    say "making the base images needs root (debootstrap and chroot): run 'sudo make images'," >&2
    say "or build FROM a registry's image: BASE_IMAGE=debian:bookworm-slim make images" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

# The first deb822 or one-line source that serves $SUITE (or $SUITE-security) from Debian.
find_mirror() {
    local suite=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        case $f in
        *.sources)
            awk -v want="$suite" '
                function flush() { if (uris != "" && (" " suites " ") ~ (" " want " ") && enabled) { split(uris, u, " "); print u[1]; exit } uris = ""; suites = ""; enabled = 1 }
                BEGIN { enabled = 1 }
                /^[[:space:]]*$/ { flush(); next }
                /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
                /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
                /^Enabled:[[:space:]]*no/ { enabled = 0 }
                END { flush() }' "$f"
            ;;
        *)
            awk -v want="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == want) { print $i; exit } }' "$f"
            ;;
        esac
    done | head -n1
}
MIRROR=${DEBIAN_MIRROR:-$(find_mirror "$SUITE")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(find_mirror "$SUITE-security")}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}

ROOT=$WORK/root
cleanup() {
    # Never leave the host's /proc mounted inside a folder that is about to be deleted.
    if mountpoint -q "$ROOT/proc" 2>/dev/null; then umount -l "$ROOT/proc"; fi
    rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"

t0=$SECONDS
say "debootstrap --variant=minbase $SUITE from $MIRROR ..."
if ! debootstrap --variant=minbase --include=tini "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    say "debootstrap failed (log: $WORK/debootstrap.log)" >&2
    exit 1
fi
say "debootstrap took $((SECONDS - t0)) s"

# Like Debian's official -slim images: no manuals, no docs but the copyright files, no
# translations; and no daemons started by package scripts inside the chroot.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/corral-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d" && chmod 755 "$ROOT/usr/sbin/policy-rc.d"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$ROOT/etc/apt/apt.conf.d/90corral-no-recommends"
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

t1=$SECONDS
if ! { in_root apt-get update -q && in_root apt-get -y -q upgrade; } >"$WORK/apt.log" 2>&1; then
    tail -n 30 "$WORK/apt.log" >&2
    say "apt-get update/upgrade in the chroot failed" >&2
    exit 1
fi
# Files installed before the exclusions above took effect.
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/lintian/*
find "$ROOT/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
say "security updates took $((SECONDS - t1)) s"

# Writes the root, less caches and host files, into a Docker image.
import_root() {
    local tag=$1 t=$SECONDS
    in_root apt-get clean
    rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/debconf/*-old \
        "$ROOT"/var/log/apt/* "$ROOT"/var/log/*.log "$ROOT"/tmp/* "$ROOT"/root/.cache
    : >"$ROOT/etc/resolv.conf"
    : >"$ROOT/etc/machine-id" 2>/dev/null || true
    tar --numeric-owner --one-file-system -C "$ROOT" --exclude=./proc/* -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["/bin/bash"]' \
            --change "LABEL $LABEL=$RECIPE" \
            --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase made by Corral's docker/base-image.sh\"" \
            - "$tag" >/dev/null
    say "imported $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')) in $((SECONDS - t)) s"
}

import_root "$BASE_TAG"

# PostgreSQL goes into a copy of the base root, so the node's root stays without it.
umount "$ROOT/proc"
PG_ROOT=$WORK/root-postgres
rm -rf --one-file-system "$PG_ROOT"
cp -a "$ROOT" "$PG_ROOT"
t3=$SECONDS
cp /etc/resolv.conf "$PG_ROOT/etc/resolv.conf"
say "installing PostgreSQL into the database's root ..."
in_pg_root() { chroot "$PG_ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }
mount -t proc proc "$PG_ROOT/proc"
if ! { in_pg_root apt-get update -q && in_pg_root apt-get install -y -q --no-install-recommends postgresql; } >>"$WORK/apt.log" 2>&1; then
    umount "$PG_ROOT/proc"
    tail -n 30 "$WORK/apt.log" >&2
    say "installing PostgreSQL in the chroot failed" >&2
    exit 1
fi
umount "$PG_ROOT/proc"
say "PostgreSQL installed in $((SECONDS - t3)) s"
SAVED_ROOT=$ROOT
ROOT=$PG_ROOT
import_root "$PG_TAG"
ROOT=$SAVED_ROOT
rm -rf --one-file-system "$PG_ROOT"
mount -t proc proc "$ROOT/proc"

t2=$SECONDS
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
say "installing Blender into the node's root ..."
if ! { in_root apt-get update -q && in_root apt-get install -y -q --no-install-recommends blender; } >>"$WORK/apt.log" 2>&1; then
    tail -n 30 "$WORK/apt.log" >&2
    say "installing Blender in the chroot failed" >&2
    exit 1
fi
say "Blender installed in $((SECONDS - t2)) s: $(in_root blender --version 2>/dev/null | head -n1)"
umount "$ROOT/proc"
import_root "$NODE_TAG"
# Base images of an earlier recipe, untagged by the imports above.
docker image prune -f --filter "label=$LABEL" >/dev/null || true
say "base images ready in $((SECONDS - t0)) s"
