# shellcheck shell=bash
# ioctl-tests/run --host: the same builds and test binaries, run directly on
# this host (root, a kernel with device-mapper) instead of in a VM.

run_on_host() {
    local entry name exe r rc=0 failed=() bindir
    grep -qw device-mapper /proc/misc 2>/dev/null || die "--host: /proc/misc has no device-mapper: this kernel has no" \
        "device-mapper (or dm-mod is not loaded). Run without --host to test in a VM."
    ((EUID == 0)) || die "--host: device-mapper tests need root"
    ensure_packages "${host_pkgs[@]}" "${build_pkgs[@]}"
    if ((udev)); then
        [[ -e /run/udev/control ]] || die "--host --udev: udev is not running on this host"
        export DMTHIN_TEST_UDEV=1
    fi
    build "$([[ $mode == suite ]] && echo 1 || echo 0)"
    bindir=$(mktemp -d)
    trap 'rm -rf -- "$bindir"' EXIT
    ln -s -- "$cli_bin" "$bindir/dmthin"
    ln -s -- "$snap_bin" "$bindir/dmthin-snapshotter"
    [[ -z $conformance_bin ]] || ln -s -- "$conformance_bin" "$bindir/dmthin-conformance.test"
    export PATH="$bindir:$PATH" RUST_BACKTRACE=1 DMTHIN_TEST_HOST=1
    local kv
    for kv in "${guest_env[@]}"; do
        export "${kv?}"
    done
    case $mode in
        exec)
            bash -c "$exec_cmd" && rc=0 || rc=$?
            ;;
        script)
            chmod +x -- "$script_file" 2>/dev/null || true
            if [[ $(head -c2 -- "$script_file") == '#!' ]]; then
                "$script_file" "${test_args[@]}" && rc=0 || rc=$?
            else
                bash "$script_file" "${test_args[@]}" && rc=0 || rc=$?
            fi
            ;;
        suite)
            select_tests
            for entry in "${tests_to_run[@]}"; do
                name=${entry%%$'\t'*}
                exe=${entry#*$'\t'}
                say "running $name on the host"
                "$exe" --test-threads=1 "${test_args[@]}" </dev/null && r=0 || r=$?
                ((r == 0)) || failed+=("$name(rc=$r)")
            done
            if [[ ${#failed[@]} -gt 0 ]]; then
                say "FAILED: ${failed[*]}"
                rc=1
            else
                say "all ${#tests_to_run[@]} test binaries passed"
            fi
            ;;
    esac
    exit "$rc"
}
