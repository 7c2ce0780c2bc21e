#!/usr/bin/env bash
# Reproduces dmthin's side-by-side benchmark (benches/compare/RESULTS.md) with
# one command:
#
#   benches/compare.sh [--quick] [--no-plain-run] [--no-udev-run] [--no-scaling] [--sizes LIST]
#                      [--run-args "ARGS for dmthin-compare run, e.g. --peers dmthin,floor"; "skip": none]
#                      [--scaling-args "ARGS for dmthin-compare scaling" (default "--populate direct --probes 20";
#                                       "--populate api" grows the set through add_device: ~15 min more)]
#
# 1. installs what the peers need to build (libdevmapper-dev, libclang-dev,
#    gcc; strace to count ioctls in the guest) when missing;
# 2. builds benches/compare (dmthin-compare: the dmthin, devicemapper-crate,
#    dmsetup and raw-ioctl peers, the scaling run), the libdevmapper C harness
#    (benches/compare/c/libdm_peer.c) and the static musl dmthin CLI;
# 3. packs them, strace and their host libraries into an ext4 image that the
#    test VM gets as a scratch disk (the runner's initramfs has no slot for
#    extra files; the same filesystem holds the scaling run's device set);
# 4. boots the VM twice with ioctl-tests/run: without udev (peers, scaling,
#    CLI memory, walkthrough with the static binary), then with systemd-udevd
#    (peers again);
# 5. prints the markdown tables (also saved in $OUT, default
#    $CARGO_TARGET_DIR/compare-results.md) and the static-size table.
#
# --quick: fewer rounds and iterations, scaling up to 1,000 (a smoke run).
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
CRATE=$ROOT/benches/compare
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$CARGO_TARGET_DIR/compare-results.md}
WORK=${COMPARE_WORK:-$CARGO_TARGET_DIR/compare-vm}
MUSL=x86_64-unknown-linux-musl

quick=0
udev_run=1
plain_run=1
scaling=1
sizes=10,100,1000,10000
run_args=()
extra_run_args=
scaling_args="--populate direct --probes 20"
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) quick=1 ;;
        --no-udev-run) udev_run=0 ;;
        --no-plain-run) plain_run=0 ;;
        --no-scaling) scaling=0 ;;
        --sizes) sizes=$2; shift ;;
        --run-args) extra_run_args=$2; shift ;;
        --scaling-args) scaling_args=$2; shift ;;
        -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if ((quick)); then
    run_args=(--rounds 1 --iters cycle=5,snapshot=5,list=20,status=20,nodes=3 --paired cycle=5,snapshot=5,list=30,status=30 --strace-iters 2)
    [[ $sizes == 10,100,1000,10000 ]] && sizes=10,100,1000
fi

say() { printf 'compare.sh: %s\n' "$*" >&2; }

# ------------------------------------------------------------------ packages
need=()
for p in libdevmapper-dev libclang-dev gcc strace e2fsprogs pkg-config; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null
fi
"$ROOT/ioctl-tests/run" --install-deps >/dev/null

# --------------------------------------------------------------------- build
say "building dmthin-compare (release)"
cargo build --release --manifest-path "$CRATE/Cargo.toml" --bin dmthin-compare
say "building the libdevmapper C harness"
mkdir -p "$WORK"
gcc -O2 -Wall -Wextra -o "$WORK/dmthin-compare-libdm" "$CRATE/c/libdm_peer.c" -ldevmapper
say "building the static dmthin CLI ($MUSL)"
(cd "$ROOT" && cargo build --release --target "$MUSL" --bin dmthin)

# ---------------------------------------------------------------- the image
stage=$WORK/stage
rm -rf -- "$stage"
mkdir -p -- "$stage/bin" "$stage/root"
cp -- "$CARGO_TARGET_DIR/release/dmthin-compare" "$WORK/dmthin-compare-libdm" "$stage/bin/"
cp -- "$CARGO_TARGET_DIR/$MUSL/release/dmthin" "$stage/bin/dmthin-static"
strip -- "$stage/bin/"*
cp -- "$ROOT/ioctl-tests/walkthrough.sh" "$stage/walkthrough.sh" 2>/dev/null || true
copy_host() { # a host file (following symlinks) to the same path under root/
    local src dir
    src=$(readlink -f -- "$1")
    dir=$(readlink -f -- "$(dirname -- "$1")")
    mkdir -p -- "$stage/root$dir"
    cp -L -- "$src" "$stage/root$dir/$(basename -- "$1")"
}
copy_host /usr/bin/strace
for exe in /usr/bin/strace "$stage/bin/dmthin-compare" "$stage/bin/dmthin-compare-libdm"; do
    while IFS= read -r lib; do
        copy_host "$lib"
    done < <(ldd -- "$exe" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
done
img=$WORK/bench.img
rm -f -- "$img"
truncate -s 16G -- "$img"
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 -d "$stage" "$img"

# ---------------------------------------------------------------- the runs
logs=()
vm() { # name, runner args...
    local name=$1 log=$WORK/$1.log
    shift
    say "VM run '$name'"
    # (the guest's console goes to stderr; the tables are taken from the log)
    "$ROOT/ioctl-tests/run" --log "$log" --scratch "$img" "$@" --script "$CRATE/guest.sh" >&2 ||
        say "VM run '$name' exited with $? (see $log)"
    logs+=("$log")
}
# shellcheck disable=SC2206 # split the extra arguments on purpose
run_args+=($extra_run_args)
run_env=(--env "COMPARE_RUN_ARGS=${run_args[*]:-}")
scal_env=(--env "COMPARE_SCALING=")
((scaling)) && scal_env=(--env "COMPARE_SCALING=$sizes" --env "COMPARE_SCALING_ARGS=--budget 2400 $scaling_args")
((plain_run)) && vm plain --timeout 4800 "${run_env[@]}" "${scal_env[@]}" --env COMPARE_WALKTHROUGH=1
# With udev every activation waits for udevd under TCG: 3 rounds keep it bounded.
udev_rounds=()
((quick)) || udev_rounds=(--rounds 3)
((udev_run)) && vm udev --udev --timeout 2400 --env "COMPARE_RUN_ARGS=${udev_rounds[*]:-} ${run_args[*]:-}" \
    --env COMPARE_SCALING=

# ------------------------------------------------------------------ report
{
    echo "## dmthin compared ($(date -u +%Y-%m-%d))"
    echo
    echo "Host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
        "guest: QEMU TCG, 1 vCPU, Debian cloud kernel (see each table)."
    echo
    for log in "${logs[@]}"; do
        tr -d '\r' <"$log" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' |
            awk '/^=== BEGIN /{on=1; sub(/^=== BEGIN /, "### "); sub(/ ===$/, ""); print; print ""; next}
                 /^=== END /{on=0; print ""; next} on' |
            sed '/^dmthin-compare[: ]/d'
        grep -a -h '^compare-guest:' "$log" | tr -d '\r' | sed 's/^/    /' | head -5
        echo
    done
    echo "### Static binary"
    echo
    bash "$ROOT/benches/static-size.sh" --no-build
} >"$OUT"
cat -- "$OUT"
say "results saved in $OUT"
