# shellcheck shell=bash
# ioctl-tests/run: exit statuses, messages, --help and the command line.
# Sourced by ioctl-tests/run; sets the option globals the other files read.

# Exit statuses of the runner itself (a guest result is passed through as is).
EXIT_USAGE=2
EXIT_NOT_KILLED=3
EXIT_TIMEOUT=124
EXIT_HARNESS=125

usage() {
    cat <<'EOF'
Usage: ioctl-tests/run [OPTIONS] [FILTER] [-- TEST-ARGS...]

Builds dmthin's real-kernel tests (ioctl-tests/tests/*.rs) and the dmthin CLI,
boots them in a QEMU VM running Debian's cloud kernel (which has
device-mapper), runs every test binary with --test-threads=1 and exits with
the result. FILTER (and TEST-ARGS) are passed to every test binary, exactly
like `cargo test FILTER -- TEST-ARGS`.

What to run (default: the whole kernel test suite):
  -t, --test NAME      run only test binary NAME (tests/NAME.rs); repeatable,
                       or comma-separated
  -e, --exec CMD       run CMD with bash inside the guest instead of the suite;
                       its exit status becomes the runner's
  -s, --script FILE    run FILE inside the guest (by its #! line, else bash);
                       positional arguments are passed to it
  -l, --list           list the test binaries and exit

Guest:
  --udev               start systemd-udevd in the guest first (dm cookie/udev
                       sync path); the tests see DMTHIN_TEST_UDEV=1
  --scratch IMG        attach IMG as a persistent raw virtio disk (/dev/vda,
                       then /dev/vdb, ... when repeated; the tests see
                       DMTHIN_SCRATCH=/dev/vda). Created sparse if missing.
  --scratch-size SIZE  size for scratch images created by --scratch (2G)
  --env NAME=VALUE     export NAME=VALUE in the guest; repeatable
  --mem MB             guest memory (1024; more memory boots slower under TCG)
  --smp N              guest vCPUs (1)
  --kvm                use KVM instead of TCG (does NOT work nested on the
                       dev/CI machines; only where KVM really works)
  --kernel SUITE       boot the cloud kernel of Debian SUITE: bookworm (6.1),
                       bullseye (5.10), trixie (6.12). This host's own suite
                       boots the installed kernel; another suite's kernel is
                       downloaded once (private apt state, the host's mirror)
                       and cached under ioctl-tests/.cache/kernels

Power cut (the runner SIGKILLs qemu, like pulling the plug):
  --kill-on MARKER     kill the VM as soon as MARKER appears on the console
  --kill-delay SECS    with --kill-on: kill SECS seconds after MARKER appeared
  --kill-after SECS    kill the VM SECS seconds after qemu started (boot time
                       varies a lot under load: prefer --kill-on/--kill-delay)
                       SECS may have decimals (2.5).
                       In either mode the runner exits 0 when it killed the VM
                       and 3 when the guest finished before that.

Runner:
  --timeout SECS       hard timeout for the whole VM run (600); the guest is
                       killed and the runner exits 124
  --log FILE           console log file (default ioctl-tests/.cache/logs/*.log,
                       latest one linked as ioctl-tests/.cache/logs/latest.log)
  --keep-debug         keep DWARF debug info in the guest binaries (bigger
                       initramfs, line numbers in backtraces)
  --rebuild-base       repack the cached base initramfs even if it is current
  --install-deps       only install the missing Debian packages (incl. udev,
                       protoc, Go, containerd and runc for the snapshotter)
  --host               run on this host instead of a VM (needs root and
                       /dev/mapper/control); only when asked explicitly
  -h, --help           this help

Environment:
  DMTHIN_CARGO_ARGS    extra cargo arguments for both builds,
                       e.g. "--features dmthin/failpoints" or "--release"
  CARGO_TARGET_DIR     respected as usual
  DMTHIN_VM_MUSL=0     build for the host (glibc) even if the musl target is
                       installed; libraries are copied into the guest
  DMTHIN_VM_KERNEL     kernel version to boot (default: newest *-cloud-amd64
                       under /boot that has dm-thin-pool)
  DMTHIN_VM_CACHE      cache directory (default ioctl-tests/.cache)

Exit status: 0 all tests passed (or the --exec/--script command's status);
1 a test binary failed; 2 usage; 3 --kill-on/--kill-after but the guest
finished first; 124 timeout; 125 harness failure (kernel panic or oops, no
result line from the guest, qemu failed); cargo's status if a build failed.
EOF
}

say() { printf 'dmthin-vm: %s\n' "$*" >&2; }
die() {
    local rc=$EXIT_HARNESS
    if [[ $1 =~ ^[0-9]+$ ]]; then
        rc=$1
        shift
    fi
    printf 'dmthin-vm: error: %s\n' "$*" >&2
    exit "$rc"
}

timeout_s=${DMTHIN_VM_TIMEOUT:-600}
mem_mb=${DMTHIN_VM_MEM:-1024}
smp=1
use_kvm=0
udev=0
host=0
list_only=0
keep_debug=0
rebuild_base=0
install_only=0
mode=suite
exec_cmd=
script_file=
scratch_size=2G
kill_on=
kill_after=
kill_delay=
kernel_suite=
log_file=
scratch_imgs=()
selected=()
test_args=()
guest_env=()

need_arg() { [[ $# -ge 2 ]] || die "$EXIT_USAGE" "$1 needs an argument (see --help)"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_secs() { [[ $1 =~ ^[0-9]+(\.[0-9]{1,3})?$ ]]; }
secs_to_ms() { # "2.5" -> 2500
    local int=${1%%.*} frac=
    [[ $1 == *.* ]] && frac=${1#*.}
    frac=${frac}000
    echo $((10#$int * 1000 + 10#${frac:0:3}))
}

parse_args() {
    local names img
    while [[ $# -gt 0 ]]; do
        case $1 in
            -h | --help)
                usage
                exit 0
                ;;
            -t | --test)
                need_arg "$@"
                IFS=, read -ra names <<<"$2"
                selected+=("${names[@]}")
                shift 2
                ;;
            -e | --exec)
                need_arg "$@"
                mode="exec"
                exec_cmd=$2
                shift 2
                ;;
            -s | --script)
                need_arg "$@"
                mode=script
                script_file=$2
                shift 2
                ;;
            -l | --list)
                list_only=1
                shift
                ;;
            --udev)
                udev=1
                shift
                ;;
            --scratch)
                need_arg "$@"
                scratch_imgs+=("$2")
                shift 2
                ;;
            --scratch-size)
                need_arg "$@"
                scratch_size=$2
                shift 2
                ;;
            --env)
                need_arg "$@"
                [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "$EXIT_USAGE" "--env wants NAME=VALUE, got '$2'"
                guest_env+=("$2")
                shift 2
                ;;
            --mem)
                need_arg "$@"
                is_uint "$2" || die "$EXIT_USAGE" "--mem wants megabytes"
                mem_mb=$2
                shift 2
                ;;
            --smp)
                need_arg "$@"
                is_uint "$2" || die "$EXIT_USAGE" "--smp wants a number"
                smp=$2
                shift 2
                ;;
            --kvm)
                use_kvm=1
                shift
                ;;
            --kernel)
                need_arg "$@"
                [[ $2 =~ ^[a-z][a-z0-9-]*$ ]] || die "$EXIT_USAGE" "--kernel wants a Debian suite name (bullseye, bookworm, trixie)"
                kernel_suite=$2
                shift 2
                ;;
            --kill-on)
                need_arg "$@"
                [[ -n $2 ]] || die "$EXIT_USAGE" "--kill-on wants a non-empty marker"
                kill_on=$2
                shift 2
                ;;
            --kill-after)
                need_arg "$@"
                is_secs "$2" || die "$EXIT_USAGE" "--kill-after wants seconds"
                kill_after=$2
                shift 2
                ;;
            --kill-delay)
                need_arg "$@"
                is_secs "$2" || die "$EXIT_USAGE" "--kill-delay wants seconds"
                kill_delay=$2
                shift 2
                ;;
            --timeout)
                need_arg "$@"
                is_uint "$2" || die "$EXIT_USAGE" "--timeout wants seconds"
                timeout_s=$2
                shift 2
                ;;
            --log)
                need_arg "$@"
                log_file=$2
                shift 2
                ;;
            --keep-debug)
                keep_debug=1
                shift
                ;;
            --rebuild-base)
                rebuild_base=1
                shift
                ;;
            --install-deps)
                install_only=1
                shift
                ;;
            --host)
                host=1
                shift
                ;;
            --)
                shift
                test_args+=("$@")
                break
                ;;
            -*)
                die "$EXIT_USAGE" "unknown option '$1' (see --help)"
                ;;
            *)
                test_args+=("$1")
                shift
                ;;
        esac
    done

    if [[ -n $kill_delay && -z $kill_on ]]; then
        die "$EXIT_USAGE" "--kill-delay needs --kill-on MARKER"
    fi
    if [[ $mode == script ]]; then
        [[ -f $script_file ]] || die "$EXIT_USAGE" "--script: no such file: $script_file"
        script_file=$(readlink -f -- "$script_file")
    fi
    if [[ $mode != suite && ${#selected[@]} -gt 0 ]]; then
        die "$EXIT_USAGE" "--test selects test binaries; it makes no sense with --exec/--script"
    fi
    if ((host)); then
        if [[ ${#scratch_imgs[@]} -gt 0 || -n $kill_on || -n $kill_after || $use_kvm == 1 ]]; then
            die "$EXIT_USAGE" "--scratch, --kill-on, --kill-after and --kvm are VM options; not with --host"
        fi
        [[ -z $kernel_suite ]] || die "$EXIT_USAGE" "--kernel boots a VM; not with --host"
    fi
    if [[ -n $kernel_suite && -n ${DMTHIN_VM_KERNEL:-} ]]; then
        die "$EXIT_USAGE" "--kernel and DMTHIN_VM_KERNEL both choose the kernel; give one"
    fi
    for img in "${scratch_imgs[@]}"; do
        [[ $img != *,* ]] || die "$EXIT_USAGE" "--scratch: image path must not contain a comma: $img"
    done
}
