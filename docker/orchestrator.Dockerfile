# corral-orchestrator: Corral's orchestrator on a slim Debian (no compiler, no Blender).
#
# Built by `make images` (docker/build-images.sh), whose build context holds bin/ (the
# `corral` binary and this folder's entrypoint and healthcheck scripts). With a registry
# the base is Debian's own image; without one it is BASE_IMAGE=corral-base:bookworm, made
# locally by docker/base-image.sh with tini already in it.
# Steps that do not change go first, the binary last: a rebuild after a code change is
# one COPY.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN set -eu; \
    if ! command -v tini >/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini; \
        apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 corral; \
    useradd --uid 10001 --gid corral --no-create-home --home-dir /var/lib/corral --shell /usr/sbin/nologin corral; \
    mkdir -p /var/lib/corral/orchestrator; \
    chown -R corral:corral /var/lib/corral

ENV CORRAL_LISTEN=0.0.0.0:4000 \
    CORRAL_DATA=/var/lib/corral/orchestrator
# The SQLite database: a volume, so it outlives the container.
VOLUME ["/var/lib/corral/orchestrator"]
EXPOSE 4000
# SIGTERM (Docker's default stop signal) stops the orchestrator gracefully; the database
# is committed on every change, so even SIGKILL loses nothing.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["corral-healthcheck", "/readyz"]
ENTRYPOINT ["corral-entrypoint"]
CMD ["orchestrator"]
LABEL org.opencontainers.image.title="corral-orchestrator" \
      org.opencontainers.image.description="Corral orchestrator: scheduler, SQLite store, HTTP API"

# corral, corral-entrypoint, corral-healthcheck
COPY bin/ /usr/local/bin/
