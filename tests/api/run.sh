#!/usr/bin/env bash
# Property-based API tests: schemathesis generates requests from the OpenAPI documents and
# sends them to a real `corral orchestrator` (its document read at run time from
# /api/v1/openapi.json) with two real `corral node`s registered, then to one of those
# nodes (tests/api/node-openapi.yaml, written by hand). Checks on every answer:
#   not_a_server_error           no 5xx
#   response_schema_conformance  answers match the documented schemas
#   problem_body_on_error        every 4xx/5xx is an RFC 9457 problem; a 400 names its field
#   refusal_stores_nothing       a refused state-changing request stored no job and no node
# (the last two in tests/api/hooks.py). The run is bounded (examples per operation) and
# seeded: the seed is printed, and CORRAL_API_SEED=N reruns the same requests.
#
# Usage: tests/api/run.sh CORRAL_BINARY [WORK_DIR]
#   CORRAL_BINARY  the `corral` binary to test (this script builds nothing)
#   WORK_DIR       default: a fresh `mktemp -d`, removed when every check passed
# Environment: CORRAL_API_SEED (default 20261130), CORRAL_API_EXAMPLES (per operation,
# default 40), CORRAL_API_PHASES (default examples,coverage,fuzzing; add `stateful` for
# request sequences), CORRAL_API_EXTRA_CHECKS (more schemathesis checks, comma-separated,
# e.g. status_code_conformance), CORRAL_API_VENV (the schemathesis venv scripts/install-deps.sh makes,
# default target/api-venv).
#
# Runs inside a private network namespace (`unshare --net`, so root): the generated
# requests include node URLs the orchestrator then probes, and those must not leave this
# machine. Needs util-linux `unshare`, iproute2 `ip`, curl and Blender (for the nodes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

fail_early() {
    echo "api: $*" >&2
    echo "api: 0 passed, 1 failed"
    exit 1
}

# ---------------------------------------------------------------------------------------
# Stage 1, in the machine's own network namespace.
# ---------------------------------------------------------------------------------------
if [[ "${CORRAL_API_NETNS:-}" != 1 ]]; then
    CORRAL=${1:?usage: tests/api/run.sh CORRAL_BINARY [WORK_DIR]}
    [[ -x "$CORRAL" ]] || fail_early "no corral binary at $CORRAL (build it: cargo build -p corral)"
    CORRAL=$(cd "$(dirname "$CORRAL")" && pwd)/$(basename "$CORRAL")
    VENV=${CORRAL_API_VENV:-$REPO/target/api-venv}
    [[ -x "$VENV/bin/schemathesis" ]] ||
        fail_early "no schemathesis in $VENV (run scripts/install-deps.sh, or set CORRAL_API_VENV)"
    for tool in unshare ip curl blender; do
        command -v "$tool" >/dev/null || fail_early "\`$tool\` is not installed"
    done
    [[ $(id -u) == 0 ]] || fail_early "must run as root (it uses \`unshare --net\`)"
    if [[ -n "${2:-}" ]]; then
        mkdir -p "$2"
        WORK=$(cd "$2" && pwd)
        export CORRAL_API_OWN_WORK=0
    else
        WORK=$(mktemp -d -t corral-api-XXXXXX)
        export CORRAL_API_OWN_WORK=1
    fi
    export CORRAL_API_NETNS=1 CORRAL_API_VENV=$VENV
    exec unshare --net -- bash "${BASH_SOURCE[0]}" "$CORRAL" "$WORK"
fi

