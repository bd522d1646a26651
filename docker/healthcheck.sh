#!/bin/sh
# corral-healthcheck [PATH]: exits 0 when the corral in this container answers `200` on
# PATH (default /healthz) at the port of CORRAL_LISTEN, over HTTPS pinned to the server's
# own certificate when it made one in CORRAL_DATA/tls (see `corral healthcheck`).
exec corral healthcheck "${1:-/healthz}"
