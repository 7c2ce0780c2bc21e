#!/bin/bash
# Real containerd on dmthin-snapshotter, in the test VM: a 3-layer OCI image
# built here from busybox-static (a file changed in layer 2, a whiteout in
# layer 2, a file added in layer 3) is imported and unpacked with
# `ctr image import --snapshotter dmthin`, a container prints the top
# layer's files and sees the deleted one gone, `ctr snapshots` works, and
# everything survives a restart and a SIGKILL of the snapshotter.
#
# Needs (shipped by ioctl-tests/run): containerd, ctr,
# containerd-shim-runc-v2, runc, busybox (static), dmthin-snapshotter,
# dmthin. Prints "containerd test done" at the end.
# Runs after common.sh (helpers, build_image).

W=/tmp/ctd
SNAP_ROOT=$W/snapshotter
SOCK=/run/dmthin-snapshotter/snapshotter.sock
SNAP_ARGS=(--root "$SNAP_ROOT" --socket "$SOCK" --data-size 2G --metadata-size 64M --base-size 256M)
# Under udev, this test takes the cookie path (the conformance suite the default bypass).
[[ ${DMTHIN_TEST_UDEV:-0} != 1 ]] || SNAP_ARGS+=(--udev-sync)
rm -rf "$W"
mkdir -p "$W" /etc/containerd /run/containerd

snap_pid=
ctd_pid=
start_snapshotter() {
    # After a SIGKILL the old socket is still there (the daemon replaces a
    # stale one itself); remove it here only so that the wait below waits
    # for the new one.
    rm -f "$SOCK"
    dmthin-snapshotter "${SNAP_ARGS[@]}" --log-level info 2>>"$W/snapshotter.log" &
    snap_pid=$!
    wait_socket "$SOCK" dmthin-snapshotter
    # A running containerd reconnects to the proxy plugin with a backoff of
    # at most 3 s; its calls fail meanwhile.
    if [[ -n $ctd_pid ]]; then
        local i
        for i in $(seq 1 50); do
            ctr snapshots --snapshotter dmthin ls >/dev/null 2>&1 && return 0
            sleep 0.2
        done
    fi
}
stop_snapshotter() { # signal
    kill -"$1" "$snap_pid"
    wait "$snap_pid" || true
}

start_containerd() {
    containerd --config /etc/containerd/config.toml >"$W/containerd.log" 2>&1 &
    ctd_pid=$!
    wait_socket /run/containerd/containerd.sock containerd
    # The proxy plugin is loaded lazily; wait until containerd answers.
    local i
    for i in $(seq 1 100); do
        ctr version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    cat "$W/containerd.log" >&2
    return 1
}
stop_containerd() {
    kill "$ctd_pid"
    wait "$ctd_pid" || true
}

cleanup() {
    local rc=$?
    set +e
    if ((rc != 0)); then
        echo "--- failed (rc=$rc); snapshotter log:"
        tail -n 40 "$W/snapshotter.log"
        echo "--- containerd log:"
        tail -n 20 "$W/containerd.log"
    fi
    [[ -n $ctd_pid ]] && kill "$ctd_pid" 2>/dev/null && wait "$ctd_pid"
    [[ -n $snap_pid ]] && kill "$snap_pid" 2>/dev/null && wait "$snap_pid"
    grep -q " $W/" /proc/mounts && awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
    dmthin --root "$SNAP_ROOT" shutdown >/dev/null 2>&1
}
trap cleanup EXIT

step "cgroup2 and containerd's config"
grep -q " /sys/fs/cgroup cgroup2 " /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup
cat >/etc/containerd/config.toml <<EOF
version = 2
root = "$W/containerd-root"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "/run/containerd/containerd.sock"
[proxy_plugins]
  [proxy_plugins.dmthin]
    type = "snapshot"
    address = "$SOCK"
EOF

step "building a 3-layer OCI image from busybox-static"
build_image

step "starting dmthin-snapshotter and containerd"
t0=$(now)
start_snapshotter
echo "snapshotter ready in $(secs "$t0" "$(now)") s (new set: mkfs of the base included)"
start_containerd

step "ctr image import --snapshotter dmthin"
t0=$(now)
ctr image import --snapshotter dmthin "$W/image.tar"
echo "IMPORT+UNPACK: $(secs "$t0" "$(now)") s"
ctr image ls

step "ctr run --rm --snapshotter dmthin --no-pivot"
out=$(ctr run --rm --snapshotter dmthin --no-pivot "$IMAGE" dmthin-c1 /bin/busybox sh -c \
    '/bin/busybox cat /top.txt /etc/a.txt; if [ -e /etc/gone.txt ]; then echo "gone.txt is still there"; else echo "gone.txt is gone"; fi')
