#!/usr/bin/env bash
# End-to-end check: the tutorial's Part 2 orchestrator.js (copied unchanged next to this
# script) drives five `corral node`s on localhost:3001..3005 until it answers
# "Job completed" for frames 1..20, and the 20 PNG frames are on disk.
#
# Usage: tests/tutorial/run.sh [CORRAL_BINARY] [WORK_DIR]
#   CORRAL_BINARY  default: target/debug/corral of this repo (build it with `cargo build -p corral`)
#   WORK_DIR       default: a fresh `mktemp -d`, removed again when the test passes
# The nodes render in their default mode (warm); CORRAL_RENDER_MODE=cold picks the other.
#
# Needs: root (for `unshare --net`, and for apt-get when node's modules are missing),
# util-linux `unshare`, iproute2 `ip`, curl, blender, and a Node.js runtime that can
# require('express') and require('axios'). The npm registry is not reachable here, so
# those come from Debian's node-express and node-axios, installed in /usr/share/nodejs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NAME="tutorial orchestrator.js"

die_early() { # before anything was started: one clear line, then the result line
    echo "$NAME: $*" >&2
    echo "tutorial: 0 passed, 1 failed"
    exit 1
}

# ---------------------------------------------------------------------------------------
# Stage 1, in the machine's own network namespace (apt-get needs the network).
# ---------------------------------------------------------------------------------------
if [[ "${CORRAL_TUTORIAL_NETNS:-}" != 1 ]]; then
    CORRAL=${1:-$REPO/target/debug/corral}
    [[ -x "$CORRAL" ]] || die_early "no corral binary at $CORRAL (run: cargo build -p corral)"
    CORRAL=$(cd "$(dirname "$CORRAL")" && pwd)/$(basename "$CORRAL")
    for tool in unshare ip curl blender; do
        command -v "$tool" >/dev/null || die_early "\`$tool\` is not installed"
    done
    [[ $(id -u) == 0 ]] || die_early "must run as root (it uses \`unshare --net\`)"

    # Debian's own /usr/bin/node searches /usr/share/nodejs, but a node from elsewhere
    # (NodeSource's nodejs package here, nvm, ...) does not: NODE_PATH points it there.
    export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
    node_ok() { command -v node >/dev/null && node -e "require('express'); require('axios')" >/dev/null 2>&1; }
    if ! node_ok; then
        command -v apt-get >/dev/null || die_early "node with express and axios not found, and no apt-get to install nodejs node-express node-axios"
        echo "installing Debian packages nodejs node-express node-axios ..."
        pkgs=(nodejs node-express node-axios)
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
            apt-get update -q >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 ||
                die_early "apt-get install ${pkgs[*]} failed"
        fi
        node_ok || die_early "node still cannot require('express') and require('axios') after apt-get install"
    fi

    if [[ -n "${2:-}" ]]; then
        mkdir -p "$2"
        WORK=$(cd "$2" && pwd)
        export CORRAL_TUTORIAL_OWN_WORK=0
    else
        WORK=$(mktemp -d)
        export CORRAL_TUTORIAL_OWN_WORK=1
    fi
    # The orchestrator hard-codes ports 3001..3005 and 4000: run everything in a fresh,
    # empty network namespace so they cannot collide with anything else on the machine
    # (and nothing outside can reach them). The child only sees its own loopback.
    export CORRAL_TUTORIAL_NETNS=1
    exec unshare --net -- bash "${BASH_SOURCE[0]}" "$CORRAL" "$WORK"
fi

# ---------------------------------------------------------------------------------------
# Stage 2, inside the new network namespace.
# ---------------------------------------------------------------------------------------
CORRAL_SRC=$1
WORK=$2
ip link set lo up

