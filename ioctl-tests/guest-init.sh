#!/bin/sh
# shellcheck shell=sh
# /init of dmthin's test VM (busybox sh). ioctl-tests/run packs this file as
# /init of the cached base initramfs; the per-run settings come from
# /etc/dmthin/*, which the small per-run archive provides.
PATH=/busybox/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr
hostname dmthin-vm
echo "dmthin-init: started at $(cut -d' ' -f1 /proc/uptime) s of guest uptime"

C=/etc/dmthin
nonce=$(cat "$C/nonce" 2>/dev/null)
result() {
    sync
    echo "DMTHIN-VM-RESULT: rc=$1 run=$nonce"
    poweroff -f
    sleep 10
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }

if [ -z "$nonce" ]; then
    echo "dmthin-init: no per-run configuration (/etc/dmthin/nonce)"
    result 125
fi
while IFS= read -r m; do
    [ -n "$m" ] || continue
    if ! insmod "$m"; then
        echo "dmthin-init: insmod $m failed"
        result 125
    fi
done </etc/dmthin-modules
echo "dmthin-init: modules loaded at $(cut -d' ' -f1 /proc/uptime) s"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/busybox/bin
export HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1 DMTHIN_TEST_VM=1
if [ -s "$C/env" ]; then
    while IFS= read -r kv; do
        [ -n "$kv" ] && export "${kv?}"
    done <"$C/env"
fi

if [ -s "$C/scratch" ]; then
    first=
    while IFS= read -r d; do
        i=0
        while [ ! -b "/dev/$d" ] && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if [ ! -b "/dev/$d" ]; then
            echo "dmthin-init: scratch disk /dev/$d did not appear"
            result 125
        fi
        [ -n "$first" ] || first=/dev/$d
        DMTHIN_SCRATCH_DEVS="${DMTHIN_SCRATCH_DEVS:+$DMTHIN_SCRATCH_DEVS }/dev/$d"
    done <"$C/scratch"
    export DMTHIN_SCRATCH="$first" DMTHIN_SCRATCH_DEVS
fi

if [ -e "$C/udev" ]; then
    mkdir -p /run/udev
    /lib/systemd/systemd-udevd --daemon
    i=0
    while [ ! -e /run/udev/control ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ ! -e /run/udev/control ]; then
        echo "dmthin-init: systemd-udevd did not start"
        result 125
    fi
    udevadm trigger --action=add --subsystem-match=block >/dev/null 2>&1
    udevadm settle --timeout=30
    export DMTHIN_TEST_UDEV=1
fi

echo "dmthin-init: ready after $(uptime_s) s of guest uptime"
cd /tmp || result 125

set --
if [ -s "$C/args" ]; then
    while IFS= read -r a; do
        set -- "$@" "$a"
    done <"$C/args"
fi

mode=$(cat "$C/mode")
case $mode in
exec)
    bash "$C/cmd" </dev/null
    result $?
    ;;
script)
    if [ "$(head -c2 "$C/script")" = "#!" ]; then
        "$C/script" "$@" </dev/null
    else
        bash "$C/script" "$@" </dev/null
    fi
    result $?
    ;;
esac

color=never
[ -e "$C/color" ] && color=always
failed=
n=0
while IFS= read -r name; do
    [ -n "$name" ] || continue
    n=$((n + 1))
    echo "DMTHIN-VM-TEST: $name (at $(uptime_s) s)"
    "/tests/$name" --test-threads=1 --color=$color "$@" </dev/null
    r=$?
    [ $r -eq 0 ] || failed="$failed $name(rc=$r)"
    # Isolation between test binaries: report and clean up leftovers.
    left=$(dmsetup ls 2>/dev/null | grep -v '^No devices found')
    if [ -n "$left" ]; then
        echo "dmthin-init: WARNING: $name left device-mapper devices behind:"
        echo "$left"
        dmsetup remove_all --force >/dev/null 2>&1
    fi
    left=$(losetup -a 2>/dev/null)
    if [ -n "$left" ]; then
        echo "dmthin-init: WARNING: $name left loop devices behind:"
        echo "$left"
        losetup -D >/dev/null 2>&1
    fi
done <"$C/tests"

echo "DMTHIN-VM-SUMMARY: $n test binaries, failed:${failed:- none} (guest uptime $(uptime_s) s)"
if [ -n "$failed" ]; then
    result 1
fi
result 0
