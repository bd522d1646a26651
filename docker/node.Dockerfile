# corral-node: a Corral render node with Debian's Blender and a demo scene.
#
# Built by `make images` (docker/build-images.sh), whose build context holds bin/ (the
# `corral` binary and this folder's entrypoint and healthcheck scripts) and make_scene.py.
# With a registry the base is Debian's own image; without one it is
# BASE_IMAGE=corral-base-node:bookworm, made locally by docker/base-image.sh with Blender
# and tini already in it (so nothing is downloaded here).
# Steps that do not change go first, the binary last: a rebuild after a code change is
# one COPY.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

COPY make_scene.py /opt/corral/make_scene.py
# The scene rendered when a job names none (/opt/corral/demo.blend): 160x120, 16 samples,
# Cycles, denoising off (Debian's Blender has no denoiser), frames 1-120.
RUN set -eu; \
    if ! command -v blender >/dev/null || ! command -v tini >/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends blender tini; \
        apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 corral; \
    useradd --uid 10001 --gid corral --no-create-home --home-dir /var/lib/corral --shell /usr/sbin/nologin corral; \
    mkdir -p /srv/scenes /srv/output /var/lib/corral/node; \
    chown -R corral:corral /srv/output /var/lib/corral; \
    blender -b --factory-startup --python /opt/corral/make_scene.py -- /opt/corral/demo.blend \
        --motion --width 160 --height 120 --samples 16 --end 120 >/tmp/make_scene.log 2>&1 \
        || { cat /tmp/make_scene.log; exit 1; }; \
    rm -rf /tmp/make_scene.log /root/.config; \
    test -s /opt/corral/demo.blend

ENV CORRAL_LISTEN=0.0.0.0:3000 \
    CORRAL_BLEND=/opt/corral/demo.blend \
    CORRAL_SCENES=/srv/scenes \
    CORRAL_OUTPUT=/srv/output \
    CORRAL_DATA=/var/lib/corral/node
EXPOSE 3000
# SIGTERM (Docker's default stop signal) makes the node kill its Blender process groups
# and exit; corral-entrypoint runs tini as PID 1 to forward it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["corral-healthcheck", "/healthz"]
ENTRYPOINT ["corral-entrypoint"]
CMD ["node"]
LABEL org.opencontainers.image.title="corral-node" \
      org.opencontainers.image.description="Corral render node: corral node with Debian's Blender"

# corral, corral-entrypoint, corral-healthcheck
COPY bin/ /usr/local/bin/