# localhost must reach the nodes. Node >= 17 returns addresses in the resolver's order,
# so where /etc/hosts also maps localhost to ::1, axios would connect to
# http://localhost:3001 over IPv6 first (Node 18 has no fallback to IPv4), while the
# nodes listen on 127.0.0.1 (the address the tutorial's nodes are reached on).
# --dns-result-order=ipv4first makes node resolve localhost to 127.0.0.1 whatever
# /etc/hosts says, without touching orchestrator.js or exposing the nodes on IPv6.
export NODE_OPTIONS="--dns-result-order=ipv4first${NODE_OPTIONS:+ $NODE_OPTIONS}"
# Check it the way axios will resolve it: node's dns.lookup with the default family.
localhost_addr=$(node -e "require('dns').lookup('localhost', (e, a) => console.log(e ? 'error: ' + e.code : a))")
[[ $localhost_addr == 127.0.0.1 ]] ||
    die_early "node resolves localhost to $localhost_addr, not 127.0.0.1 (check /etc/hosts)"

LOGS=$WORK/logs
OUT=$WORK/output
SCENE=$WORK/scene.blend
mkdir -p "$LOGS" "$OUT" "$WORK/bin"
# A private copy, so a concurrent `cargo build` cannot swap the binary mid-test.
CORRAL=$WORK/bin/corral
cp "$CORRAL_SRC" "$CORRAL"

PORTS=(3001 3002 3003 3004 3005)
NODE_PIDS=()
ORCH_PID=
PASSED=0

log() { echo "[$(date +%H:%M:%S)] $*"; }
fail() { log "FAIL: $*"; exit 1; }

# Escape a path for pgrep's extended regex.
regex_escape() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }

