#!/usr/bin/env bash
# CPU placement for a running uringapi server, and NIC interrupt placement.
#
# Front-end threads (named uringapi-io-N) each get one core, in order; worker
# processes (the front end's children) each get one core, taken from the other
# end of the list, so that with fewer I/O threads than cores the first workers
# land on cores no I/O thread uses. NIC queue interrupts are spread one queue per
# core, so the receive work they trigger (softirq) does not all land on CPU 0.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

FRONT_PID=""
IO_CORES="" WORKER_CORES="" IRQ_CORES=""
NICS=()
DO_IRQS=1

usage() {
    cat <<EOF
usage: $PROG [--check | --dry-run | --apply] [--strict] [--pid PID]
       [--io-cores LIST] [--worker-cores LIST] [--irq-cores LIST] [--nic IF]... [--no-irqs]

Pin uringapi's I/O threads and workers to cores; show and spread NIC interrupts.

  --check              show current vs recommended placement (default); changes nothing
  --strict             with --check: exit 1 when something is not placed as recommended
  --dry-run            print the exact commands --apply would run; changes nothing
  --apply              pin threads/workers (taskset) and spread NIC queue IRQs; needs root
  --pid PID            the uringapi front-end process (default: the oldest process
                       named uringapi, if any); its threads uringapi-io-N are pinned
                       one per core, its child processes (the workers) one per core
  --io-cores LIST      cores for I/O thread 0, 1, ... in order (default: all online)
  --worker-cores LIST  cores for the workers, by pid order (default: all online,
                       highest first)
  --irq-cores LIST     cores for NIC queue 0, 1, ... (default: all online)
  --nic IF             only this interface (repeatable; default: every physical NIC)
  --no-irqs            leave interrupt affinity alone (still shown by --check)
  -h, --help           this text

LIST is a kernel CPU list such as 0-3,8. Lists wrap when there are more threads,
workers or queues than cores. Pinning is per process: after a worker respawns or
a SIGHUP rolling restart, run --apply again. A running irqbalance daemon rewrites
interrupt affinity; stop it or ban the cores (IRQBALANCE_BANNED_CPULIST).
EOF
}

# ---- discovery -------------------------------------------------------------------

# io_threads PID: "N TID" per thread named uringapi-io-N, sorted by N.
io_threads() {
    local task comm
    for task in "/proc/$1/task"/*; do
        comm=$(proc_comm "${task#/proc/}")
        if [[ $comm =~ ^uringapi-io-([0-9]+)$ ]]; then
            printf '%s %s\n' "${BASH_REMATCH[1]}" "${task##*/}"
        fi
    done | sort -n
}

physical_nics() {
    local dev
    for dev in /sys/class/net/*; do
        [[ -e $dev/device ]] || continue   # lo, bridges, veth, ifb, tun: no hardware queues
        printf '%s\n' "${dev##*/}"
    done
}

# "IRQ NAME COUNTS" for every numbered line of /proc/interrupts; COUNTS is
# per-CPU, joined with '/'.
interrupts() {
    awk 'NR == 1 { ncpu = NF; next }
         $1 ~ /^[0-9]+:$/ {
             irq = $1; sub(":", "", irq); c = ""
             for (i = 2; i <= ncpu + 1 && i <= NF; i++) c = c (c == "" ? "" : "/") $i
             print irq, $NF, c
         }' /proc/interrupts 2>/dev/null
}

# nic_irqs IF: IRQ numbers of the interface: its PCI device's MSI vectors (for
# virtio the PCI device is the parent of the virtio device), its legacy IRQ, and
# any /proc/interrupts entry named after it (eth0-TxRx-0 and similar).
nic_irqs() {
    local ifname=$1 dev d f irq
    dev=$(readlink -f "/sys/class/net/$ifname/device" 2>/dev/null) || return 0
    {
        for d in "$dev" "$dev/.."; do
            if [[ -d $d/msi_irqs ]]; then
                for f in "$d/msi_irqs"/*; do [[ -e $f ]] && printf '%s\n' "${f##*/}"; done
                break
            fi
        done
        if [[ -r $dev/irq ]]; then
            irq=$(cat "$dev/irq" 2>/dev/null || true)
            if is_uint "${irq:-x}" && ((irq > 0)); then printf '%s\n' "$irq"; fi
        fi
        interrupts | awk -v nic="$ifname" 'index($2, nic "-") || index($2, nic "@") { print $1 }'
    } | sort -nu
}

# queue_index NAME: the queue number in an IRQ name (virtio2-input.0, eth0-TxRx-3,
# mlx5_comp5@pci:…). Returns 1 for vectors that are not queues (config, async,
# misc, link...), 2 for a queue whose name carries no number.
queue_index() {
    local name=${1,,}
    if [[ $name =~ (config|async|ctrl|control|misc|link|lsc|event|mbx|other|adminq|mgmt) || $name == "${2,,}" ]]; then
        return 1
    fi
    if [[ $name =~ (txrx|rx|tx|input|output|comp|queue|fp)[-._]?([0-9]+) ]]; then
        printf '%s' "${BASH_REMATCH[2]}"
        return 0
    fi
    return 2
}

