#!/usr/bin/env bash
# The usage benchmark (issue #14): DeviceSet::usage_all on a pool with 1,000
# devices and 10 GiB of mapped data against `thin_ls --metadata-snap -o
# DEV,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES`, in the test VM (TCG):
#
#   benches/usage.sh [--devices N] [--gib G] [ioctl-tests/run options...]
#
# Runs the ignored test bench_usage_1000_devices (ioctl-tests/tests/usage.rs)
# with release builds on a fresh sparse scratch disk (G + 6 GiB; the seed
# device gets one 4 KiB write per 64 KiB block, so about G/16 GiB is really
# written), and prints its BENCH line: the best of three runs of each.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
devices=1000
gib=10
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --devices) devices=$2; shift ;;
        --gib) gib=$2; shift ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) extra+=("$1") ;;
    esac
    shift
done
img=$CARGO_TARGET_DIR/usage-bench.img
rm -f "$img"
trap 'rm -f "$img"' EXIT
log=$CARGO_TARGET_DIR/usage-bench.log
DMTHIN_CARGO_ARGS="${DMTHIN_CARGO_ARGS:-} --release" "$ROOT/ioctl-tests/run" \
    --test usage --scratch "$img" --scratch-size "$((gib + 6))G" --mem 1536 \
    --timeout 5400 --env USAGE_BENCH_DEVICES="$devices" --env USAGE_BENCH_GIB="$gib" \
    "${extra[@]}" bench_usage -- --ignored --nocapture | tee "$log"
grep -a 'BENCH usage' "$log"
