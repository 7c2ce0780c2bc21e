#!/bin/sh
# Builds containerd's snapshotter conformance suite for dmthin-snapshotter
# into a static test binary, from Debian's packaged Go sources
# (golang-go, golang-github-containerd-containerd-dev): no module download.
#
#   snapshotter/conformance/build.sh [OUT]   (default: $CARGO_TARGET_DIR or
#                                             target, /dmthin-conformance.test)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${CARGO_TARGET_DIR:-$here/../../target}/dmthin-conformance.test}
src=/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite
if ! command -v go >/dev/null || [ ! -d "$src" ]; then
    echo "build.sh: needs Debian's golang-go and golang-github-containerd-containerd-dev" >&2
    exit 1
fi
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$(dirname "$out")"
cd "$here"
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off CGO_ENABLED=0 \
    GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/go-build}" \
    go test -c -trimpath -ldflags='-s -w' -o "$out" .
echo "$out"
