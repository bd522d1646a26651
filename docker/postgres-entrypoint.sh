#!/bin/bash
# corral-postgres-entrypoint: creates the database cluster on first start (the password is
# CORRAL_DB_PASSWORD, required; clients authenticate with SCRAM over the private network),
# then runs PostgreSQL as the `postgres` user in the foreground, where `docker stop`'s
# SIGTERM is a smart shutdown.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
: "${CORRAL_DB_PASSWORD:?set CORRAL_DB_PASSWORD (the password the orchestrators use)}"
if [[ $(id -u) -eq 0 ]]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi
if [[ ! -s $PGDATA/PG_VERSION ]]; then
    pwfile=$(mktemp)
    printf '%s\n' "$CORRAL_DB_PASSWORD" >"$pwfile"
    "$bin/initdb" -D "$PGDATA" -U "$CORRAL_DB_USER" --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # The orchestrators' database, created by a server that listens on nothing yet.
    "$bin/postgres" --single -D "$PGDATA" postgres <<<"CREATE DATABASE \"$CORRAL_DB_NAME\" OWNER \"$CORRAL_DB_USER\";" >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