# ---- cores -----------------------------------------------------------------------

ONLINE=()
read -r -a ONLINE <<<"$(online_cpus)"

# parse_cores OPTION LIST: validated CPU numbers, or a usage error.
parse_cores() {
    local cpus c
    if ! cpus=$(expand_cpulist "$2") || [[ -z $cpus ]]; then
        usage_error "$1 '$2' is not a CPU list" "use the kernel's format, e.g. 0-3,8"
    fi
    for c in $cpus; do
        [[ " ${ONLINE[*]} " == *" $c "* ]] ||
            usage_error "$1: CPU $c is not online (online: $(cat /sys/devices/system/cpu/online 2>/dev/null || echo '?'))"
    done
    printf '%s' "$cpus"
}

# pick INDEX CORE...: the core for item INDEX, wrapping around the list.
pick() {
    local i=$1
    shift
    printf '%s' "${@:i % $# + 1:1}"
}

# ---- report and plan ---------------------------------------------------------------

row() { say "$(printf '%-24s %-8s %-12s %-12s %s' "$@")"; }

placement() {
    local -a io_cores worker_cores
    local n tid pid cur want j status
    read -r -a io_cores <<<"$IO_CORES"
    read -r -a worker_cores <<<"$WORKER_CORES"
    section "CPU placement"
    say "online CPUs: $(cat /sys/devices/system/cpu/online 2>/dev/null || echo '?')"
    if [[ -z $FRONT_PID ]]; then
        say "no uringapi front end found (no process named uringapi): pass --pid PID to pin one"
        say "recommended: I/O thread N on core N of [${io_cores[*]}], worker N on core N of [${worker_cores[*]}]"
        return 0
    fi
    say "front end: $FRONT_PID ($(proc_comm "$FRONT_PID"))"
    if [[ $MODE == check ]]; then row "THREAD/PROCESS" ID CURRENT RECOMMENDED STATUS; fi
    local found=0
    while read -r n tid; do
        [[ -n ${tid:-} ]] || continue
        found=1
        cur=$(cpus_allowed "$tid") || continue
        want=$(pick "$n" "${io_cores[@]}")
        status=ok
        if [[ $cur != "$want" ]]; then status=change; fi
        if [[ $MODE == check ]]; then
            if [[ $status == change ]]; then OFF=$((OFF + 1)); fi
            row "uringapi-io-$n (thread)" "$tid" "$cur" "$want" "$status"
        elif [[ $status == change ]]; then
            say "uringapi-io-$n (thread $tid): $cur -> $want"
            run taskset -p -c "$want" "$tid"
        else
            say "uringapi-io-$n (thread $tid): already on $want"
        fi
    done < <(io_threads "$FRONT_PID")
    if ((!found)); then
        say "no threads named uringapi-io-N in $FRONT_PID: is it the uringapi front end?"
    fi
    j=0
    while read -r pid; do
        [[ -n $pid ]] || continue
        cur=$(cpus_allowed "$pid") || continue
        want=$(pick "$j" "${worker_cores[@]}")
        j=$((j + 1))
        status=ok
        if [[ $cur != "$want" ]]; then status=change; fi
        if [[ $MODE == check ]]; then
            if [[ $status == change ]]; then OFF=$((OFF + 1)); fi
            row "worker $(proc_comm "$pid")" "$pid" "$cur" "$want" "$status"
        elif [[ $status == change ]]; then
            say "worker $pid ($(proc_comm "$pid")): $cur -> $want"
            run taskset -a -p -c "$want" "$pid"   # -a: every thread of the worker
        else
            say "worker $pid: already on $want"
        fi
    done < <(children_of "$FRONT_PID")
    if ((j == 0)); then say "no worker processes (children of $FRONT_PID)"; fi
}

