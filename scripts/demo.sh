#!/usr/bin/env bash
# `make demo`: Corral's first command. Installs Blender when it is missing (Debian/Ubuntu,
# apt-get), builds corral, generates a short animation with scripts/demo_scene.py, starts a
# local farm (`corral up`), renders the animation with a live progress bar, and prints
# where the frames are. Everything it writes is under target/demo/ (CORRAL_DEMO_DIR).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=${CORRAL_DEMO_DIR:-$root/target/demo}
cargo=${CARGO:-cargo}
corral=${CARGO_TARGET_DIR:-$root/target}/release/corral

if [[ -t 1 ]]; then
    bold=$'\033[1m' dim=$'\033[2m' cyan=$'\033[36m' red=$'\033[31m' reset=$'\033[0m'
else
    bold='' dim='' cyan='' red='' reset=''
fi
step() { printf '%s==>%s %s%s%s\n' "$cyan$bold" "$reset" "$bold" "$*" "$reset"; }
fail() { printf '%serror:%s %s\n' "$red$bold" "$reset" "$*" >&2; exit 1; }
started=$(date +%s.%N)

# 1. Blender, from the distribution's packages.
if ! command -v blender >/dev/null; then
    command -v apt-get >/dev/null || fail "Blender is not installed; install it (https://www.blender.org/download/) and run again"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || fail "Blender is not installed; run as root or: apt-get install blender"
        sudo=(sudo)
    fi
    step "Installing Blender (apt-get install blender; about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends blender >/dev/null
fi
step "Blender: $(blender --version 2>/dev/null | head -n1)"

# 2. Corral itself.
step "Building corral (release; the first build takes a few minutes)"
"$cargo" build -p corral --release --locked --quiet

# 3. The scene, made by Blender from a script; kept between runs while the script is unchanged.
mkdir -p "$demo"
scene=$demo/scene.blend
if [[ ! -f $scene || $root/scripts/demo_scene.py -nt $scene ]]; then
    step "Generating the demo scene (scripts/demo_scene.py)"
    blender -b --factory-startup --python "$root/scripts/demo_scene.py" -- "$scene" \
        >"$demo/scene.log" 2>&1 || { cat "$demo/scene.log" >&2; fail "could not generate the demo scene"; }
fi

# 4. A local farm: nodes share the cores (one thread each up to four nodes).
cores=$(nproc 2>/dev/null || echo 2)
nodes=$(( cores < 4 ? cores : 4 ))
threads=$(( cores / nodes ))
rm -rf "$demo/frames" "$demo/data"
step "Starting a local farm: corral up --nodes $nodes --threads $threads"
"$corral" up --listen 127.0.0.1:0 --nodes "$nodes" --threads "$threads" \
    --scenes "$demo" --output "$demo/frames" --data "$demo/data" \
    >"$demo/up.stdout" 2>"$demo/up.log" &
up_pid=$!
stop_farm() {
    if kill -0 "$up_pid" 2>/dev/null; then
        kill -INT "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
    fi
}
trap stop_farm EXIT
url=
for _ in $(seq 1 300); do
    url=$(sed -n 's/^corral up listening on //p' "$demo/up.stdout" 2>/dev/null | head -n1)
    [[ -n $url ]] && break
    kill -0 "$up_pid" 2>/dev/null || { cat "$demo/up.log" >&2; fail "corral up did not start"; }
    sleep 0.1
done
[[ -n $url ]] || fail "corral up did not start within 30 s (see $demo/up.log)"
# The farm's own description (its hints name an address that ends with this script).
sed -n '2,6p' "$demo/up.stdout"
echo

# 5. The render: two tasks per node, so every node stays busy and the load evens out.
frames=72
batch=$(( (frames + 2 * nodes - 1) / (2 * nodes) ))
step "Rendering: corral submit scene.blend --wait --batch-size $batch"
status=0
CORRAL_SERVER=$url "$corral" submit "$scene" --wait --batch-size "$batch" || status=$?
stop_farm
trap - EXIT
if [[ $status -ne 0 ]]; then
    fail "the demo render did not complete (exit $status); the farm's log is $demo/up.log"
fi

folder=$(ls -d "$demo"/frames/*/ | head -n1)
elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
echo
printf '%sOpen a frame:%s  xdg-open %sframe_0001.png\n' "$bold" "$reset" "$folder"
printf '%sMake a video:%s  ffmpeg -framerate 24 -i %sframe_%%04d.png demo.mp4\n' "$bold" "$reset" "$folder"
printf '%sYour scenes:%s   corral up   (in their folder), then: corral submit shot.blend --wait\n' "$bold" "$reset"
printf '%smake demo took %s s in all (build, scene, farm start-up, render). More: README.md, "Command line".%s\n' "$dim" "$elapsed" "$reset"
