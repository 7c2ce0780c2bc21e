#!/usr/bin/env bash
# dmthin walkthrough: what the dmthin CLI does today, against a real kernel.
# Run it with ioctl-tests/walkthrough (on this host if it has device-mapper,
# else in the test VM). Each step prints the command it runs.
set -euo pipefail

step() {
    printf '\n$ %s\n' "$*"
    "$@"
}

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

echo "== dmthin on $(uname -r)"
step dmthin --version
step dmthin --help

echo
echo "== loop devices"
truncate -s 64M "$work/backing.img"
printf '\n$ dmthin loop attach %s\n' "$work/backing.img"
dev=$(dmthin loop attach "$work/backing.img")
echo "$dev"
step dmthin loop list
step dmthin loop find "$work/backing.img" --json
step dmthin loop detach "$dev"
step dmthin loop list

echo
echo "walkthrough done"
