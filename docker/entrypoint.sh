#!/bin/sh
# corral-entrypoint: runs the container's command as an unprivileged user, with tini as
# PID 1 (it forwards SIGTERM to corral and reaps orphans) and every log line on stdout.
#
# Started as root (the default), it first picks that user, as the official postgres and
# redis images do: the owner of the folder the command writes its results to
# (CORRAL_OUTPUT for `node`, CORRAL_DATA for `orchestrator`) when that owner is not root,
# so frames written into a host folder you made belong to you; otherwise the image's
# `corral` user (uid 10001), which is then given that folder (Docker makes a missing
# bind-mount folder owned by root). Started with `--user UID`, it runs as that user.
set -eu

case "${1:-}" in
node | orchestrator) set -- corral "$@" ;;
esac

if [ "$(id -u)" = 0 ]; then
    uid=$(id -u corral)
    gid=$(id -g corral)
    main=
    if [ "${1:-}" = corral ]; then
        case "${2:-}" in
        node) main=${CORRAL_OUTPUT:-} ;;
        orchestrator) main=${CORRAL_DATA:-} ;;
        esac
    fi
    if [ -n "$main" ]; then
        mkdir -p "$main"
        if [ "$(stat -c %u "$main")" = 0 ]; then
            chown "$uid:$gid" "$main"
        else
            uid=$(stat -c %u "$main")
            gid=$(stat -c %g "$main")
        fi
    fi
    # The process's own files (the node's Blender logs, the orchestrator's database).
    if [ -n "${CORRAL_DATA:-}" ]; then
        mkdir -p "$CORRAL_DATA"
        [ "$(stat -c %u "$CORRAL_DATA")" = "$uid" ] || chown -R "$uid:$gid" "$CORRAL_DATA"
        export HOME="$CORRAL_DATA"
    fi
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$0" "$@"
fi

exec tini -- "$@" 2>&1
