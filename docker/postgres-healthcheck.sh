#!/bin/bash
# corral-postgres-healthcheck: healthy once PostgreSQL accepts connections.
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
exec "$bin/pg_isready" -q -h 127.0.0.1 -p 5432
