# shellcheck shell=bash
# ioctl-tests/run: the initramfs. Three gzip'ed newc cpio parts, concatenated:
# `base` (busybox, modules, the real tools, /init = ioctl-tests/guest-init.sh)
# and `udev` (with --udev) are cached in $CACHE_DIR keyed by the runner's
# files, the kernel and the package versions; `run` (test binaries, the CLI,
# the per-run settings in /etc/dmthin) is packed for every run.

# Copies a host file into the staging tree at the same path, recreating the
# symlinks on the way (e.g. /sbin/mkfs.ext4 -> mke2fs) and their targets.
stage_copy() {
    local src=$1 stage=$2 dir dst link n=0
    while :; do
        [[ -e $src || -L $src ]] || die "stage: $src does not exist"
        dir=$(readlink -f -- "$(dirname -- "$src")")
        dst=$stage$dir/$(basename -- "$src")
        mkdir -p -- "$stage$dir"
        if [[ -L $src ]]; then
            link=$(readlink -- "$src")
            [[ -e $dst || -L $dst ]] || ln -s -- "$link" "$dst"
            case $link in
                /*) src=$link ;;
                *) src=$dir/$link ;;
            esac
            ((++n < 40)) || die "stage: symlink loop at $1"
        else
            [[ -e $dst ]] || cp -p -- "$src" "$dst"
            return 0
        fi
    done
}

elf_libs() {
    ldd -- "$1" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' || true
}

# Copies an executable and the shared libraries it needs.
stage_elf() {
    local lib
    stage_copy "$1" "$2"
    while IFS= read -r lib; do
        stage_copy "$lib" "$2"
    done < <(elf_libs "$1")
}

stage_tree() {
    local canon
    canon=$(readlink -f -- "$1")
    mkdir -p -- "$2$canon"
    cp -a -- "$canon/." "$2$canon/"
}

find_tool() {
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v -- "$1" 2>/dev/null
}

# Packs a staging directory into a gzip'ed newc cpio archive.
pack() {
    local stage=$1 out=$2 level=$3
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
        gzip "-$level" >"$out.tmp"
    mv -f -- "$out.tmp" "$out"
}

# Modules, in the order they are loaded. Missing optional ones only warn.
REQUIRED_MODULES=(dm-mod dm-bufio dm-bio-prison dm-persistent-data dm-thin-pool loop)
OPTIONAL_MODULES=(crc32c_generic libcrc32c dm-zero dm-flakey dm-delay dm-log-writes dm-snapshot xfs overlay
    virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk)

declare -A mod_seen=()
mod_order=()
mod_builtin=()
add_module() {
    local name=$1 required=$2 path dep deps
    [[ -z ${mod_seen[$name]:-} ]] || return 0
    mod_seen[$name]=1
    if ! path=$(kmodinfo -n "$name" 2>/dev/null); then
        if ((required)); then
            die "kernel $kver has no module $name"
        fi
        say "note: kernel $kver has no module $name; skipped"
        return 0
    fi
    if [[ $path == "(builtin)" ]]; then
        mod_builtin+=("$name")
        return 0
    fi
    deps=$(kmodinfo -F depends "$name" 2>/dev/null || true)
    IFS=, read -ra deps <<<"$deps"
    for dep in "${deps[@]}"; do
        [[ -n $dep ]] && add_module "$dep" 1
    done
    mod_order+=("$path")
}

GUEST_TOOLS_REQUIRED=(dmsetup losetup mke2fs mkfs.ext4 mkfs.xfs thin_check thin_dump thin_ls blkid
    mount umount bash)
GUEST_TOOLS_OPTIONAL=(dmstats resize2fs e2fsck fsck.ext4 dumpe2fs tune2fs xfs_growfs xfs_repair xfs_info
    xfs_db thin_restore thin_repair thin_rmap thin_delta thin_trim thin_metadata_size ipcs ipcrm
    blockdev wipefs lsblk findmnt fsfreeze fallocate flock truncate stat dd sync)

build_base() {
    local stage=$1 d bb applet m dst t p
    mkdir -p -- "$stage"
    # Same top-level layout as the host (merged /usr: bin -> usr/bin, ...).
    for d in bin sbin lib lib32 lib64 libx32; do
        if [[ -L /$d ]]; then
            ln -s -- "$(readlink "/$d")" "$stage/$d"
        elif [[ -d /$d ]]; then
            mkdir -p -- "$stage/$d"
        fi
    done
    mkdir -p -- "$stage"/{proc,sys,dev,tmp,run,mnt,root,etc,tests,var/tmp,usr/bin,usr/sbin,usr/local/bin}
    mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true

    # busybox (static) with its applets in /busybox/bin, last on PATH so the
    # real util-linux/e2fsprogs tools win.
    bb=$(find_tool busybox) || die "busybox not found (package busybox-static)"
    if ldd -- "$bb" >/dev/null 2>&1; then
        die "$bb is dynamically linked; install busybox-static"
    fi
    mkdir -p -- "$stage/busybox/bin"
    cp -- "$bb" "$stage/busybox/busybox"
    while IFS= read -r applet; do
        [[ -n $applet ]] && ln -sf ../busybox "$stage/busybox/bin/$applet"
    done < <("$bb" --list)
    # /bin/sh is dash like on the host: busybox ash prefers its own applets
    # over PATH (its losetup has no --show), which would surprise `sh -c`.
    dst=$stage$(readlink -f /bin)
    if p=$(find_tool dash); then
        stage_elf "$p" "$stage"
        ln -sf "$(basename -- "$p")" "$dst/sh"
    else
        ln -sf /busybox/busybox "$dst/sh"
    fi
    [[ -e $stage$(readlink -f /usr/bin)/env ]] ||
        ln -sf /busybox/busybox "$stage$(readlink -f /usr/bin)/env"

    # real tools and their libraries
    for t in "${GUEST_TOOLS_REQUIRED[@]}"; do
        p=$(find_tool "$t") || die "tool $t not found on the host"
        stage_elf "$p" "$stage"
    done
    for t in "${GUEST_TOOLS_OPTIONAL[@]}"; do
        if p=$(find_tool "$t"); then
            stage_elf "$p" "$stage"
        fi
    done
    [[ -e /etc/mke2fs.conf ]] && cp -- /etc/mke2fs.conf "$stage/etc/"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
    printf '%s\n' root:x:0: tty:x:5: disk:x:6: kmem:x:15: dialout:x:20: cdrom:x:24: audio:x:29: \
        video:x:44: input:x:105: kvm:x:106: render:x:107: sgx:x:108: >"$stage/etc/group"
    ln -s /proc/self/mounts "$stage/etc/mtab"

    # modules
    for m in "${REQUIRED_MODULES[@]}"; do add_module "$m" 1; done
    for m in "${OPTIONAL_MODULES[@]}"; do add_module "$m" 0; done
    : >"$stage/etc/dmthin-modules"
    for p in "${mod_order[@]}"; do
        case $p in
            *.ko.xz) dst=${p%.xz} ;;
            *.ko.zst) dst=${p%.zst} ;;
            *.ko.gz) dst=${p%.gz} ;;
            *) dst=$p ;;
        esac
        dst=$(readlink -f -- "$(dirname -- "$dst")")/$(basename -- "$dst")
        # a downloaded kernel's modules go to their place under / in the guest
        [[ $mod_root == / ]] || dst=${dst#"$(readlink -f -- "$mod_root")"}
        mkdir -p -- "$stage$(dirname -- "$dst")"
        case $p in
            *.ko.xz) xz -dc -- "$p" >"$stage$dst" ;;
            *.ko.zst) zstd -qdc -- "$p" >"$stage$dst" ;;
            *.ko.gz) gzip -dc -- "$p" >"$stage$dst" ;;
            *) cp -- "$p" "$stage$dst" ;;
        esac
        printf '%s\n' "$dst" >>"$stage/etc/dmthin-modules"
    done
    say "modules: ${#mod_order[@]} to insmod; built into $kver: ${mod_builtin[*]:-none}"

    cp -- "$TESTS_DIR/guest-init.sh" "$stage/init"
    chmod 755 "$stage/init"
}

build_udev_part() {
    local stage=$1 p
    mkdir -p -- "$stage"
    p=/lib/systemd/systemd-udevd
    [[ -e $p ]] || die "--udev: $p missing (package udev)"
    stage_elf "$(readlink -f -- "$p")" "$stage"
    stage_copy "$p" "$stage"
    p=$(find_tool udevadm) || die "--udev: udevadm missing (package udev)"
    stage_elf "$p" "$stage"
    stage_tree /lib/udev/rules.d "$stage"
    [[ -d /etc/udev ]] && stage_tree /etc/udev "$stage"
    for p in /lib/udev/*_id; do
        [[ -x $p ]] && stage_elf "$p" "$stage"
    done
    return 0
}


# The cached parts are rebuilt when the runner's files, the kernel or a
# package changes.
cache_key() {
    {
        sha256sum -- "${RUNNER_FILES[@]}"
        echo "$kver"
        [[ -z $kernel_pkg ]] || echo "$kernel_pkg"
        dpkg-query -W -f='${Package} ${Version}\n' "${vm_pkgs[@]}" udev 2>/dev/null || true
    } | sha256sum | cut -c1-16
}

ensure_part() { # name builder-function
    local name=$1 builder=$2 key out stage t0
    key=$(cache_key)
    out=$CACHE_DIR/$name-$kver-$key.cpio.gz
    if [[ -s $out && $rebuild_base == 0 ]]; then
        say "using cached $name initramfs $(basename -- "$out")"
        part_path=$out
        return 0
    fi
    exec 9>"$CACHE_DIR/.lock"
    flock 9
    if [[ ! -s $out || $rebuild_base == 1 ]]; then
        t0=$SECONDS
        say "packing $name initramfs for $kver (cached afterwards)"
        stage=$(mktemp -d "$CACHE_DIR/tmp/$name.XXXXXX")
        "$builder" "$stage"
        pack "$stage" "$out" 6
        rm -rf -- "$stage"
        find "$CACHE_DIR" -maxdepth 1 -name "$name-$kver-*.cpio.gz" ! -name "$(basename -- "$out")" -delete
        say "packed $name initramfs in $((SECONDS - t0)) s ($(du -h -- "$out" | cut -f1))"
    fi
    flock -u 9
    exec 9>&-
    part_path=$out
}


# Packs the per-run archive into $run_dir/run.cpio.gz: the CLI, the test
# binaries (or the --exec command / --script file), the settings in
# /etc/dmthin (nonce, mode, args, env, scratch disk names).
build_run_part() {
    local stage=$run_dir/stage entry
    mkdir -p -- "$stage/etc/dmthin" "$stage/tests" "$stage/usr/local/bin"
    echo "$nonce" >"$stage/etc/dmthin/nonce"
    echo "$mode" >"$stage/etc/dmthin/mode"
    [[ -t 1 ]] && : >"$stage/etc/dmthin/color"
    ((udev)) && : >"$stage/etc/dmthin/udev"
    lines "${test_args[@]}" >"$stage/etc/dmthin/args"
    lines "${guest_env[@]}" >"$stage/etc/dmthin/env"
    lines "${scratch_devs[@]}" >"$stage/etc/dmthin/scratch"
    guest_bin "$cli_bin" "$stage/usr/local/bin/dmthin" "$stage"
    guest_bin "$snap_bin" "$stage/usr/local/bin/dmthin-snapshotter" "$stage"
    # The Go suite (11 MB) and containerd with runc (90 MB) only when a
    # snapshotter test (snapshotter*.rs) runs, or for --exec/--script.
    if [[ $mode != suite ]] || printf '%s\n' "${tests_to_run[@]}" | grep -q '^snapshotter[a-z_]*'$'\t'; then
        [[ -z $conformance_bin ]] ||
            guest_bin "$conformance_bin" "$stage/usr/local/bin/dmthin-conformance.test" "$stage"
        local t
        for t in containerd ctr containerd-shim-runc-v2 runc; do
            t=$(find_tool "$t") && stage_elf "$t" "$stage"
        done
    fi
    case $mode in
        suite)
            for entry in "${tests_to_run[@]}"; do
                guest_bin "${entry#*$'\t'}" "$stage/tests/${entry%%$'\t'*}" "$stage"
                printf '%s\n' "${entry%%$'\t'*}" >>"$stage/etc/dmthin/tests"
            done
            ;;
        exec)
            printf '%s\n' "$exec_cmd" >"$stage/etc/dmthin/cmd"
            ;;
        script)
            cp -- "$script_file" "$stage/etc/dmthin/script"
            chmod 755 -- "$stage/etc/dmthin/script"
            ;;
    esac
    pack "$stage" "$run_dir/run.cpio.gz" 1
}

lines() { [[ $# -eq 0 ]] || printf '%s\n' "$@"; }

guest_bin() { # src dst stage
    if ((keep_debug)) || ! command -v objcopy >/dev/null; then
        cp -- "$1" "$2"
    else
        objcopy --strip-debug -- "$1" "$2" 2>/dev/null || cp -- "$1" "$2"
    fi
    chmod 755 -- "$2"
    local lib
    if ((!static_build)); then
        while IFS= read -r lib; do
            stage_copy "$lib" "$3"
        done < <(elf_libs "$1")
    fi
}
