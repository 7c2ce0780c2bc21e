#!/bin/sh
# Guest side of the power-cut test (ioctl-tests/powercut drives it).
#   run:   loop add_device/remove_device through the CLI, appending an fsynced
#          acknowledgement after each success, until the VM is killed.
#   check: reopen the set and verify every acknowledged operation survived,
#          the pool holds exactly the recorded thin ids, and thin_check passes.
set -eu
phase=${1:?run or check}
mkdir -p /mnt/scratch
if ! mount -t ext4 /dev/vda /mnt/scratch 2>/dev/null; then
    mkfs.ext4 -q -F /dev/vda
    mount -t ext4 /dev/vda /mnt/scratch
fi
root=/mnt/scratch/set
acks=/mnt/scratch/acks
counter=/mnt/scratch/counter
touch "$acks"

case $phase in
run)
    if [ ! -f "$root/metadata/set.json" ]; then
        dmthin --root "$root" init --data-size 1G --metadata-size 16M --base-size 32M >/dev/null
    fi
    i=$(cat "$counter" 2>/dev/null || echo 0)
    echo "POWERCUT-LOOP-START at $i"
    while :; do
        i=$((i + 1))
        echo "$i" >"$counter"
        sync
        if dmthin --root "$root" create "d$i" >/dev/null; then
            echo "create d$i" >>"$acks"
            sync
            echo "ack create d$i"
        fi
        if [ $((i % 3)) -eq 0 ]; then
            if dmthin --root "$root" remove "d$((i - 1))" >/dev/null; then
                echo "remove d$((i - 1))" >>"$acks"
                sync
                echo "ack remove d$((i - 1))"
            fi
        fi
    done
    ;;
check)
    dmthin --root "$root" list >/tmp/list.txt
    awk 'NR > 1 { print $1 }' /tmp/list.txt | sort >/tmp/have
    awk '$1 == "create" { s[$2] = 1 } $1 == "remove" { s[$2] = 0 }
         END { for (k in s) print k, s[k] }' "$acks" >/tmp/expect
    # The operations in flight at the cut (not acknowledged) may have
    # happened or not: the create of d$i, and on every third step the
    # remove of d$((i - 1)).
    i=$(cat "$counter" 2>/dev/null || echo 0)
    : >/tmp/maybe
    grep -qx "create d$i" "$acks" || echo "d$i" >>/tmp/maybe
    if [ $((i % 3)) -eq 0 ] && ! grep -qx "remove d$((i - 1))" "$acks"; then
        echo "d$((i - 1))" >>/tmp/maybe
    fi
    bad=0
    while read -r id want; do
        if grep -qx "$id" /tmp/have; then got=1; else got=0; fi
        if grep -qx "$id" /tmp/maybe; then
            # Record how it came out, so later cuts expect that state.
            echo "POWERCUT: $id was in flight at the cut; it $([ "$got" = 1 ] && echo exists || echo is gone)"
            echo "$([ "$got" = 1 ] && echo create || echo remove) $id" >>"$acks"
            continue
        fi
        if [ "$got" != "$want" ]; then
            echo "POWERCUT: $id should $([ "$want" = 1 ] && echo exist || echo be gone) but $([ "$got" = 1 ] && echo exists || echo is missing)"
            bad=1
        fi
    done </tmp/expect
    echo "POWERCUT: $(wc -l <"$acks") acknowledged operations, $(wc -l </tmp/have) devices now"
    base=$(dmthin --root "$root" status --json | sed -n 's/.*"base_thin_id": *\([0-9]*\).*/\1/p')
    dmthin --root "$root" shutdown
    thin_check "$root/devicemapper/metadata" || { echo "POWERCUT: thin_check failed"; bad=1; }
    in_pool=$(thin_dump "$root/devicemapper/metadata" | grep -c '<device dev_id=')
    want=$(($(wc -l </tmp/have) + 1))
    if [ "$in_pool" != "$want" ]; then
        echo "POWERCUT: pool holds $in_pool thin devices, records name $want (base $base)"
        bad=1
    fi
    [ "$bad" = 0 ] && echo "POWERCUT-CHECK-OK"
    exit "$bad"
    ;;
esac
