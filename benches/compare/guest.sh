#!/bin/bash
# Runs inside the test VM (ioctl-tests/run --script benches/compare/guest.sh
# --scratch IMG). IMG is the ext4 image benches/compare.sh packed: bin/ holds
# the compare binaries and the static dmthin, root/ the host files they need
# (strace and the shared libraries, at their host paths), walkthrough.sh the
# CLI walkthrough. The same filesystem holds the scaling run's device set, so
# its fsyncs reach a real (virtio) disk instead of tmpfs.
#
# Environment (set with the runner's --env):
#   COMPARE_RUN_ARGS      extra arguments for `dmthin-compare run` ("skip": no run)
#   COMPARE_SCALING       sizes for `dmthin-compare scaling` (empty: skip)
#   COMPARE_SCALING_ARGS  extra arguments for it (--probes, --budget)
#   COMPARE_WALKTHROUGH   1: run the CLI walkthrough with the static dmthin
set -u

disk=${DMTHIN_SCRATCH:-/dev/vda}
B=/mnt/bench
mkdir -p "$B"
if ! mount -t ext4 "$disk" "$B"; then
    echo "compare-guest: cannot mount $disk (run via benches/compare.sh)"
    exit 125
fi
# Host libraries and strace, without replacing anything the guest has.
(cd "$B/root" && find . -type f -o -type l) | while IFS= read -r f; do
    f=${f#.}
    if [ ! -e "$f" ]; then
        mkdir -p "$(dirname "$f")"
        cp -a "$B/root$f" "$f"
    fi
done
export PATH="$B/bin:$PATH"

echo "compare-guest: kernel $(uname -r); $(grep -c ^processor /proc/cpuinfo) vCPU;" \
    "$(grep MemTotal /proc/meminfo | tr -s ' ')"
echo "compare-guest: cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "compare-guest: udev $([ -e /run/udev/control ] && echo running || echo 'not running')"
echo "compare-guest: strace $(command -v strace || echo missing)"
rc=0

if [ "${COMPARE_RUN_ARGS:-}" != skip ]; then
    # shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
    dmthin-compare run --libdm "$B/bin/dmthin-compare-libdm" ${COMPARE_RUN_ARGS:-} || rc=1
    # Every benchmark device is gone now: whatever nodes remain were left behind.
    echo "compare-guest: after the run: $(dmsetup ls | grep -vc '^No devices') dm devices," \
        "$(find /dev -maxdepth 1 -name 'dm-*' | wc -l) /dev/dm-* nodes," \
        "$(find /dev/mapper -mindepth 1 ! -name control | wc -l) /dev/mapper entries," \
        "$(ipcs -s 2>/dev/null | grep -c '^0x0d4d') dm udev cookies left"
fi

if [ -n "${COMPARE_SCALING:-}" ]; then
    clis="$B/bin/dmthin-static"
    [ -x /usr/local/bin/dmthin ] && clis="$clis,/usr/local/bin/dmthin"
    # shellcheck disable=SC2086
    dmthin-compare scaling --root "$B/scale" --sizes "$COMPARE_SCALING" --cli "$clis" \
        ${COMPARE_SCALING_ARGS:-} || rc=1
fi

if [ "${COMPARE_WALKTHROUGH:-0}" = 1 ] && [ -f "$B/walkthrough.sh" ]; then
    mkdir -p /tmp/static-bin
    ln -sf "$B/bin/dmthin-static" /tmp/static-bin/dmthin
    echo "=== BEGIN static walkthrough ==="
    if PATH="/tmp/static-bin:$PATH" bash "$B/walkthrough.sh" >/tmp/walkthrough.log 2>&1; then
        echo "static dmthin (musl, release): walkthrough passed" \
            "($(grep -c '^\$ ' /tmp/walkthrough.log) steps)"
    else
        echo "static dmthin: walkthrough FAILED:"
        tail -n 20 /tmp/walkthrough.log
        rc=1
    fi
    echo "=== END static walkthrough ==="
fi

# Leave nothing mapped; the VM is thrown away anyway.
dmsetup remove_all --force >/dev/null 2>&1
losetup -D >/dev/null 2>&1
umount "$B" 2>/dev/null
exit $rc
