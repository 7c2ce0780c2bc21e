# shellcheck shell=bash
# ioctl-tests/run: the Debian packages the VM (or --host) needs, installed
# with apt only when one is missing.

vm_pkgs=(qemu-system-x86 linux-image-cloud-amd64 busybox-static e2fsprogs xfsprogs
    thin-provisioning-tools cpio dmsetup util-linux)
# For the snapshotter test: containerd's conformance suite, built from
# Debian's packaged Go sources, and real containerd with runc.
snapshotter_pkgs=(golang-go golang-github-containerd-containerd-dev containerd runc)
# To build the workspace: the snapshotter's gRPC bindings need protoc.
build_pkgs=(protobuf-compiler)
host_pkgs=(e2fsprogs xfsprogs thin-provisioning-tools dmsetup util-linux)

pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

ensure_packages() {
    local p missing=()
    if ! command -v dpkg-query >/dev/null; then
        say "not a Debian system: cannot check packages ($*); assuming the tools are there"
        return 0
    fi
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    ((EUID == 0)) || die "missing Debian packages: ${missing[*]} (run as root or install them)"
    say "installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null ||
        die "apt-get install ${missing[*]} failed"
}