stop_pid() { # TERM, wait up to 15 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 15 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

print_logs() {
    local f
    for f in "$LOGS"/*.log; do
        [[ -e "$f" ]] || continue
        echo "----- $(basename "$f") (last 80 lines) -----"
        tail -n 80 "$f"
    done
    for f in "$WORK"/data-*/*; do
        [[ -f "$f" ]] || continue
        echo "----- Blender log ${f#"$WORK"/} (last 20 lines) -----"
        tail -n 20 "$f"
    done
    echo "----- output dir -----"
    ls -la "$OUT" 2>/dev/null || true
}

on_exit() {
    local rc=$? pid leftovers
    trap - EXIT INT TERM
    set +e
    [[ -n "$ORCH_PID" ]] && stop_pid "$ORCH_PID"
    for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
    # Every Blender a node started has the scene path (cold: `blender -b SCENE ...`) or the
    # node's data folder (warm: `blender ... --python DATA/warm-driver.py`) on its command
    # line, as has its supervisor (`corral __reaper -- blender ...`); the nodes (which have
    # them too) are gone by now, so anything still matching was left behind.
    sleep 0.5
    leftover_pattern="$(regex_escape "$SCENE")|$(regex_escape "$WORK/data-")"
    leftovers=$(pgrep -af -- "$leftover_pattern")
    if [[ -n "$leftovers" ]]; then
        log "FAIL: processes left running after the nodes stopped:"
        echo "$leftovers"
        pgrep -f -- "$leftover_pattern" | xargs -r kill -KILL
        rc=1
    fi
    if [[ $rc == 0 && $PASSED == 1 ]]; then
        [[ "${CORRAL_TUTORIAL_OWN_WORK:-0}" == 1 ]] && rm -rf -- "$WORK"
        echo "tutorial: 1 passed, 0 failed"
        exit 0
    fi
    print_logs
    log "work dir kept: $WORK"
    echo "tutorial: 0 passed, 1 failed"
    exit 1
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "work dir: $WORK; corral: $CORRAL_SRC; $(node --version) with NODE_PATH=${NODE_PATH:-}; render mode: ${CORRAL_RENDER_MODE:-warm (default)}"

log "generating the scene"
blender -b --factory-startup --python "$REPO/scripts/make_scene.py" -- "$SCENE" \
    --width 64 --height 48 --samples 4 --start 1 --end 20 >"$LOGS/make_scene.log" 2>&1 ||
    fail "make_scene.py failed"
[[ -s "$SCENE" ]] || fail "make_scene.py wrote no $SCENE"

for port in "${PORTS[@]}"; do
    "$CORRAL" node --listen "127.0.0.1:$port" --blend "$SCENE" --output "$OUT" \
        --data "$WORK/data-$port" --threads 1 >"$LOGS/node-$port.log" 2>&1 &
    NODE_PIDS+=($!)
done
for i in "${!PORTS[@]}"; do
    port=${PORTS[$i]}
    for ((t = 0; t < 200; t++)); do
        grep -q "^corral node listening on http://127.0.0.1:$port\$" "$LOGS/node-$port.log" && break
        kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || fail "corral node on port $port exited at start"
        sleep 0.1
    done
    [[ $t -lt 200 ]] || fail "corral node on port $port printed no listening line in 20 s"
done
log "5 corral nodes listening on 127.0.0.1:3001..3005"

(cd "$HERE" && exec node orchestrator.js) >"$LOGS/orchestrator.log" 2>&1 &
ORCH_PID=$!
for ((t = 0; t < 200; t++)); do
    curl -s -o /dev/null --max-time 2 http://localhost:4000/ && break
    kill -0 "$ORCH_PID" 2>/dev/null || fail "node orchestrator.js exited at start"
    sleep 0.1
done
[[ $t -lt 200 ]] || fail "the orchestrator did not answer on port 4000 in 20 s"
log "orchestrator up: $(head -n 1 "$LOGS/orchestrator.log")"

# The tutorial's own request (Part 2, Step 4), with -s.
start=$(date +%s.%N)
response=$(curl -s -X POST http://localhost:4000/render -H "Content-Type: application/json" -d '{"from": 1, "to": 20}' -i | tr -d '\r')
echo "$response" | sed 's/^/    /'
[[ ${response%%$'\n'*} =~ ^HTTP/[0-9.]+\ 202 ]] || fail "POST /render did not answer 202"
jobId=$(sed -n 's/.*"jobId":"\([^"]*\)".*/\1/p' <<<"$response")
[[ -n "$jobId" ]] || fail "no jobId in the POST /render answer"

code= body=
deadline=$(($(date +%s) + 120))
while (($(date +%s) < deadline)); do
    sleep 1
    code=$(curl -s -o "$WORK/status.body" -w '%{http_code}' --max-time 10 "http://localhost:4000/status/$jobId") || code=000
    body=$(cat "$WORK/status.body" 2>/dev/null || true)
    [[ $code == 200 && $body == "Job completed" ]] && break
    [[ $code == 404 ]] && fail "GET /status/$jobId: 404 $body"
done
end=$(date +%s.%N)
[[ $code == 200 && $body == "Job completed" ]] ||
    fail "no 'Job completed' within 120 s; last answer: $code $body"
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
log "GET /status/$jobId: $code $body"

expected=$(for f in $(seq 1 20); do printf 'blender-render_%04d.png\n' "$f"; done)
# The nodes stage frames in OUT/.corral-partial/JOB/ and rename each into OUT when Blender
# reports it saved; the per-job folders are removed, the (then empty) staging folder stays.
if [[ -d "$OUT/.corral-partial" ]]; then
    debris=$(find "$OUT/.corral-partial" -mindepth 1)
    [[ -z "$debris" ]] || fail "leftovers in $OUT/.corral-partial: $debris"
fi
actual=$(ls -A "$OUT" | grep -vx '\.corral-partial' | sort || true)
[[ "$actual" == "$expected" ]] || fail "output dir does not hold exactly blender-render_0001.png..0020.png: $(echo $actual)"
for f in $expected; do
    magic=$(head -c 8 "$OUT/$f" | od -An -tx1 | tr -d ' \n')
    [[ $magic == 89504e470d0a1a0a ]] || fail "$f is not a PNG (starts with $magic)"
done
log "20 PNG frames in $OUT"
log "render took ${elapsed} s (POST /render to 'Job completed', 20 frames of 64x48 over 5 nodes, --threads 1)"
PASSED=1
