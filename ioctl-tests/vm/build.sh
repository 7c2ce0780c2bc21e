# shellcheck shell=bash
# ioctl-tests/run: building the kernel test binaries and the dmthin CLI with
# cargo, and choosing which test binaries run.

built_tests=() # "name<TAB>path"
cli_bin=
snap_bin=        # dmthin-snapshotter
conformance_bin= # containerd's conformance suite for it (Go), if buildable
static_build=0

cargo_json_executables() {
    # stdin: cargo --message-format=json; stdout: executable paths of the
    # compiler-artifact messages that match the extended regex $1.
    grep '"reason":"compiler-artifact"' | grep -E -- "$1" |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p'
}

# With --message-format=json the compiler's messages are JSON on stdout; on
# failure run cargo again in human format so the errors show, then give up.
show_build_errors() {
    local rc=$1
    shift
    cargo "$@" >&2 || true
    die "$rc" "cargo $* failed"
}

build() {
    local want_tests=$1 target_args=() extra=() json exe name
    # Line tables only: backtraces keep files and lines, and the twenty test
    # binaries link faster and pack into a smaller initramfs than with full
    # debug info (set CARGO_PROFILE_DEV_DEBUG to override).
    export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
    if [[ -n ${DMTHIN_CARGO_ARGS:-} ]]; then
        read -ra extra <<<"$DMTHIN_CARGO_ARGS"
    fi
    command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain, e.g. with rustup)"
    if ((!host)) && [[ ${DMTHIN_VM_MUSL:-1} != 0 ]] &&
        rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
        target_args=(--target "$MUSL_TARGET")
        static_build=1
    fi
    if ((!host && !static_build)); then
        say "building for the host (glibc); its libraries are copied into the guest"
    fi
    cd "$REPO_ROOT" || die "cannot cd to $REPO_ROOT"
    if ((want_tests)); then
        say "building kernel tests: cargo test -p dmthin-ioctl-tests --no-run ${target_args[*]} ${extra[*]}"
        json=$(cargo test -p dmthin-ioctl-tests --no-run --message-format=json \
            "${target_args[@]}" "${extra[@]}") ||
            show_build_errors $? test -p dmthin-ioctl-tests --no-run "${target_args[@]}" "${extra[@]}"
        while IFS= read -r exe; do
            [[ -n $exe ]] || continue
            name=$(basename -- "$exe")
            name=${name%-*}
            built_tests+=("$name"$'\t'"$exe")
        done < <(cargo_json_executables '"profile":\{[^}]*"test":true' <<<"$json")
    fi
    say "building the CLI: cargo build -p dmthin --bin dmthin ${target_args[*]} ${extra[*]}"
    json=$(cargo build -p dmthin --bin dmthin --message-format=json \
        "${target_args[@]}" "${extra[@]}") ||
        show_build_errors $? build -p dmthin --bin dmthin "${target_args[@]}" "${extra[@]}"
    cli_bin=$(cargo_json_executables '"kind":\["bin"\],[^}]*"name":"dmthin"' <<<"$json" | tail -n1)
    [[ -x $cli_bin ]] || die "could not find the dmthin CLI in cargo's output"
    build_snapshotter "${target_args[@]}" "${extra[@]}"
}

# dmthin-snapshotter (same target as the CLI) and, from Debian's Go sources,
# containerd's conformance suite for it (snapshotter/conformance/build.sh).
# It has its fail points (and the device set's) compiled in, for
# tests/snapshotter_cli_and_failpoints.rs: they cost an environment look-up
# per step and act only when DMTHIN_FAILPOINT names one.
build_snapshotter() {
    local json
    set -- "$@" --features dmthin-snapshotter/failpoints
    say "building the snapshotter: cargo build -p dmthin-snapshotter $*"
    json=$(cargo build -p dmthin-snapshotter --bin dmthin-snapshotter --message-format=json "$@") ||
        show_build_errors $? build -p dmthin-snapshotter --bin dmthin-snapshotter "$@"
    snap_bin=$(cargo_json_executables '"name":"dmthin-snapshotter"' <<<"$json" | tail -n1)
    [[ -x $snap_bin ]] || die "could not find dmthin-snapshotter in cargo's output"
    ensure_packages "${snapshotter_pkgs[@]}"
    local out=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/dmthin-conformance.test
    if command -v go >/dev/null; then
        say "building containerd's snapshotter conformance suite (Go)"
        "$REPO_ROOT/snapshotter/conformance/build.sh" "$out" >/dev/null ||
            die "$EXIT_HARNESS" "building the Go conformance suite failed"
        conformance_bin=$out
    else
        say "no Go toolchain: the snapshotter test will fail (install ${snapshotter_pkgs[*]})"
    fi
}

# Orders the built test binaries: vm_smoke (checks the harness itself) first,
# then by name; keeps only --test selections when given.
tests_to_run=() # same "name<TAB>path" format
select_tests() {
    local entry name sel found sorted
    sorted=$(printf '%s\n' "${built_tests[@]}" | LC_ALL=C sort -t$'\t' -k1,1 |
        awk -F'\t' '$1 == "vm_smoke" { print; next } { rest[++n] = $0 }
                    END { for (i = 1; i <= n; i++) print rest[i] }')
    if [[ ${#selected[@]} -eq 0 ]]; then
        while IFS= read -r entry; do
            [[ -n $entry ]] && tests_to_run+=("$entry")
        done <<<"$sorted"
    else
        for sel in "${selected[@]}"; do
            found=0
            while IFS= read -r entry; do
                name=${entry%%$'\t'*}
                if [[ $name == "$sel" ]]; then
                    tests_to_run+=("$entry")
                    found=1
                fi
            done <<<"$sorted"
            ((found)) || die "$EXIT_USAGE" "no test binary named '$sel' (have: $(list_names | tr '\n' ' '))"
        done
    fi
    [[ ${#tests_to_run[@]} -gt 0 ]] || die "no kernel test binaries were built"
}

list_names() {
    local entry
    for entry in "${built_tests[@]}"; do
        printf '%s\n' "${entry%%$'\t'*}"
    done | LC_ALL=C sort
}
