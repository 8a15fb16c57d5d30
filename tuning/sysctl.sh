#!/usr/bin/env bash
# Kernel settings for a bare-metal uringapi host: accept queues, packet backlog,
# ephemeral ports, connection teardown, file handles, listener hand-over, memory
# overcommit. Live values via `sysctl -w`, persistent ones in
# /etc/sysctl.d/90-uringapi.conf. See tuning/README.md for the whole kit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

CONF=/etc/sysctl.d/90-uringapi.conf

usage() {
    cat <<EOF
usage: $PROG [--check | --dry-run | --apply] [--strict]

Kernel network and memory settings for a uringapi host.

  --check    show current vs recommended values (default); changes nothing
  --strict   with --check: exit 1 when a value or $CONF is off
  --dry-run  print the exact commands --apply would run; changes nothing
  --apply    set the values now (sysctl -w) and write $CONF
             so they survive a reboot; needs root
  -h, --help this text

A value already better than the recommendation (e.g. a larger fs.file-max) is
kept, never lowered. Keys this kernel lacks are reported as "not available".
EOF
}

# ---- the recommendation ---------------------------------------------------------
# rec KEY KIND VALUE SINCE SUMMARY
#   KIND  min: at least VALUE   max: at most VALUE   eq: exactly VALUE
#         range: a port range that covers VALUE
#   SINCE the first kernel with the key when it is newer than 4.x, else "-";
#         such keys are written as "-key = value" in the persistent file, so
#         loading it on an older kernel skips them quietly.
KEYS=() KINDS=() VALUES=() SINCES=() SUMMARIES=()
rec() {
    KEYS+=("$1") KINDS+=("$2") VALUES+=("$3") SINCES+=("$4") SUMMARIES+=("$5")
}

# Cap on any listen() backlog: the kernel silently truncates uringapi's --backlog
# to it. Each front-end thread has its own SO_REUSEPORT listener, so this is per
# thread. When a queue is full, new SYNs are dropped and clients retry after 1 s,
# then 3 s: a connection burst turns into second-long connect latency.
rec net.core.somaxconn min 65535 - "listen() backlog cap"

# Half-open (SYN_RECV) connections per listener. When full, the kernel answers
# with SYN cookies (no TCP options beyond what timestamps carry) or, with
# syncookies off, drops the SYN. 65535 covers a burst of many thousands of
# clients reconnecting at once after a restart or a load-balancer failover.
rec net.ipv4.tcp_max_syn_backlog min 65535 - "half-open connections per listener"

# Packets a CPU queues between the NIC interrupt and the protocol stack. The
# default 1000 overflows in short bursts at 10 GbE+; drops show in the second
# column of /proc/net/softnet_stat and look like random retransmits to clients.
rec net.core.netdev_max_backlog min 16384 - "per-CPU packet queue before the stack"

# Ephemeral ports for connections this host opens (to databases, upstreams, or a
# load generator on the same box). Inbound HTTP does not use them. When exhausted,
# connect() fails with EADDRNOTAVAIL. Starting at 10240 leaves the low ports free
# for services bound later; keep the bounds of different parity (kernel advice).
rec net.ipv4.ip_local_port_range range "10240 65535" - "ephemeral ports for outbound connects"

# Reuse a TIME_WAIT socket for a new outbound connection when TCP timestamps prove
# it safe. The default 2 does this for loopback only; without it, a busy client
# side runs out of ports (see above) while 60 s of TIME_WAIT drain.
# Affects outbound connects only; inbound keep-alive traffic is unchanged.
rec net.ipv4.tcp_tw_reuse eq 1 - "reuse TIME_WAIT for outbound connects"

# How long an orphaned connection (we closed, peer vanished) waits in FIN_WAIT_2
# for the peer's FIN. With many keep-alive clients that disappear (mobile, NAT
# timeouts), 60 s of orphans pile up, each holding socket memory; past
# net.ipv4.tcp_max_orphans the kernel resets them. This is not TIME_WAIT (fixed 60 s).
rec net.ipv4.tcp_fin_timeout max 15 - "FIN_WAIT_2 timeout for orphaned sockets"

