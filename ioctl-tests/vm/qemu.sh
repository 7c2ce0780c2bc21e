# shellcheck shell=bash
# ioctl-tests/run: the VM itself. qemu's command line, the boot with its
# console streamed to stdout and the log, and the watch that enforces the
# timeout and the --kill-on/--kill-after power cuts (SIGKILL, never a
# recycled pid).

qemu_pid() {
    [[ -s $run_dir/qemu.pid ]] && cat -- "$run_dir/qemu.pid"
}

# SIGKILLs our qemu: the pid from its -pidfile, checked to still be the qemu
# whose command line names this run's directory (never a recycled pid).
ours() { # pid: is it a process whose command line names this run's directory?
    [[ -n $1 ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$run_dir/"
}

kill_vm() {
    local pid
    [[ -n ${timeout_pid:-} ]] || return 0
    pid=$(qemu_pid || true)
    if ours "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        return 0
    fi
    # qemu has not written its pidfile yet: stop it through `timeout`
    pid=$(cat -- "$run_dir/timeout.pid" 2>/dev/null || true)
    if ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    kill_vm
    [[ -n ${tee_pid:-} ]] && kill "$tee_pid" 2>/dev/null
    [[ -n ${run_dir:-} && -d $run_dir ]] && rm -rf -- "$run_dir"
    return 0
}

# Sets qemu_args (without -initrd) and scratch_devs (vda, vdb, ...), creating
# missing scratch images.
qemu_args=()
scratch_devs=()
make_qemu_args() {
    local letters=(a b c d e f g h i j k l m n o p q r s t u v w x y z) i=0 img
    qemu_args=(-nographic -no-reboot -nic none -m "$mem_mb" -smp "$smp"
        -kernel "$kernel_image"
        -append "console=ttyS0 quiet panic=-1 rdinit=/init"
        -pidfile "$run_dir/qemu.pid")
    if ((use_kvm)); then
        [[ -r /dev/kvm && -w /dev/kvm ]] || die "--kvm: /dev/kvm is not usable"
        qemu_args+=(-accel kvm -cpu host)
    else
        qemu_args+=(-accel tcg -cpu max)
    fi
    for img in "${scratch_imgs[@]}"; do
        ((i < ${#letters[@]})) || die "$EXIT_USAGE" "too many --scratch disks"
        if [[ ! -e $img ]]; then
            mkdir -p -- "$(dirname -- "$img")"
            truncate -s "$scratch_size" -- "$img"
            say "created sparse scratch image $img ($scratch_size)"
        fi
        qemu_args+=(-drive "file=$img,format=raw,if=virtio,discard=unmap")
        scratch_devs+=("vd${letters[i]}")
        i=$((i + 1))
    done
}

# The console log: --log FILE, else a new one in $CACHE_DIR/logs (the 30
# newest are kept, the newest linked as latest.log).
open_log() {
    local old
    if [[ -z $log_file ]]; then
        log_file=$CACHE_DIR/logs/vm-$(date +%Y%m%d-%H%M%S)-$$.log
        ln -sfn -- "$(basename -- "$log_file")" "$CACHE_DIR/logs/latest.log"
        # keep the 30 newest logs
        find "$CACHE_DIR/logs" -maxdepth 1 -name 'vm-*.log' -printf '%T@ %p\n' | sort -rn |
            tail -n +31 | cut -d' ' -f2- | while IFS= read -r old; do rm -f -- "$old"; done
    else
        mkdir -p -- "$(dirname -- "$log_file")"
    fi
    : >"$log_file"
}

elapsed_ms() { echo $((($(date +%s%N) - start) / 1000000)); }
fmt_ms() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }

# Boots qemu with $initrd and watches it until it exits or is killed. Sets
# qemu_rc, timed_out, killed (why it was killed) and secs (wall time).
timeout_pid=
tee_pid=
start=
qemu_rc=0
timed_out=0
killed=
secs=
boot_and_watch() {
    local what ms marker_ms='' kill_delay_ms kill_after_ms result_seen_ms=''
    what=$mode
    [[ $mode == suite ]] && what="${#tests_to_run[@]} test binaries"
    say "booting $kver ($([[ $use_kvm == 1 ]] && echo KVM || echo TCG), ${mem_mb} MiB," \
        "initrd $(du -h -- "$initrd" | cut -f1)) to run $what; timeout ${timeout_s} s; log $log_file"

    # qemu -> fifo -> tee (stdout + log). qemu runs under `timeout` as a safety
    # net if this script dies; the watch loop below enforces the real limits.
    mkfifo -- "$run_dir/console"
    tee -a -- "$log_file" <"$run_dir/console" &
    tee_pid=$!
    start=$(date +%s%N)
    # (in a quiet subshell: bash would report "Killed" when we SIGKILL qemu)
    (
        timeout -s KILL $((timeout_s + 30)) qemu-system-x86_64 "${qemu_args[@]}" -initrd "$initrd" \
            </dev/null >"$run_dir/console" 2>&1 &
        echo $! >"$run_dir/timeout.pid"
        wait $!
    ) 2>/dev/null &
    timeout_pid=$!

    kill_delay_ms=$(secs_to_ms "${kill_delay:-0}")
    kill_after_ms=$(secs_to_ms "${kill_after:-0}")
    while kill -0 "$timeout_pid" 2>/dev/null; do
        ms=$(elapsed_ms)
        if [[ -n $kill_on && -z $marker_ms ]] && grep -qaF -- "$kill_on" "$log_file"; then
            marker_ms=$ms
        fi
        if [[ -n $marker_ms ]] && ((ms >= marker_ms + kill_delay_ms)); then
            kill_vm
            killed="marker '$kill_on' appeared after $(fmt_ms "$marker_ms") s"
            [[ -z $kill_delay ]] || killed+=" (killed $(fmt_ms $((ms - marker_ms))) s later)"
            break
        fi
        if [[ -n $kill_after ]] && ((ms >= kill_after_ms)); then
            kill_vm
            killed="$kill_after s elapsed"
            break
        fi
        if ((ms >= timeout_s * 1000)); then
            kill_vm
            timed_out=1
            break
        fi
        # The guest powers off right after its result line; if it hangs there,
        # do not wait for the full timeout.
        if [[ -z $result_seen_ms ]] && grep -qaE -- "$result_re" "$log_file"; then
            result_seen_ms=$ms
        elif [[ -n $result_seen_ms ]] && ((ms - result_seen_ms > 20000)); then
            say "guest printed its result but did not power off; killing it"
            kill_vm
            break
        fi
        sleep 0.1
    done
    qemu_rc=0
    wait "$timeout_pid" || qemu_rc=$?
    timeout_pid=
    wait "$tee_pid" 2>/dev/null || true
    tee_pid=
    ms=$(elapsed_ms)
    secs="$((ms / 1000)).$(((ms % 1000) / 100))"
    echo
}
