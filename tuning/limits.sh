#!/usr/bin/env bash
# Per-process limits for uringapi: open files (RLIMIT_NOFILE) and locked memory
# (RLIMIT_MEMLOCK, which io_uring charges). Three places, because each covers a
# different way the server gets started:
#   1. now: the shell that ran this script (or --pid PID and its children), via prlimit
#   2. new login sessions: /etc/security/limits.d/90-uringapi.conf (pam_limits)
#   3. systemd services: a unit drop-in, printed as a suggestion (systemd ignores 2.)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

CONF=/etc/security/limits.d/90-uringapi.conf
DROPIN=/etc/systemd/system/uringapi.service.d/limits.conf

# Open files per process. The front end holds one descriptor per connection, so
# this is the ceiling on concurrent (keep-alive) connections, plus listeners,
# eventfds and memfds. When hit, accept() fails with EMFILE: new clients wait in
# the listen queue until a connection closes. 1048576 is the default ceiling of
# fs.nr_open, which caps this limit; above it needs fs.nr_open raised first.
NOFILE=1048576

# Locked memory. Before Linux 5.12 every io_uring's SQ/CQ rings are charged here,
# and on every kernel so are registered (fixed) buffers; the old default of 64 KiB
# (8 MiB on newer distributions) runs out after a few rings per thread, and
# io_uring_setup() fails with ENOMEM, which makes uringapi fall back to epoll.
# Unlimited, because what the server pins is bounded by its own configuration;
# bound the service's memory with systemd MemoryMax= instead.
MEMLOCK=unlimited

TARGET_PID=""
CAN_RAISE_HARD=1
if ! has_cap 24; then CAN_RAISE_HARD=0; fi   # CAP_SYS_RESOURCE
DOMAINS=("*" root)   # pam_limits' "*" does not cover root, so root gets its own lines

usage() {
    cat <<EOF
usage: $PROG [--check | --dry-run | --apply] [--strict] [--pid PID] [--user USER]

Open-file and locked-memory limits for uringapi (nofile $NOFILE, memlock $MEMLOCK).

  --check      show current vs recommended limits (default); changes nothing
  --strict     with --check: exit 1 when a limit or $CONF is off
  --dry-run    print the exact commands --apply would run; changes nothing
  --apply      raise the limits of the running shell now (prlimit), write
               $CONF for new logins; needs root
  --pid PID    act on this process and its children (e.g. a running uringapi
               front end and its workers) instead of the shell that ran this script
  --user USER  write the limits.d lines for USER only (default: every user and root)
  -h, --help   this text

systemd services ignore limits.d: $PROG prints the unit drop-in to add.
EOF
}

# limit PID NAME: "soft hard" from /proc/PID/limits, NAME e.g. "Max open files".
limit() {
    awk -v name="$2" 'index($0, name) == 1 {
        rest = substr($0, length(name) + 1); split(rest, f, " "); print f[1], f[2]; found = 1
    } END { exit !found }' "/proc/$1/limits" 2>/dev/null
}

# at_least VALUE WANT: both numbers or "unlimited".
at_least() {
    [[ $1 == unlimited ]] && return 0
    [[ $2 == unlimited ]] && return 1
    is_uint "$1" && (($1 >= $2))
}

# better VALUE WANT: the larger of the two (never lower a limit).
better() {
    if at_least "$1" "$2"; then printf '%s' "$1"; else printf '%s' "$2"; fi
}

conf_content() {
    local d
    printf '# Written by uringapi tuning/limits.sh; the reasons are in tuning/README.md.\n'
    printf '# Read by pam_limits for new login sessions (ssh, login, su); systemd services\n'
    printf '# ignore this file and need LimitNOFILE=/LimitMEMLOCK= in their unit.\n'
    printf '# <domain> <type> <item> <value>\n'
    for d in "${DOMAINS[@]}"; do
        printf '%-8s soft nofile  %s\n%-8s hard nofile  %s\n' "$d" "$NOFILE" "$d" "$NOFILE"
        printf '%-8s soft memlock %s\n%-8s hard memlock %s\n' "$d" "$MEMLOCK" "$d" "$MEMLOCK"
    done
}

dropin_content() {
    printf '[Service]\n'
    printf '# open files: one per connection (see tuning/limits.sh)\n'
    printf 'LimitNOFILE=%s\n' "$NOFILE"
    printf '# locked memory: io_uring rings (before Linux 5.12) and registered buffers\n'
    printf 'LimitMEMLOCK=%s\n' "${MEMLOCK/unlimited/infinity}"
}

show_dropin() {
    local line
    say ""
    say "systemd: services do not read limits.d. For a uringapi unit add this drop-in"
    say "as $DROPIN (adapt the unit name),"
    say "then run 'systemctl daemon-reload' and restart the service:"
    while IFS= read -r line; do say "    $line"; done < <(dropin_content)
}

describe() {  # PID -> "1234 (bash)"
    printf '%s (%s)' "$1" "$(proc_comm "$1")"
}

show_limits() {  # PID: one table row per limit; counts what is off
    local pid=$1 cur soft hard status
    cur=$(limit "$pid" "Max open files") || { say "  $(describe "$pid"): gone"; return; }
    read -r soft hard <<<"$cur"
    status=ok
    if ! at_least "$soft" "$NOFILE" || ! at_least "$hard" "$NOFILE"; then status=change; OFF=$((OFF + 1)); fi
    say "$(printf '%-22s %-10s %-12s %-12s %-12s %s' "$(describe "$pid")" nofile "$soft" "$hard" "$NOFILE" "$status")"
    cur=$(limit "$pid" "Max locked memory") || return 0
    read -r soft hard <<<"$cur"
    status=ok
    if ! at_least "$soft" "$MEMLOCK" || ! at_least "$hard" "$MEMLOCK"; then status=change; OFF=$((OFF + 1)); fi
    say "$(printf '%-22s %-10s %-12s %-12s %-12s %s' "" memlock "$(human_bytes "$soft")" "$(human_bytes "$hard")" "$MEMLOCK" "$status")"
}

