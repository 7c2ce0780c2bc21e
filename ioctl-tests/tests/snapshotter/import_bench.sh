# `ctr image import` + unpack of the test image (build_image) by containerd
# on dmthin-snapshotter and on containerd's own devmapper snapshotter, in
# one VM run, same pool sizes (2 GiB data, 64 MiB metadata loop files,
# 64 KiB blocks, 256 MiB base): 3 rounds, the snapshotters alternating,
# each import on a fresh containerd root and a fresh pool. dmthin runs as
# installed (no udev sync) and with --udev-sync; devmapper needs udevd.
# Runs after common.sh. Prints "BENCH import+unpack ..." lines and
# "import bench done".

W=/tmp/ctd-bench
rm -rf "$W"
mkdir -p "$W" /run/containerd
grep -q " /sys/fs/cgroup cgroup2 " /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup
build_image

ctd_pid= snap_pid= pool= loops=()
teardown() {
    set +e
    [[ -n $ctd_pid ]] && kill "$ctd_pid" 2>/dev/null && wait "$ctd_pid"
    [[ -n $snap_pid ]] && kill "$snap_pid" 2>/dev/null && wait "$snap_pid"
    ctd_pid= snap_pid=
    awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
    if [[ -n $pool ]]; then
        for d in $(dmsetup ls | awk -v p="$pool-" 'index($1, p) == 1 { print $1 }'); do
            dmsetup remove --retry "$d"
        done
        dmsetup remove --retry "$pool"
        pool=
    fi
    for l in "${loops[@]}"; do /usr/sbin/losetup -d "$l"; done
    loops=()
    set -e
}
trap teardown EXIT

# import KIND ROUND: one timed import on a fresh containerd root and pool;
# KIND is dmthin, dmthin-udev-sync or devmapper. Appends the seconds to
# the file $W/KIND.times.
import() {
    local kind=$1 round=$2 dir=$W/$1-$2
    mkdir -p "$dir"
    local cfg=$dir/config.toml sock=/run/dmthin-bench-$round/snapshotter.sock
    cat >"$cfg" <<EOF
version = 2
root = "$dir/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "/run/containerd/containerd.sock"
EOF
    local snapshotter=$kind
    case $kind in
        dmthin*)
            snapshotter=dmthin
            local args=(--root "$dir/set" --socket "$sock" --data-size 2G --metadata-size 64M
                --base-size 256M --teardown-on-exit --log-level warn)
            [[ $kind != dmthin-udev-sync ]] || args+=(--udev-sync)
            rm -f "$sock"
            dmthin-snapshotter "${args[@]}" 2>>"$W/snapshotter.log" &
            snap_pid=$!
            wait_socket "$sock" dmthin-snapshotter
            cat >>"$cfg" <<EOF
[proxy_plugins]
  [proxy_plugins.dmthin]
    type = "snapshot"
    address = "$sock"
EOF
            ;;
        devmapper)
            pool=dmthin-bench-pool-$round
            truncate -s 2G "$dir/data"
            truncate -s 64M "$dir/metadata"
            loops=("$(/usr/sbin/losetup -f --show "$dir/data")" "$(/usr/sbin/losetup -f --show "$dir/metadata")")
            dmsetup create "$pool" --table \
                "0 $((2 * 1024 * 1024 * 2)) thin-pool ${loops[1]} ${loops[0]} 128 32768 1 skip_block_zeroing"
            cat >>"$cfg" <<EOF
[plugins."io.containerd.snapshotter.v1.devmapper"]
  root_path = "$dir/devmapper"
  pool_name = "$pool"
  base_image_size = "256MB"
EOF
            ;;
    esac
    rm -f /run/containerd/containerd.sock
    containerd --config "$cfg" >"$dir/containerd.log" 2>&1 &
    ctd_pid=$!
    wait_socket /run/containerd/containerd.sock containerd
    local i
    for i in $(seq 1 100); do
        ctr snapshots --snapshotter "$snapshotter" ls >/dev/null 2>&1 && break
        sleep 0.2
    done
    local t0 t
    t0=$(now)
    ctr image import --snapshotter "$snapshotter" "$W/image.tar" >/dev/null
    t=$(secs "$t0" "$(now)")
    local n
    n=$(ctr snapshots --snapshotter "$snapshotter" ls | awk 'NR > 1 && $NF == "Committed"' | wc -l)
    [[ $n -eq 3 ]] || { echo "$kind: $n committed layers after the import, not 3"; exit 1; }
    echo "BENCH import+unpack $kind round $round: $t s"
    echo "$t" >>"$W/$kind.times"
    teardown
    # The guest's /tmp is a small tmpfs: each round's files go at once.
    rm -rf "$dir"
}

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for round in 1 2 3; do
    if ((round % 2)); then
        order=(dmthin devmapper dmthin-udev-sync)
    else
        order=(devmapper dmthin-udev-sync dmthin)
    fi
    for kind in "${order[@]}"; do import "$kind" "$round"; done
done
dm=$(median "$W/devmapper.times")
for kind in dmthin dmthin-udev-sync; do
    m=$(median "$W/$kind.times")
    echo "BENCH import+unpack median of 3: $kind $m s, devmapper $dm s: $(awk -v a="$m" -v b="$dm" 'BEGIN { printf "%.2f", b / a }')x"
done
rm -rf "$W"
echo "import bench done"