# System-wide open files. Every connection is a file descriptor, plus eventfds,
# memfds and the workers' own files. When hit, accept() and open() fail with
# ENFILE for every process on the host ("VFS: file-max limit reached").
# 2M covers a million connections with room to spare; per-process limits are
# RLIMIT_NOFILE (tuning/limits.sh).
rec fs.file-max min 2097152 - "open files, whole system"

# SO_REUSEPORT hand-over: when one listener closes (a front-end thread stops, a
# rolling restart), connections already queued on it are moved to another
# listener of the group instead of being reset. Without it, every restart resets
# the clients caught in that thread's accept queue. Linux 5.14+.
rec net.ipv4.tcp_migrate_req eq 1 5.14 "move queued connections off a closing listener"

# Heuristic overcommit (0) may refuse a large fork or mmap that would in fact
# never be touched: respawning a worker from a big parent, huge lazily-filled
# arenas (Python, numpy, models preloaded before fork) then fail with ENOMEM.
# Strict mode (2) makes that common. 1 never refuses; a real shortage is then met
# by the OOM killer, so bound the service with systemd MemoryMax= instead.
rec vm.overcommit_memory eq 1 - "memory overcommit policy"

# ---- logic -------------------------------------------------------------------------

shown_rec() {  # human form of a recommendation
    case $1 in
        min) printf '>= %s' "$2" ;;
        max) printf '<= %s' "$2" ;;
        range) printf '%s or wider' "$2" ;;
        *) printf '%s' "$2" ;;
    esac
}

# is_ok KIND CURRENT VALUE
is_ok() {
    local kind=$1 cur=$2 want=$3 clo chi wlo whi
    case $kind in
        min) is_uint "$cur" && ((cur >= want)) ;;
        max) is_uint "$cur" && ((cur <= want)) ;;
        eq) [[ $cur == "$want" ]] ;;
        range)
            read -r clo chi <<<"$cur"
            read -r wlo whi <<<"$want"
            is_uint "${clo:-x}" && is_uint "${chi:-x}" && ((clo <= wlo && chi >= whi))
            ;;
    esac
}

# target KIND CURRENT VALUE: what to set: the recommendation, or the current value
# where it is already better (never lower a larger limit).
target() {
    local kind=$1 cur=$2 want=$3 clo chi wlo whi
    if is_ok "$kind" "$cur" "$want"; then printf '%s' "$cur"; return; fi
    if [[ $kind == range ]]; then
        read -r clo chi <<<"$cur"
        read -r wlo whi <<<"$want"
        if is_uint "${clo:-x}" && is_uint "${chi:-x}"; then
            printf '%s %s' $((clo < wlo ? clo : wlo)) $((chi > whi ? chi : whi))
            return
        fi
    fi
    printf '%s' "$want"
}

# The persistent file: one line per key, with the value --apply would leave live.
conf_content() {
    local i key cur val line
    printf '# Written by uringapi tuning/sysctl.sh; the reasons are in tuning/README.md.\n'
    printf '# Values already better than the recommendation on this host were kept.\n'
    printf "# A leading '-' makes sysctl skip the key quietly on kernels without it.\n"
    for i in "${!KEYS[@]}"; do
        key=${KEYS[i]}
        line="$key = "
        if cur=$(sysctl_get "$key"); then
            val=$(target "${KINDS[i]}" "$cur" "${VALUES[i]}")
        else
            val=${VALUES[i]}
        fi
        if [[ ${SINCES[i]} != - ]] || ! sysctl_get "$key" >/dev/null; then line="-$line"; fi
        printf '\n# %s\n%s%s\n' "${SUMMARIES[i]}" "$line" "$val"
    done
}

