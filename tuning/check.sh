#!/usr/bin/env bash
# One report for the whole host: can this process use io_uring (kernel, the
# io_uring_disabled switch, seccomp, memlock, and a real io_uring_setup probe),
# then sysctl.sh, limits.sh and affinity.sh in --check mode.
# --dry-run and --apply run those three scripts in the recommended order.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

PASS=()   # options handed to the other scripts

usage() {
    cat <<EOF
usage: $PROG [--check | --dry-run | --apply] [--strict] [--pid PID]

Is io_uring usable here, and is the host tuned for uringapi?

  --check     report io_uring status and every setting of sysctl.sh, limits.sh
              and affinity.sh, current vs recommended (default); changes nothing
  --strict    with --check: exit 1 when io_uring is unusable or a setting is off
  --dry-run   print what sysctl.sh, limits.sh and affinity.sh would run, in that
              order; changes nothing
  --apply     run sysctl.sh, limits.sh and affinity.sh with --apply; needs root
  --pid PID   the running uringapi front end (for limits.sh and affinity.sh)
  -h, --help  this text
EOF
}

# ---- io_uring -------------------------------------------------------------------

# The probe: io_uring_setup(8 entries, zeroed params) through ctypes, so it runs
# with exactly this process's kernel, seccomp filter, limits and credentials.
# Prints "ok" or the errno name and number.
PROBE='
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
params = ctypes.create_string_buffer(120)  # struct io_uring_params, all zero
fd = libc.syscall(ctypes.c_long(425), ctypes.c_uint(8), params)  # __NR_io_uring_setup
if fd >= 0:
    os.close(fd)
    print("ok")
else:
    e = ctypes.get_errno()
    print(errno.errorcode.get(e, "errno"), e)
'

iou_row() { say "$(printf '%-20s %-22s %s' "$1" "$2" "$3")"; }

