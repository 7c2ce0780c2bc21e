# shellcheck shell=bash
# ioctl-tests/run: which kernel the VM boots. By default the newest cloud
# kernel installed under /boot; with --kernel SUITE the cloud kernel of
# another Debian suite, downloaded with a private apt state (the host's own
# sources stay untouched) and extracted once into $CACHE_DIR/kernels.

kver=           # kernel release (uname -r of the guest)
kernel_image=   # the vmlinuz qemu boots
mod_root=/      # root of the kernel's /lib/modules/$kver (modinfo -b)
kernel_pkg=     # "package version" of a downloaded kernel (part of the cache key)

# modinfo for the chosen kernel.
kmodinfo() { modinfo -b "$mod_root" -k "$kver" "$@"; }

pick_kernel() {
    if [[ -n $kernel_suite && $kernel_suite != "$(host_suite)" ]]; then
        suite_kernel "$kernel_suite"
        return
    fi
    local v f cands=()
    if [[ -n ${DMTHIN_VM_KERNEL:-} ]]; then
        kver=$DMTHIN_VM_KERNEL
        kernel_image=/boot/vmlinuz-$kver
        [[ -r $kernel_image ]] || die "DMTHIN_VM_KERNEL=$kver: /boot/vmlinuz-$kver not readable"
        return
    fi
    for f in /boot/vmlinuz-*; do
        [[ -e $f ]] && cands+=("${f#/boot/vmlinuz-}")
    done
    # newest cloud kernel first, then any other kernel that has dm-thin-pool
    while IFS= read -r v; do
        [[ -n $v && -r /boot/vmlinuz-$v && -d /lib/modules/$v ]] || continue
        if modinfo -k "$v" -n dm-thin-pool >/dev/null 2>&1; then
            kver=$v
            kernel_image=/boot/vmlinuz-$kver
            return
        fi
    done < <(printf '%s\n' "${cands[@]}" | sort -V -r |
        awk '/-cloud-/ { print; next } { rest[++n] = $0 } END { for (i = 1; i <= n; i++) print rest[i] }')
    die "no kernel with device-mapper under /boot (is linux-image-cloud-amd64 installed?)"
}

host_suite() {
    (
        # shellcheck source=/dev/null
        . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}"
    ) || true
}

# The host's Debian mirror: the first .../debian URI of its apt sources
# (deb822 debian.sources, then the one-line sources.list), else deb.debian.org.
host_mirror() {
    local uri
    uri=$(awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' \
        /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $uri ]] ||
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\/.*\/debian\/?$/) { print $i; exit } }' \
            /etc/apt/sources.list 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# Finds, downloads (once) and extracts the current linux-image-cloud-amd64 of
# Debian suite $1; sets kver, kernel_image, mod_root and kernel_pkg.
suite_kernel() {
    local suite=$1 kdir=$CACHE_DIR/kernels apt_dir lists pkg ver dir deb tmp
    local apt_opts=()
    command -v apt-get >/dev/null || die "--kernel $suite needs apt-get (a Debian host)"
    ensure_packages xz-utils debian-archive-keyring
    apt_dir=$kdir/apt-$suite
    lists=$apt_dir/lists
    mkdir -p -- "$lists/partial" "$apt_dir/archives/partial" "$apt_dir/cache"
    apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$lists" -o "Dir::State::status=$apt_dir/status" -o "Dir::Cache=$apt_dir/cache"
        -o "Dir::Cache::Archives=$apt_dir/archives" -o APT::Sandbox::User=root)
    exec 8>"$kdir/.lock-$suite"
    flock 8
    # an empty dpkg status: the host's installed kernel must not win
    : >"$apt_dir/status"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
        "$(host_mirror)" "$suite" >"$apt_dir/sources.list"
    # The package lists are refreshed once a day; the kernels stay cached.
    if [[ -z $(find "$lists" -maxdepth 1 -name '*_InRelease' -mmin -1440 2>/dev/null) ]]; then
        say "--kernel $suite: apt-get update (private lists in $apt_dir)"
        apt-get "${apt_opts[@]}" update -qq </dev/null >&2 ||
            say "--kernel $suite: apt-get update failed; trying the lists and kernels already cached"
    fi
    pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }' || true)
    [[ -n $pkg ]] && ver=$(apt-cache "${apt_opts[@]}" show --no-all-versions "$pkg" 2>/dev/null |
        awk '/^Version:/ { print $2; exit }' || true)
    if [[ -z $pkg || -z ${ver:-} ]]; then
        # offline: the newest kernel extracted before
        dir=$(find "$kdir" -mindepth 1 -maxdepth 1 -type d -name "$suite-*" -exec test -e {}/.complete \; \
            -print 2>/dev/null | sort -V | tail -n1)
        [[ -n $dir ]] || die "--kernel $suite: no linux-image-cloud-amd64 in Debian $suite ($(host_mirror))"
        say "--kernel $suite: package lists unavailable; using the cached $(basename -- "$dir")"
    else
        dir=$kdir/$suite-$pkg-$ver
    fi
    if [[ ! -e $dir/.complete ]]; then
        say "--kernel $suite: downloading $pkg $ver"
        rm -rf -- "$dir" "$dir.tmp"
        (cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" download -qq "$pkg=$ver" </dev/null >&2) ||
            die "--kernel $suite: apt-get download $pkg=$ver failed"
        deb=$(find "$apt_dir/archives" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n1)
        [[ -n $deb ]] || die "--kernel $suite: apt-get download left no ${pkg}_*.deb"
        tmp=$dir.tmp
        mkdir -p -- "$tmp"
        dpkg-deb -x "$deb" "$tmp" || die "--kernel $suite: dpkg-deb -x $deb failed"
        # trixie ships its modules under usr/lib/modules: give modinfo and
        # depmod the usual lib/modules path
        if [[ ! -e $tmp/lib && -d $tmp/usr/lib/modules ]]; then
            ln -s usr/lib "$tmp/lib"
        fi
        kver=$(find "$tmp/lib/modules/" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)
        [[ -n $kver && -r $tmp/boot/vmlinuz-$kver ]] || die "--kernel $suite: $deb has no kernel and modules"
        # the package's postinst would run depmod: modinfo needs modules.dep
        depmod -b "$tmp" "$kver" || die "--kernel $suite: depmod for $kver failed"
        printf '%s %s\n' "$pkg" "$ver" >"$tmp/.package"
        : >"$tmp/.complete"
        mv -- "$tmp" "$dir"
        rm -f -- "$deb"
        # older kernels of this suite are not needed any more
        find "$kdir" -mindepth 1 -maxdepth 1 -type d -name "$suite-*" ! -name "$(basename -- "$dir")" \
            -exec rm -rf -- {} +
    fi
    flock -u 8
    exec 8>&-
    mod_root=$dir
    kver=$(find "$dir/lib/modules/" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)
    kernel_image=$dir/boot/vmlinuz-$kver
    kernel_pkg=$(cat -- "$dir/.package")
    [[ -r $kernel_image ]] || die "--kernel $suite: $kernel_image missing"
    say "--kernel $suite: $kernel_pkg ($kver), cached in $dir"
}
