#!/usr/bin/env bash
# Fuzzes what Corral reads from outside (fuzz/fuzz_targets/: Blender's output parser, frame
# ranges, confined paths, node and orchestrator request bodies) with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh short            every target for 20 s (what `make test` runs)
#   scripts/fuzz.sh long [SECONDS]   every target for SECONDS (default 600)
#   scripts/fuzz.sh run TARGET [SECONDS]   one target
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`, as scripts/install-deps.sh does)
# when it is missing. The toolchain
# may be stable: RUSTC_BOOTSTRAP=1 lets it take the nightly flags cargo-fuzz passes
# (sanitizer coverage, AddressSanitizer). The corpus grows under $TARGET_DIR/fuzz-corpus
# (seeded from fuzz/seeds/); a crash leaves its input in fuzz/artifacts/TARGET/ and fails
# the run, printing how to reproduce it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
[[ $target_dir = /* ]] || target_dir=$root/$target_dir
mode=${1:-short}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    # The version scripts/install-deps.sh installs too.
    echo "fuzz: installing cargo-fuzz 0.13.2 (cargo install cargo-fuzz --locked) ..."
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

cd "$root/fuzz"
mapfile -t all < <(cargo fuzz list)
case $mode in
    short) seconds=20; targets=("${all[@]}") ;;
    long) seconds=${2:-600}; targets=("${all[@]}") ;;
    run) targets=("${2:?usage: scripts/fuzz.sh run TARGET [SECONDS]}"); seconds=${3:-60} ;;
    *) echo "usage: scripts/fuzz.sh short | long [SECONDS] | run TARGET [SECONDS]" >&2; exit 2 ;;
esac

# -a: debug assertions on, so integer overflow is a crash too.
cargo fuzz build -a --target-dir "$target_dir/fuzz"
for target in "${targets[@]}"; do
    corpus=$target_dir/fuzz-corpus/$target
    mkdir -p "$corpus"
    extra=()
    [[ $target = json_bodies ]] && extra+=(-dict="$root/fuzz/json.dict")
    started=$SECONDS
    echo "fuzz: $target for ${seconds}s ..."
    if ! cargo fuzz run -a --target-dir "$target_dir/fuzz" "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${extra[@]}" >"$target_dir/fuzz-$target.log" 2>&1; then
        tail -n 40 "$target_dir/fuzz-$target.log" >&2
        echo "fuzz: $target FAILED (full log: $target_dir/fuzz-$target.log)." >&2
        echo "fuzz: reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -a $target fuzz/artifacts/$target/<crash file> (in fuzz/)" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$target_dir/fuzz-$target.log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz: $target ok: $runs inputs in $((SECONDS - started)) s, corpus $(ls "$corpus" | wc -l) files"
done