irqs() {
    local -a irq_cores
    local nic irq name counts cur eff want q rc ord any status queues driver
    read -r -a irq_cores <<<"$IRQ_CORES"
    section "NIC interrupts"
    if pgrep -x irqbalance >/dev/null 2>&1; then
        say "warning: irqbalance is running and will rewrite interrupt affinity;"
        say "         stop it (systemctl stop irqbalance) or set IRQBALANCE_BANNED_CPULIST"
    fi
    if ((${#NICS[@]} == 0)); then
        say "no physical network interfaces (with a device in /sys/class/net)"
        return 0
    fi
    if ((!DO_IRQS)) && [[ $MODE != check ]]; then
        say "--no-irqs: interrupt affinity left alone"
        return 0
    fi
    for nic in "${NICS[@]}"; do
        driver=$(basename "$(readlink -f "/sys/class/net/$nic/device/driver" 2>/dev/null || echo '?')")
        queues=$(find "/sys/class/net/$nic/queues" -maxdepth 1 -name 'rx-*' 2>/dev/null | wc -l)
        say ""
        say "$nic: driver $driver, $queues receive queue(s), queue N -> core N of [${irq_cores[*]}]"
        if ((queues == 1 && ${#ONLINE[@]} > 1)); then
            say "  one receive queue: its interrupt work stays on one core; RPS"
            say "  (/sys/class/net/$nic/queues/rx-0/rps_cpus) can spread the protocol work"
        fi
        if [[ $MODE == check ]]; then
            say "$(printf '  %-6s %-28s %-14s %-10s %-10s %-12s %s' IRQ NAME "COUNT/CPU" AFFINITY EFFECTIVE RECOMMENDED STATUS)"
        fi
        ord=0 any=0
        while read -r irq; do
            [[ -n $irq ]] || continue
            name=$(interrupts | awk -v i="$irq" '$1 == i { print $2 }')
            [[ -n $name ]] || continue   # an allocated vector nobody requested
            any=1
            counts=$(interrupts | awk -v i="$irq" '$1 == i { print $3 }')
            cur=$(cat "/proc/irq/$irq/smp_affinity_list" 2>/dev/null || echo '?')
            eff=$(cat "/proc/irq/$irq/effective_affinity_list" 2>/dev/null || echo '-')
            rc=0
            q=$(queue_index "${name:-?}" "$nic") || rc=$?
            case $rc in
                0) want=$(pick "$q" "${irq_cores[@]}") ;;
                2) want=$(pick "$ord" "${irq_cores[@]}"); ord=$((ord + 1)) ;;  # unnumbered queue
                *) want="-" ;;
            esac
            if [[ $want == - ]]; then status="not a queue"
            elif [[ $cur == "$want" ]]; then status=ok
            else status=change; fi
            if [[ $MODE == check ]]; then
                if [[ $status == change && $DO_IRQS -eq 1 ]]; then OFF=$((OFF + 1)); fi
                say "$(printf '  %-6s %-28s %-14s %-10s %-10s %-12s %s' "$irq" "${name:-?}" "${counts:-?}" "$cur" "$eff" "$want" "$status")"
            elif [[ $status == change ]]; then
                say "IRQ $irq ($name): $cur -> $want"
                write_value "/proc/irq/$irq/smp_affinity_list" "$want"
            elif [[ $status == ok ]]; then
                say "IRQ $irq ($name): already on $want"
            fi
        done < <(nic_irqs "$nic")
        if ((!any)); then say "  no interrupts found for $nic"; fi
    done
}

# ---- options -----------------------------------------------------------------------

while (($#)); do
    if parse_common "$1"; then shift; continue; fi
    case $1 in
        --pid)
            need_value "$@"
            check_pid "$2"
            FRONT_PID=$2
            shift 2
            ;;
        --io-cores) need_value "$@"; IO_CORES=$(parse_cores "$1" "$2"); shift 2 ;;
        --worker-cores) need_value "$@"; WORKER_CORES=$(parse_cores "$1" "$2"); shift 2 ;;
        --irq-cores) need_value "$@"; IRQ_CORES=$(parse_cores "$1" "$2"); shift 2 ;;
        --nic)
            need_value "$@"
            [[ -e /sys/class/net/$2 && $2 != */* ]] || usage_error "no network interface '$2'" "see 'ip link' for the names"
            [[ -e /sys/class/net/$2/device ]] || usage_error "'$2' is a virtual interface: it has no hardware queues"
            NICS+=("$2")
            shift 2
            ;;
        --no-irqs) DO_IRQS=0; shift ;;
        -*) usage_error "unknown option '$1'" ;;
        *) usage_error "unexpected argument '$1'" ;;
    esac
done
if [[ $MODE == help ]]; then usage; exit 0; fi
finish_parse

IO_CORES=${IO_CORES:-${ONLINE[*]}}
IRQ_CORES=${IRQ_CORES:-${ONLINE[*]}}
if [[ -z $WORKER_CORES ]]; then
    for ((i = ${#ONLINE[@]} - 1; i >= 0; i--)); do WORKER_CORES+="${WORKER_CORES:+ }${ONLINE[i]}"; done
fi
if [[ -z $FRONT_PID ]]; then
    FRONT_PID=$(pgrep -o -x uringapi 2>/dev/null || true)
fi
if ((${#NICS[@]} == 0)); then
    mapfile -t NICS < <(physical_nics)
fi

if [[ $MODE == dry-run ]]; then
    say "$PROG --dry-run: nothing is changed; --apply would run these commands."
fi
placement
irqs
finish