# ---------------------------------------------------------------------------------------
# Stage 2, inside the new network namespace: only loopback exists.
# ---------------------------------------------------------------------------------------
CORRAL=$1
WORK=$2
VENV=$CORRAL_API_VENV
SEED=${CORRAL_API_SEED:-20261130}
EXAMPLES=${CORRAL_API_EXAMPLES:-40}
PHASES=${CORRAL_API_PHASES:-examples,coverage,fuzzing}
EXTRA_CHECKS=${CORRAL_API_EXTRA_CHECKS:+,$CORRAL_API_EXTRA_CHECKS}
ip link set lo up

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# Waits for a server's first stdout line (`corral ... listening on URL`); prints the URL.
listening_url() {
    local out=$1 pid=$2 line
    for _ in $(seq 1 300); do
        line=$(head -n 1 "$out" 2>/dev/null || true)
        if [[ $line == *"listening on http://"* ]]; then
            echo "${line##* }"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

show_logs() {
    local f
    for f in "$WORK"/*.err; do
        echo "---- $f (last lines)" >&2
        tail -n 20 "$f" >&2 || true
    done
}

mkdir -p "$WORK/scenes"
# A tiny scene, so the few jobs that do render (the node document's examples) take a
# second or two: 32x24 pixels, 1 sample, 4 frames.
blender -b --factory-startup --python "$REPO/scripts/make_scene.py" -- "$WORK/scenes/tiny.blend" \
    --width 32 --height 24 --samples 1 --end 4 >"$WORK/scene.log" 2>&1 ||
    { tail -n 20 "$WORK/scene.log" >&2; fail_early "could not make the test scene"; }

# Small limits keep generated jobs cheap: the orchestrator takes at most 8 frames a job,
# the nodes 4. Nodes have no default scene, so jobs naming none are refused by the nodes
# (the orchestrator's retry and failure paths) and only `tiny.blend` renders.
"$CORRAL" orchestrator --listen 127.0.0.1:0 --data "$WORK/orchestrator" --max-frames 8 \
    >"$WORK/orchestrator.out" 2>"$WORK/orchestrator.err" &
pids+=($!)
ORCH=$(listening_url "$WORK/orchestrator.out" "${pids[0]}") ||
    { show_logs; fail_early "the orchestrator did not start"; }
NODES=()
for i in 1 2; do
    "$CORRAL" node --listen 127.0.0.1:0 --scenes "$WORK/scenes" --output "$WORK/out-$i" \
        --data "$WORK/node-$i" --max-frames 4 --threads 1 --orchestrator "$ORCH" \
        >"$WORK/node-$i.out" 2>"$WORK/node-$i.err" &
    pids+=($!)
    url=$(listening_url "$WORK/node-$i.out" "$!") || { show_logs; fail_early "node $i did not start"; }
    NODES+=("$url")
done
up_nodes() {
    curl -fsS "$ORCH/api/v1/nodes" | "$VENV/bin/python" -c \
        'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["state"] == "up"))'
}
for _ in $(seq 1 100); do
    [[ $(up_nodes 2>/dev/null || echo 0) -ge 2 ]] && break
    sleep 0.1
done
[[ $(up_nodes) -ge 2 ]] || { show_logs; fail_early "the nodes did not register"; }
echo "api: orchestrator $ORCH, nodes ${NODES[*]}; work folder $WORK"
echo "api: schemathesis seed $SEED, at most $EXAMPLES examples per operation (rerun the same requests: CORRAL_API_SEED=$SEED)"

export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
export SCHEMATHESIS_HOOKS=hooks
passed=0
failed=0
# Runs schemathesis against one server; $1 names it, $2 is its kind, $3 its base URL, the
# rest are schemathesis arguments.
check() {
    local name=$1 kind=$2 base=$3 started=$SECONDS
    shift 3
    echo "api: $name ..."
    # schemathesis keeps a cache (.schemathesis/) in its working folder: the work folder.
    if (cd "$WORK" && CORRAL_API_BASE=$base CORRAL_API_KIND=$kind CORRAL_API_OWN_NODES="${NODES[*]}" \
        "$VENV/bin/schemathesis" run "$@" \
        --url "$base" \
        --checks "not_a_server_error,response_schema_conformance,content_type_conformance,problem_body_on_error,refusal_stores_nothing$EXTRA_CHECKS" \
        --phases "$PHASES" \
        --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 30 \
        --report junit --report-dir "$WORK/report-$name" \
        >"$WORK/schemathesis-$name.log" 2>&1); then
        passed=$((passed + 1))
        echo "api: $name passed in $((SECONDS - started)) s ($(grep -E '^[0-9]+ passed|passed' "$WORK/schemathesis-$name.log" | tail -n 1))"
    else
        failed=$((failed + 1))
        cat "$WORK/schemathesis-$name.log" >&2
        echo "api: $name FAILED in $((SECONDS - started)) s (log: $WORK/schemathesis-$name.log)" >&2
    fi
}

# The event stream never ends by itself; everything else in the document is tested.
check orchestrator orchestrator "$ORCH" "$ORCH/api/v1/openapi.json" --exclude-path /api/v1/events
check node node "${NODES[0]}" "$HERE/node-openapi.yaml"

if [[ $failed -gt 0 ]]; then
    show_logs
    echo "api: work folder kept: $WORK" >&2
elif [[ ${CORRAL_API_OWN_WORK:-0} == 1 ]]; then
    cleanup
    trap - EXIT
    rm -rf "$WORK"
fi
echo "api: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