targets() {  # the processes whose limits we look at / raise
    if [[ -n $TARGET_PID ]]; then
        printf '%s\n' "$TARGET_PID"
        children_of "$TARGET_PID"
    else
        invoking_shell
        printf '\n'
    fi
}

check() {
    local pid nr_open
    section "limits (current vs recommended)"
    if [[ -n $TARGET_PID ]]; then
        say "process $(describe "$TARGET_PID") and its children:"
    else
        say "the shell that ran this script:"
    fi
    say "$(printf '%-22s %-10s %-12s %-12s %-12s %s' PROCESS LIMIT SOFT HARD RECOMMENDED STATUS)"
    while IFS= read -r pid; do show_limits "$pid"; done < <(targets)
    if ! kernel_at_least 5 12; then
        say "note: Linux $(kernel_release) charges io_uring rings to memlock; a low limit disables io_uring"
    fi

    say ""
    if nr_open=$(sysctl_get fs.nr_open); then
        if is_uint "$nr_open" && ((nr_open < NOFILE)); then
            say "fs.nr_open = $nr_open caps nofile below $NOFILE: raise it first (sysctl -w fs.nr_open=$NOFILE)"
            OFF=$((OFF + 1))
        else
            say "fs.nr_open = $nr_open (ceiling for nofile): ok"
        fi
    fi
    if [[ ! -e $CONF ]]; then
        say "persistent: $CONF missing: new logins get the distribution defaults"
        OFF=$((OFF + 1))
    elif [[ $(cat "$CONF") != "$(conf_content)" ]]; then
        say "persistent: $CONF differs from what $PROG would write (--dry-run shows it)"
        OFF=$((OFF + 1))
    else
        say "persistent: $CONF up to date"
    fi
    if ! grep -rqs pam_limits /etc/pam.d; then
        say "note: no file in /etc/pam.d loads pam_limits.so, so limits.d has no effect on logins here"
    fi
    show_dropin
}

# lower_of A B: the smaller of two limits (numbers or "unlimited").
lower_of() {
    if at_least "$1" "$2"; then printf '%s' "$2"; else printf '%s' "$1"; fi
}

# new_limit SOFT HARD WANT: "soft:hard" to set. Never lowers a limit. Without
# CAP_SYS_RESOURCE a hard limit cannot be raised, so the soft one goes up to it.
new_limit() {
    local soft=$1 hard=$2 want=$3
    if ((CAN_RAISE_HARD)); then
        printf '%s:%s' "$(better "$soft" "$want")" "$(better "$hard" "$want")"
    else
        printf '%s:%s' "$(better "$soft" "$(lower_of "$want" "$hard")")" "$hard"
    fi
}

plan() {
    local pid cur soft hard nofile memlock
    if [[ $MODE == dry-run ]]; then
        say "$PROG --dry-run: nothing is changed; --apply would run these commands."
    fi
    if ((!CAN_RAISE_HARD)); then
        say "warning: this process lacks CAP_SYS_RESOURCE (a container?): hard limits cannot"
        say "         be raised here, so only soft limits go up, to the current hard limits"
    fi
    while IFS= read -r pid; do
        cur=$(limit "$pid" "Max open files") || { say "$(describe "$pid"): gone; skipped"; continue; }
        read -r soft hard <<<"$cur"
        nofile=$(new_limit "$soft" "$hard" "$NOFILE")
        cur=$(limit "$pid" "Max locked memory") || cur="0 0"
        read -r soft hard <<<"$cur"
        memlock=$(new_limit "$soft" "$hard" "$MEMLOCK")
        if [[ $nofile == "$(limit "$pid" "Max open files" | tr ' ' :)" && $memlock == "$soft:$hard" ]]; then
            say "$(describe "$pid"): nofile $nofile, memlock $memlock: nothing to raise (recommended $NOFILE, $MEMLOCK)"
            continue
        fi
        say "$(describe "$pid"): nofile -> $nofile (recommended $NOFILE), memlock -> $memlock (recommended $MEMLOCK)"
        run prlimit --pid "$pid" "--nofile=$nofile" "--memlock=$memlock"
    done < <(targets)
    say "persistent limits for new login sessions:"
    run mkdir -p "${CONF%/*}"
    write_file "$CONF" "$(conf_content)"$'\n'
    show_dropin
}

while (($#)); do
    if parse_common "$1"; then shift; continue; fi
    case $1 in
        --pid)
            need_value "$@"
            check_pid "$2"
            TARGET_PID=$2
            shift 2
            ;;
        --user)
            need_value "$@"
            [[ $2 =~ ^[A-Za-z0-9_.@%][A-Za-z0-9_.@-]*$ ]] || usage_error "'$2' is not a user or @group name"
            DOMAINS=("$2")
            shift 2
            ;;
        -*) usage_error "unknown option '$1'" ;;
        *) usage_error "unexpected argument '$1'" ;;
    esac
done
if [[ $MODE == help ]]; then usage; exit 0; fi
finish_parse

case $MODE in
    check) check ;;
    *) plan ;;
esac
finish