echo "$out"
grep -qx "from the top layer" <<<"$out"
grep -qx "changed in layer 2" <<<"$out"
grep -qx "gone.txt is gone" <<<"$out"

step "ctr snapshots"
ctr snapshots --snapshotter dmthin ls
ctr snapshots --snapshotter dmthin tree
ctr snapshots --snapshotter dmthin usage
top=$(ctr snapshots --snapshotter dmthin ls | awk 'NR > 1 && $3 == "Committed" { k = $1 } END { print k }')
ctr snapshots --snapshotter dmthin info "$top"
n_before=$(ctr snapshots --snapshotter dmthin ls | tail -n +2 | wc -l)
[[ $n_before -eq 3 ]] || { echo "expected 3 committed layers, have $n_before"; exit 1; }

step "restart of the snapshotter (SIGTERM): devices and metadata stay"
ctr snapshots --snapshotter dmthin prepare dmthin-active "$top" >/dev/null
stop_snapshotter TERM
[[ ! -e $SOCK ]] || { echo "socket left behind"; exit 1; }
start_snapshotter
ctr snapshots --snapshotter dmthin ls
[[ $(ctr snapshots --snapshotter dmthin ls | tail -n +2 | wc -l) -eq 4 ]]
ctr snapshots --snapshotter dmthin mounts /tmp dmthin-active
ctr run --rm --snapshotter dmthin --no-pivot "$IMAGE" dmthin-c2 /bin/busybox cat /top.txt | grep -qx "from the top layer"

step "SIGKILL during prepare/commit/remove loops, restart, agree"
loop() {
    local i=0
    while :; do
        i=$((i + 1))
        ctr snapshots --snapshotter dmthin prepare "crash-a-$i" "$top" >/dev/null 2>&1 || true
        ctr snapshots --snapshotter dmthin commit "crash-c-$i" "crash-a-$i" >/dev/null 2>&1 || true
        ctr snapshots --snapshotter dmthin rm "crash-c-$((i - 1))" >/dev/null 2>&1 || true
    done
}
for round in 1 2 3; do
    loop &
    loop_pid=$!
    sleep "$(awk -v r="$round" 'BEGIN { srand(r); printf "%.1f", 1 + rand() * 3 }')"
    kill -9 "$snap_pid"
    wait "$snap_pid" || true
    kill "$loop_pid"
    wait "$loop_pid" 2>/dev/null || true
    echo "round $round: killed the snapshotter"
    start_snapshotter
    # containerd's view and the snapshotter's agree: every key ctr lists
    # can be stat'ed through the snapshotter. The one tolerated exception:
    # a commit the snapshotter made durable but whose answer the kill
    # lost; containerd then still lists the active key (its own commit
    # rolled back) and its garbage collector removes the orphan name.
    keys=$(ctr snapshots --snapshotter dmthin ls | awk 'NR > 1 { print $1 }')
    echo "round $round: containerd lists $(wc -w <<<"$keys") snapshots"
    for k in $keys; do
        if ! ctr snapshots --snapshotter dmthin info "$k" >/dev/null 2>&1; then
            case $k in
                crash-a-*) echo "round $round: $k: commit answer lost in the kill (containerd kept the key)" ;;
                *) echo "containerd lists $k but the snapshotter lost it"; exit 1 ;;
            esac
        fi
    done
done
grep -E "rolling back|finishing an interrupted|no snapshot refers" "$W/snapshotter.log" || true

step "removing the test snapshots and the image"
for k in $(ctr snapshots --snapshotter dmthin ls | awk 'NR > 1 && $1 ~ /^crash-|^dmthin-active/ { print $1 }'); do
    ctr snapshots --snapshotter dmthin rm "$k" >/dev/null 2>&1 || true
done
ctr image rm "$IMAGE"

step "the device set agrees with the snapshot records; thin_check is clean"
stop_containerd
ctd_pid=
stop_snapshotter TERM
snap_pid=
records=$(cd "$SNAP_ROOT/snapshotter/snapshots" && ls | sed -n 's/\.json$//p' | sort)
devices=$(dmthin --root "$SNAP_ROOT" list --json | tr ',{' '\n\n' | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | grep '^snap-[0-9]' | sort || true)
echo "records: $(echo $records)"
echo "devices: $(echo $devices)"
[[ "$records" == "$devices" ]] || { echo "records and devices differ"; exit 1; }
dmthin --root "$SNAP_ROOT" shutdown
# thin_check opens with O_DIRECT, which tmpfs refuses: check through a loop device.
meta_loop=$(/usr/sbin/losetup -f --show "$SNAP_ROOT/devicemapper/metadata")
thin_check "$meta_loop"
/usr/sbin/losetup -d "$meta_loop"
echo "containerd test done"