# conf_value FILE KEY: the value FILE sets for KEY (the last one wins), if any.
conf_value() {
    local line k v found=0 value="" words=()
    [[ -r $1 ]] || return 1
    while IFS= read -r line || [[ -n $line ]]; do
        read -r line <<<"$line"                 # trim
        [[ $line == *=* && $line != [\#\;]* ]] || continue
        read -r k <<<"${line%%=*}"
        [[ ${k#-} == "$2" ]] || continue
        read -r -a words <<<"${line#*=}"        # trim, squeeze inner blanks
        v="${words[*]}"
        found=1 value=$v
    done <"$1"
    ((found)) && printf '%s' "$value"
}

# Files systemd-sysctl / `sysctl --system` read after ours, which win over it.
later_files() {
    local dir f base mine=${CONF##*/}
    for dir in /etc/sysctl.d /run/sysctl.d /usr/local/lib/sysctl.d /usr/lib/sysctl.d /lib/sysctl.d; do
        for f in "$dir"/*.conf; do
            [[ -e $f ]] || continue
            base=${f##*/}
            if [[ $base > $mine ]]; then printf '%s\n' "$f"; fi
        done
    done
    if [[ -e /etc/sysctl.conf ]]; then printf '%s\n' /etc/sysctl.conf; fi
}

check() {
    local i key cur want kind status weak=() missing=() v f
    section "sysctl (current vs recommended)"
    say "$(printf '%-30s %-15s %-22s %-14s %s' KEY CURRENT RECOMMENDED STATUS WHAT)"
    for i in "${!KEYS[@]}"; do
        key=${KEYS[i]} kind=${KINDS[i]} want=${VALUES[i]}
        if cur=$(sysctl_get "$key"); then
            if is_ok "$kind" "$cur" "$want"; then status=ok
            else status=change; OFF=$((OFF + 1)); fi
        else
            cur="-" status="not available"
            if [[ ${SINCES[i]} != - ]]; then status+=" (Linux ${SINCES[i]}+)"; fi
        fi
        say "$(printf '%-30s %-15s %-22s %-14s %s' "$key" "$cur" "$(shown_rec "$kind" "$want")" "$status" "${SUMMARIES[i]}")"
    done

    say ""
    if [[ ! -e $CONF ]]; then
        say "persistent: $CONF missing: values set now are lost at reboot"
        OFF=$((OFF + 1))
    else
        for i in "${!KEYS[@]}"; do
            if ! v=$(conf_value "$CONF" "${KEYS[i]}"); then missing+=("${KEYS[i]}")
            elif ! is_ok "${KINDS[i]}" "$v" "${VALUES[i]}"; then weak+=("${KEYS[i]}=$v"); fi
        done
        if ((${#missing[@]} + ${#weak[@]} == 0)); then
            say "persistent: $CONF sets every key"
        else
            OFF=$((OFF + 1))
            if ((${#missing[@]})); then say "persistent: $CONF lacks ${missing[*]}"; fi
            if ((${#weak[@]})); then say "persistent: $CONF sets below the recommendation: ${weak[*]}"; fi
        fi
    fi
    while IFS= read -r f; do
        for key in "${KEYS[@]}"; do
            if v=$(conf_value "$f" "$key"); then
                say "warning: $f sets $key = $v and is read after ${CONF##*/}, so it wins at boot"
            fi
        done
    done < <(later_files)
}

plan() {  # --dry-run and --apply
    local i key cur want kind tgt
    if [[ $MODE == dry-run ]]; then
        say "$PROG --dry-run: nothing is changed; --apply would run these commands."
    fi
    for i in "${!KEYS[@]}"; do
        key=${KEYS[i]} kind=${KINDS[i]} want=${VALUES[i]}
        if ! cur=$(sysctl_get "$key"); then
            say "$key: not available on this kernel; skipped (recommended $(shown_rec "$kind" "$want"))"
            continue
        fi
        tgt=$(target "$kind" "$cur" "$want")
        if [[ $tgt == "$cur" ]]; then
            say "$key: $cur kept (recommended $(shown_rec "$kind" "$want"))"
        else
            say "$key: $cur -> $tgt (recommended $(shown_rec "$kind" "$want"))"
            run sysctl -q -w "$key=$tgt"
        fi
    done
    say "persistent settings, loaded at every boot:"
    run mkdir -p "${CONF%/*}"
    write_file "$CONF" "$(conf_content)"$'\n'
}

while (($#)); do
    if ! parse_common "$1"; then
        case $1 in
            -*) usage_error "unknown option '$1'" ;;
            *) usage_error "unexpected argument '$1'" ;;
        esac
    fi
    shift
done
if [[ $MODE == help ]]; then usage; exit 0; fi
finish_parse

case $MODE in
    check) check ;;
    *) plan ;;
esac
finish
