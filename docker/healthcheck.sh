#!/bin/bash
# corral-healthcheck [PATH]: exits 0 when the corral in this container answers `200` on
# PATH (default /healthz) at the port of CORRAL_LISTEN. Bash's /dev/tcp keeps curl out of
# the images.
set -u
path=${1:-/healthz}
port=${CORRAL_LISTEN##*:}
exec 3<>"/dev/tcp/127.0.0.1/${port:-3000}" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
read -r -t 5 _ code _ <&3 || exit 1
[[ $code == 200 ]]
