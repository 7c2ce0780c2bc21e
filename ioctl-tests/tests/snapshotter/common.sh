#!/bin/bash
# Shared by the containerd scripts of the snapshotter tests (containerd.sh,
# import_bench.sh): the shell settings, small helpers, and build_image,
# which builds the 3-layer OCI image both import (from busybox-static: a
# file changed in layer 2, a whiteout in layer 2, a file added in layer 3)
# into $W/image.tar, named $IMAGE.
set -euo pipefail
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

IMAGE=docker.io/library/dmthin-test:latest

step() { echo "== $*"; }
now() { cut -d" " -f1 /proc/uptime; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

wait_socket() { # path what
    local i
    for i in $(seq 1 600); do
        [[ -S $1 ]] && return 0
        sleep 0.1
    done
    echo "$2 did not create $1" >&2
    return 1
}

build_image() {
    img=$W/image
    mkdir -p "$img/blobs/sha256" "$W/layers"
    sha() { sha256sum "$1" | cut -d' ' -f1; }
    size() { wc -c <"$1" | tr -d " "; }
    layer_json=
    diff_ids=
    add_layer() { # dir
        local tar=$W/layers/$(basename "$1").tar
        (cd "$1" && tar -cf "$tar" .)
        diff_ids+="${diff_ids:+,}\"sha256:$(sha "$tar")\""
        gzip -c "$tar" >"$tar.gz"
        local d
        d=$(sha "$tar.gz")
        cp "$tar.gz" "$img/blobs/sha256/$d"
        layer_json+="${layer_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$(size "$tar.gz")}"
    }
    l1=$W/l1 l2=$W/l2 l3=$W/l3
    mkdir -p "$l1/bin" "$l1/etc" "$l1/tmp" "$l1/proc" "$l1/sys" "$l1/dev" "$l2/etc" "$l3"
    busybox=$(command -v busybox || true)
    [[ -n $busybox ]] || busybox=/busybox/bin/busybox
    cp "$(readlink -f "$busybox")" "$l1/bin/busybox"
    ln -s busybox "$l1/bin/sh"
    echo "written in layer 1" >"$l1/etc/a.txt"
    echo "deleted in layer 2" >"$l1/etc/gone.txt"
    echo "changed in layer 2" >"$l2/etc/a.txt"
    : >"$l2/etc/.wh.gone.txt"
    echo "from the top layer" >"$l3/top.txt"
    add_layer "$l1"
    add_layer "$l2"
    add_layer "$l3"
    cat >"$W/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[$diff_ids]}}
EOF
    cfg=$(sha "$W/config.json")
    cp "$W/config.json" "$img/blobs/sha256/$cfg"
    cat >"$W/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$cfg","size":$(size "$W/config.json")},"layers":[$layer_json]}
EOF
    man=$(sha "$W/manifest.json")
    cp "$W/manifest.json" "$img/blobs/sha256/$man"
    cat >"$img/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$man","size":$(size "$W/manifest.json"),"annotations":{"io.containerd.image.name":"$IMAGE","org.opencontainers.image.ref.name":"latest"}}]}
EOF
    echo '{"imageLayoutVersion":"1.0.0"}' >"$img/oci-layout"
    (cd "$img" && tar -cf "$W/image.tar" oci-layout index.json blobs)
}
