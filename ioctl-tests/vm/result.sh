# shellcheck shell=bash
# ioctl-tests/run: turns the console log into the runner's exit status (the
# guest's DMTHIN-VM-RESULT line, a power cut, a timeout, a panic or Oops).

last_lines() {
    say "last console lines:"
    tr -d '\r' <"$log_file" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' |
        tail -n "${1:-25}" | sed 's/^/    | /' >&2
}

# Exits with the result of the run boot_and_watch watched.
exit_with_result() {
    local rc_line rc
    if [[ -n $killed ]]; then
        say "DMTHIN-VM-KILLED: qemu SIGKILLed (power cut) because $killed; log $log_file"
        exit 0
    fi
    if ((timed_out)); then
        say "guest timed out after $timeout_s s; killed qemu; log $log_file"
        last_lines 30
        exit "$EXIT_TIMEOUT"
    fi
    if grep -qa 'Kernel panic - not syncing' "$log_file"; then
        say "guest kernel PANICKED after $secs s: $(grep -a -m1 -o 'Kernel panic - not syncing.*' "$log_file" | tr -d '\r')"
        say "log $log_file"
        last_lines 40
        exit "$EXIT_HARNESS"
    fi
    rc_line=$(tr -d '\r' <"$log_file" | grep -aoE -- "$result_re" | tail -n1 || true)
    if [[ -z $rc_line ]]; then
        say "guest produced no result line (qemu exit status $qemu_rc, $secs s); log $log_file"
        last_lines 30
        exit "$EXIT_HARNESS"
    fi
    rc=${rc_line#*rc=}
    rc=${rc%% *}
    if grep -qaE '\] (BUG: |Oops: |kernel BUG at )' "$log_file"; then
        say "guest kernel reported a BUG/Oops (guest rc=$rc); treating as failure; log $log_file"
        grep -aE -A3 '\] (BUG: |Oops: |kernel BUG at )' "$log_file" | tr -d '\r' | sed 's/^/    | /' >&2
        exit "$EXIT_HARNESS"
    fi
    if grep -qaE '\] WARNING: CPU: ' "$log_file"; then
        say "note: the guest kernel printed a WARNING (see the log)"
    fi
    if [[ -n $kill_on || -n $kill_after ]]; then
        say "guest finished (rc=$rc) before it could be killed ($secs s); log $log_file"
        exit "$EXIT_NOT_KILLED"
    fi
    if [[ $rc == 0 ]]; then
        say "PASS: guest rc=0 in $secs s; log $log_file"
    else
        say "FAIL: guest rc=$rc in $secs s; log $log_file"
    fi
    exit "$rc"
}
