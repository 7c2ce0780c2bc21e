#!/usr/bin/env bash
# The removal benchmark (issue #15): DeviceSet::remove_device of a layer with
# 1 GiB and 8 GiB mapped, with the discard before the delete and without,
# in the test VM (TCG):
#
#   benches/space.sh [--gib 1,8] [--full] [ioctl-tests/run options...]
#
# Runs the ignored test bench_remove_discard (ioctl-tests/tests/space.rs)
# with release builds on a fresh sparse scratch disk. By default each 64 KiB
# block gets one 4 KiB write (zeroing off: the pool maps the whole size, the
# guest writes 1/16 of it); --full writes every byte. Prints the BENCH lines.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
gib=1,8
full=0
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --gib) gib=$2; shift ;;
        --full) full=1 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) extra+=("$1") ;;
    esac
    shift
done
largest=$(tr ',' '\n' <<<"$gib" | sort -n | tail -1)
img=$CARGO_TARGET_DIR/space-bench.img
rm -f "$img"
trap 'rm -f "$img"' EXIT
log=$CARGO_TARGET_DIR/space-bench.log
DMTHIN_CARGO_ARGS="${DMTHIN_CARGO_ARGS:-} --release" "$ROOT/ioctl-tests/run" \
    --test space --scratch "$img" --scratch-size "$((largest * 2 + 4))G" \
    --timeout 5400 --env SPACE_BENCH_GIB="$gib" --env SPACE_BENCH_FULL="$full" \
    "${extra[@]}" bench_remove -- --ignored --nocapture | tee "$log"
grep -a 'BENCH space' "$log"
