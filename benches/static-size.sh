#!/usr/bin/env bash
# Size of the static dmthin CLI (musl, release, stripped) next to dmsetup and
# the shared libraries it loads (ldd, each file counted once, symlinks
# followed). Prints a markdown table.
#
#   benches/static-size.sh [--no-build]
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MUSL=x86_64-unknown-linux-musl

if [[ ${1:-} != --no-build ]]; then
    (cd "$ROOT" && cargo build --release --target "$MUSL" --bin dmthin) >&2
fi
bin=$CARGO_TARGET_DIR/$MUSL/release/dmthin
[[ -x $bin ]] || { echo "static-size.sh: $bin not built" >&2; exit 1; }
tmp=$(mktemp)
trap 'rm -f -- "$tmp"' EXIT
strip -o "$tmp" -- "$bin"
size() { stat -L -c %s -- "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
kib() { awk -v b="$1" 'BEGIN { printf "%.0f KiB", b / 1024 }'; }

static_kind=$(file -b -- "$bin" | grep -o 'static[a-z-]* linked' || echo "?")
dynamic=$(ldd -- "$bin" 2>&1 | head -n1 | tr -s ' \t' ' ' | sed 's/^ //')
s_static=$(size "$tmp")

dmsetup=$(command -v dmsetup || echo /usr/sbin/dmsetup)
dmsetup=$(readlink -f -- "$dmsetup")
total=$(size "$dmsetup")
own=$total # without the C runtime (libc, libm, ld.so) that most programs share
rows="| $dmsetup | $(kib "$total") |"$'\n'
while IFS= read -r lib; do
    real=$(readlink -f -- "$lib")
    s=$(size "$real")
    total=$((total + s))
    case $(basename -- "$lib") in
        libc.so* | libm.so* | ld-linux*) ;;
        *) own=$((own + s)) ;;
    esac
    rows+="| $lib | $(kib "$s") |"$'\n'
done < <(ldd -- "$dmsetup" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u)

echo "| binary | size |"
echo "|---|---:|"
echo "| dmthin (musl, release, stripped; $static_kind; ldd: $dynamic) | $(mib "$s_static") ($s_static bytes) |"
echo "| dmsetup + its shared libraries (ldd) | $(mib "$total") ($total bytes) |"
echo "| dmsetup + its libraries other than libc, libm and ld.so | $(mib "$own") ($own bytes) |"
echo
echo "dmsetup's part, as installed here ($(dpkg-query -W -f='dmsetup ${Version}' dmsetup 2>/dev/null || true)):"
echo
echo "| file | size |"
echo "|---|---:|"
printf '%s' "$rows"
echo
awk -v a="$s_static" -v b="$total" 'BEGIN { printf "Static dmthin is %.2fx the size of dmsetup with its libraries; goal < 2 MiB: %s.\n", a / b, (a < 2 * 1048576 ? "met" : "MISSED") }'