io_uring_report() {
    local rel problems=() warn=() disabled group seccomp filters memlock probe=""
    section "io_uring"

    # Kernel: io_uring appeared in 5.1; uringapi (monoio) needs 5.11+. 6.x adds
    # multishot accept/recv, provided-buffer rings and SEND_ZC, and since 5.12
    # ring memory is charged to the memory cgroup instead of RLIMIT_MEMLOCK.
    rel=$(kernel_release)
    if ! kernel_at_least 5 1; then
        iou_row kernel "$rel" "no io_uring before 5.1"
        problems+=("kernel $rel has no io_uring")
    elif ! kernel_at_least 5 11; then
        iou_row kernel "$rel" "too old: uringapi needs 5.11+, 6.x recommended"
        problems+=("kernel $rel is older than 5.11")
    elif ! kernel_at_least 6 0; then
        iou_row kernel "$rel" "ok (5.11+); 6.x recommended"
    else
        iou_row kernel "$rel" "ok (6.x)"
    fi

    # kernel.io_uring_disabled (6.6+): 0 all may create rings, 1 only members of
    # kernel.io_uring_group and CAP_SYS_ADMIN, 2 nobody.
    if disabled=$(sysctl_get kernel.io_uring_disabled); then
        case $disabled in
            0) iou_row io_uring_disabled 0 "ok (every process may create rings)" ;;
            1)
                group=$(sysctl_get kernel.io_uring_group || echo -1)
                if [[ $EUID -eq 0 ]] || [[ " $(id -G) " == *" $group "* ]]; then
                    iou_row io_uring_disabled 1 "restricted to group $group and CAP_SYS_ADMIN; this user may"
                    warn+=("kernel.io_uring_disabled=1: the service user must be in group $group")
                else
                    iou_row io_uring_disabled 1 "restricted to group $group and CAP_SYS_ADMIN; this user may not"
                    problems+=("kernel.io_uring_disabled=1 and this user is not in group $group")
                fi
                ;;
            *)
                iou_row io_uring_disabled "$disabled" "io_uring switched off for every process"
                problems+=("kernel.io_uring_disabled=$disabled")
                ;;
        esac
    else
        iou_row io_uring_disabled "not available" "no such switch before Linux 6.6: nothing to turn off"
    fi

    # Seccomp of this very process (children inherit it): 0 none, 1 strict,
    # 2 filter. Docker/containerd default profiles filter out io_uring_setup.
    seccomp=$(awk '$1 == "Seccomp:" { print $2 }' /proc/self/status 2>/dev/null || true)
    filters=$(awk '$1 == "Seccomp_filters:" { print $2 }' /proc/self/status 2>/dev/null || true)
    case ${seccomp:-?} in
        0) iou_row seccomp "0 (none)" "ok" ;;
        1) iou_row seccomp "1 (strict)" "only read/write/exit allowed"; problems+=("seccomp strict mode") ;;
        2)
            iou_row seccomp "2 (filter, ${filters:-?} filters)" "a filter may block io_uring_setup (container runtime?)"
            warn+=("a seccomp filter is active; containers need a profile that allows io_uring_setup/enter/register")
            ;;
        *) iou_row seccomp "?" "not reported by /proc/self/status" ;;
    esac

    # Locked memory: before 5.12 every ring is charged here.
    memlock=$(ulimit -l)
    if [[ $memlock != unlimited ]]; then memlock=$((memlock * 1024)); fi
    if kernel_at_least 5 12; then
        iou_row memlock "$(human_bytes "$memlock")" "ok for rings (5.12+ charges them to the memory cgroup)"
    elif [[ $memlock == unlimited ]] || ((memlock >= 67108864)); then
        iou_row memlock "$(human_bytes "$memlock")" "ok"
    else
        iou_row memlock "$(human_bytes "$memlock")" "low for kernel $rel, which charges rings here: see limits.sh"
        warn+=("memlock $(human_bytes "$memlock") may cap the number of rings (ENOMEM)")
    fi

    # The probe settles it when it can run.
    if ! command -v python3 >/dev/null 2>&1; then
        iou_row probe "skipped" "python3 not found"
    elif [[ ! $(uname -m) =~ ^(x86_64|i[3-6]86|aarch64|arm.*|riscv64|ppc64.*|s390x|loongarch64)$ ]]; then
        iou_row probe "skipped" "io_uring_setup is not syscall 425 on $(uname -m)"
    elif ! probe=$(python3 -c "$PROBE" 2>/dev/null) || [[ -z $probe ]]; then
        iou_row probe "skipped" "python3 could not run the ctypes probe"
        probe=""
    elif [[ $probe == ok ]]; then
        iou_row probe "io_uring_setup: ok" "a ring was created and closed"
    else
        local name=${probe% *}
        case $name in
            ENOSYS) iou_row probe "io_uring_setup: $probe" "no io_uring in this kernel, or a seccomp filter hides it" ;;
            EPERM) iou_row probe "io_uring_setup: $probe" "refused: kernel.io_uring_disabled/io_uring_group or seccomp" ;;
            ENOMEM) iou_row probe "io_uring_setup: $probe" "memlock limit too low (kernel < 5.12) or out of memory" ;;
            *) iou_row probe "io_uring_setup: $probe" "refused" ;;
        esac
        problems+=("io_uring_setup failed with $probe")
    fi

    say ""
    local w
    for w in "${warn[@]}"; do say "warning: $w"; done
    if ((${#problems[@]})); then
        say "io_uring: NOT usable: $(IFS=';'; printf '%s' "${problems[*]}" | sed 's/;/; /g')"
        say "  uringapi still runs: it falls back to epoll and logs one warning naming the cause"
        OFF=$((OFF + 1))
    elif [[ $probe == ok ]]; then
        say "io_uring: usable"
    else
        say "io_uring: probably usable (no probe ran; nothing above rules it out)"
    fi
}

# ---- the other scripts -------------------------------------------------------------

# sub SCRIPT: run it in our mode; a non-zero exit counts against ours.
sub() {
    local rc=0 args=("--$MODE")
    # --strict always: its exit code tells us whether the script found anything off
    if [[ $MODE == check ]]; then args+=(--strict); fi
    bash "$HERE/$1" "${args[@]}" "${PASS[@]}" || rc=$?
    if ((rc != 0)); then
        if [[ $MODE == apply ]]; then FAILED=$((FAILED + 1)); else OFF=$((OFF + 1)); fi
        if ((rc == 2)); then err "$1 stopped with a usage error"; FAILED=$((FAILED + 1)); fi
    fi
}

while (($#)); do
    if parse_common "$1"; then shift; continue; fi
    case $1 in
        --pid)
            need_value "$@"
            check_pid "$2"
            PASS+=(--pid "$2")
            shift 2
            ;;
        -*) usage_error "unknown option '$1'" ;;
        *) usage_error "unexpected argument '$1'" ;;
    esac
done
if [[ $MODE == help ]]; then usage; exit 0; fi
finish_parse

case $MODE in
    check)
        io_uring_report
        sub sysctl.sh
        sub limits.sh
        sub affinity.sh
        say ""
        if ((OFF)); then
            say "summary: something is off (see above); '$PROG --dry-run' shows the fixes"
        else
            say "summary: io_uring usable and every setting as recommended"
        fi
        ;;
    dry-run | apply)
        if [[ $MODE == dry-run ]]; then
            say "$PROG --dry-run: nothing is changed. In order: sysctl.sh, limits.sh, affinity.sh."
        fi
        io_uring_report
        OFF=0   # the report is information here, not a failure
        sub sysctl.sh
        sub limits.sh
        sub affinity.sh
        ;;
esac
# Sub-scripts report their own failed commands; exit 1 if any did.
if [[ $MODE == apply && $FAILED -gt 0 ]]; then
    err "$FAILED script(s) did not finish cleanly" "see the messages above"
    exit 1
fi
finish
