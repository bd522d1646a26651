# corral-postgres: PostgreSQL from Debian, for a Corral farm whose orchestrators share one
# database (compose.postgres.yaml). Built by `make images` (docker/build-images.sh); without
# a registry FROM corral-base-postgres:bookworm, made locally by docker/base-image.sh with
# PostgreSQL already in it.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN set -eu; \
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; \
        apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    mkdir -p /var/lib/corral/postgres; \
    chown postgres:postgres /var/lib/corral/postgres

ENV PGDATA=/var/lib/corral/postgres \
    CORRAL_DB_USER=corral \
    CORRAL_DB_NAME=corral
VOLUME ["/var/lib/corral/postgres"]
EXPOSE 5432
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=5 CMD ["corral-postgres-healthcheck"]
ENTRYPOINT ["corral-postgres-entrypoint"]
LABEL org.opencontainers.image.title="corral-postgres" \
      org.opencontainers.image.description="PostgreSQL for a Corral farm of several orchestrators"

COPY postgres-bin/ /usr/local/bin/
