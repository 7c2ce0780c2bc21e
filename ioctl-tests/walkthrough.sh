#!/usr/bin/env bash
# dmthin walkthrough: the device set, end to end, against a real kernel.
# Run it with ioctl-tests/walkthrough (on this host if it has device-mapper,
# else in the test VM). Each step prints the command it runs.
set -euo pipefail

step() {
    printf '\n$ %s\n' "$*"
    "$@"
}

root=${DMTHIN_WALKTHROUGH_ROOT:-$(mktemp -d /tmp/dmthin-walkthrough.XXXXXX)}
mnt=$root/mnt
cleanup() {
    dmthin --root "$root" shutdown >/dev/null 2>&1 || true
    rm -rf -- "$root"
}
trap cleanup EXIT

echo "== dmthin $(dmthin --version | cut -d' ' -f2) on $(uname -r)"

echo
echo "== 1. a thin pool on sparse loopback files, and a base filesystem"
step dmthin --root "$root" init --data-size 2G --metadata-size 64M --base-size 256M --fs ext4
step ls -ls "$root/devicemapper"

echo
echo "== 2. one snapshot per layer: an image, a container on top of it"
step dmthin --root "$root" create image1
step dmthin --root "$root" mount image1 "$mnt/image1"
step sh -c "echo 'hello from the image layer' > '$mnt/image1/hello.txt' && sync"
step dmthin --root "$root" umount image1 "$mnt/image1"
step dmthin --root "$root" create container1 --from image1
step dmthin --root "$root" create other --from image1

echo
echo "== 3. write in the container; the image and a sibling do not see it"
step dmthin --root "$root" mount container1 "$mnt/container1"
step dmthin --root "$root" mount other "$mnt/other"
step cat "$mnt/container1/hello.txt"
step sh -c "echo 'written in container1' > '$mnt/container1/new.txt' && sync"
step cat "$mnt/container1/new.txt"
step sh -c "test ! -e '$mnt/other/new.txt' && echo 'other: new.txt is not there (isolated)'"
step dmthin --root "$root" list
step dmthin --root "$root" status

echo
echo "== 4. what the kernel sees"
if command -v dmsetup >/dev/null; then
    step dmsetup ls
fi

echo
echo "== 5. grow the pool, remove a layer, tear down"
step dmthin --root "$root" grow-pool 3G
step dmthin --root "$root" umount other "$mnt/other"
step dmthin --root "$root" remove other
step dmthin --root "$root" list --json
step dmthin --root "$root" umount container1 "$mnt/container1"
step dmthin --root "$root" shutdown

echo
echo "== 6. everything comes back after shutdown"
step dmthin --root "$root" mount container1 "$mnt/container1"
step cat "$mnt/container1/new.txt"
step dmthin --root "$root" shutdown

echo
echo "walkthrough done"
