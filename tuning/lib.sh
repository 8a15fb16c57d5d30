# shellcheck shell=bash
# Helpers shared by the tuning scripts. Sourced by them, never run on its own.
#
# Every script has the same four modes:
#   --check    report current vs recommended; changes nothing; exit 0
#              (exit 1 with --strict when something this kit could fix is off)
#   --dry-run  print the exact commands --apply would run; changes nothing.
#              The output is itself a valid shell script (all prose is '#' comments).
#   --apply    run those commands; needs root
#   --help
# Usage errors print `error: …` and `hint: …` on stderr and exit 2.
#
# Testing hooks (documented in tuning/README.md):
#   URINGAPI_PROC_SYS  read sysctls below this directory instead of /proc/sys.
#                      --apply refuses to run while it is set.

PROG=${0##*/}
MODE=""          # check | dry-run | apply | help; empty until an option picks one
STRICT=0
OFF=0            # findings this kit could fix that differ from the recommendation
FAILED=0         # commands that failed under --apply
PROC_SYS=${URINGAPI_PROC_SYS:-/proc/sys}

err() {
    printf 'error: %s\n' "$1" >&2
    if [[ -n ${2:-} ]]; then printf 'hint: %s\n' "$2" >&2; fi
}

usage_error() {
    local hint="run '$PROG --help' for the options"
    err "$1" "${2:-$hint}"
    exit 2
}

# parse_common OPTION: handles the options every script shares. Returns 1 for an
# option the caller must handle (or reject).
parse_common() {
    local want=""
    case $1 in
        --check) want=check ;;
        --dry-run) want=dry-run ;;
        --apply) want=apply ;;
        -h | --help) MODE=help; return 0 ;;
        --strict) STRICT=1; return 0 ;;
        *) return 1 ;;
    esac
    if [[ $MODE == help ]]; then return 0; fi
    if [[ -n $MODE && $MODE != "$want" ]]; then
        usage_error "--$MODE and --$want cannot be combined" "pick one mode: --check, --dry-run or --apply"
    fi
    MODE=$want
}

# need_value OPTION [VALUE...]: an option that takes a value must have one.
need_value() {
    if [[ $# -lt 2 || $2 == --* ]]; then
        usage_error "option $1 needs a value"
    fi
}

# finish_parse: defaults and the checks every script makes after parsing.
finish_parse() {
    MODE=${MODE:-check}
    if [[ $MODE == apply ]]; then
        if [[ $EUID -ne 0 ]]; then
            err "--apply changes system settings and needs root (running as uid $EUID)" \
                "run 'sudo $0 --apply', or '$0 --dry-run' to see what it would change"
            exit 2
        fi
        if [[ $PROC_SYS != /proc/sys ]]; then
            err "URINGAPI_PROC_SYS is set to '$PROC_SYS'; --apply only works on the live /proc/sys" \
                "unset URINGAPI_PROC_SYS (it exists for tests of --check and --dry-run)"
            exit 2
        fi
    fi
}

# ---- output -----------------------------------------------------------------

# say TEXT: prose. Under --dry-run it becomes a shell comment, so the whole
# output stays a runnable script.
say() {
    if [[ $MODE == dry-run ]]; then
        if [[ -z $1 ]]; then echo; else printf '# %s\n' "$1"; fi
    else
        printf '%s\n' "$1"
    fi
}

section() {
    say ""
    say "== $1 =="
}

# shquote WORD: the word as a shell would need it, quoted only when it must be.
shquote() {
    if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

cmdline() {
    local out="" w
    for w in "$@"; do out+="${out:+ }$(shquote "$w")"; done
    printf '%s' "$out"
}

# run CMD...: dry-run prints it; apply prints it with '+ ' and runs it. A failed
# command is reported and counted; the script goes on with the others.
run() {
    case $MODE in
        dry-run) printf '%s\n' "$(cmdline "$@")" ;;
        apply)
            printf '+ %s\n' "$(cmdline "$@")"
            if ! "$@"; then
                err "command failed: $(cmdline "$@")"
                FAILED=$((FAILED + 1))
            fi
            ;;
    esac
}

# write_value PATH VALUE: `echo VALUE > PATH` (for /proc and /sys knobs).
write_value() {
    local path=$1 value=$2
    case $MODE in
        dry-run) printf 'echo %s > %s\n' "$(shquote "$value")" "$(shquote "$path")" ;;
        apply)
            printf '+ echo %s > %s\n' "$(shquote "$value")" "$(shquote "$path")"
            if ! { printf '%s\n' "$value" >"$path"; } 2>/dev/null; then
                err "could not write '$value' to $path"
                FAILED=$((FAILED + 1))
            fi
            ;;
    esac
}

# write_file PATH CONTENT: `cat > PATH <<'EOF' … EOF`. CONTENT ends with a newline.
write_file() {
    local path=$1 content=$2
    case $MODE in
        dry-run) printf "cat > %s <<'EOF'\n%sEOF\n" "$(shquote "$path")" "$content" ;;
        apply)
            printf "+ cat > %s <<'EOF' … EOF\n" "$(shquote "$path")"
            if ! { printf '%s' "$content" >"$path"; } 2>/dev/null; then
                err "could not write $path"
                FAILED=$((FAILED + 1))
            fi
            ;;
    esac
}

# finish: the exit code every script ends with.
finish() {
    if [[ $MODE == apply && $FAILED -gt 0 ]]; then
        err "$FAILED command(s) failed" "see the messages above; the other changes were made"
        exit 1
    fi
    if [[ $MODE == check && $STRICT -eq 1 && $OFF -gt 0 ]]; then
        exit 1
    fi
    exit 0
}

# ---- sysctl access ----------------------------------------------------------

sysctl_path() {
    printf '%s/%s' "$PROC_SYS" "${1//.//}"
}

# sysctl_get KEY: prints the value (runs of whitespace squeezed to one space);
# returns 1 when the key does not exist on this kernel or cannot be read.
sysctl_get() {
    local path value
    path=$(sysctl_path "$1")
    [[ -r $path ]] || return 1
    value=$(tr -s '[:space:]' ' ' <"$path" 2>/dev/null) || return 1
    value=${value% }
    printf '%s' "${value# }"
}

# ---- numbers, CPUs ----------------------------------------------------------

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# check_pid PID: refuse (usage error) anything that is not a running process's pid.
check_pid() {
    if ! is_uint "$1" || [[ ! -d /proc/$1 ]]; then
        usage_error "no process with pid '$1'" "pass the pid of the uringapi front end, e.g. \$(pgrep -o -x uringapi)"
    fi
}

# human_bytes N: 8388608 -> 8 MiB; "unlimited" passes through.
human_bytes() {
    local n=$1
    if ! is_uint "$n"; then printf '%s' "$n"; return; fi
    if ((n >= 1073741824 && n % 1073741824 == 0)); then printf '%d GiB' $((n / 1073741824))
    elif ((n >= 1048576 && n % 1048576 == 0)); then printf '%d MiB' $((n / 1048576))
    elif ((n >= 1024 && n % 1024 == 0)); then printf '%d KiB' $((n / 1024))
    else printf '%d B' "$n"; fi
}

# expand_cpulist "0-3,8" -> "0 1 2 3 8"
expand_cpulist() {
    local part lo hi out=() i
    local IFS=,
    for part in $1; do
        part=${part//[[:space:]]/}
        [[ -n $part ]] || continue
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
            for ((i = lo; i <= hi; i++)); do out+=("$i"); done
        elif is_uint "$part"; then
            out+=("$part")
        else
            return 1
        fi
    done
    IFS=' '
    printf '%s' "${out[*]}"
}

online_cpus() {
    local list
    list=$(cat /sys/devices/system/cpu/online 2>/dev/null) || list=0
    expand_cpulist "$list"
}

# proc_comm PID: the process or thread name, empty when it is gone.
proc_comm() {
    cat "/proc/$1/comm" 2>/dev/null || true
}

# proc_ppid PID: parent pid from /proc/PID/stat (comm may hold spaces and parens,
# so cut after the last ')').
proc_ppid() {
    local stat ppid
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    read -r _ ppid _ <<<"${stat##*) }"
    printf '%s' "$ppid"
}

# children_of PID: its child processes, by pid (for uringapi: the workers, in
# spawn order unless pids wrapped).
children_of() {
    local stat pid
    for stat in /proc/[0-9]*/stat; do
        pid=${stat#/proc/}
        pid=${pid%/stat}
        if [[ $(proc_ppid "$pid" 2>/dev/null || true) == "$1" ]]; then printf '%s\n' "$pid"; fi
    done | sort -n
}

# cpus_allowed PID_OR_TID: its current affinity list, e.g. "0-3".
cpus_allowed() {
    local line
    line=$(grep -m1 '^Cpus_allowed_list:' "/proc/$1/status" 2>/dev/null) || return 1
    printf '%s' "${line##*[[:space:]]}"
}

# runs_check_sh PID: is PID a shell running check.sh (which runs the others for us)?
runs_check_sh() {
    local -a argv
    local a
    mapfile -d '' -t argv <"/proc/$1/cmdline" 2>/dev/null || return 1
    for a in "${argv[@]:1}"; do
        [[ $a == -* ]] && continue     # interpreter options (bash -x check.sh)
        [[ ${a##*/} == check.sh ]]
        return
    done
    return 1
}

# invoking_shell: the shell the user typed the command in: our parent, skipping
# wrappers (sudo, env, ...) and check.sh.
invoking_shell() {
    local pid=$PPID parent
    while ((pid > 1)); do
        case $(proc_comm "$pid") in
            sudo | doas | su | runuser | setpriv | env | timeout | pkexec) ;;
            *) runs_check_sh "$pid" || break ;;
        esac
        parent=$(proc_ppid "$pid") || break
        pid=$parent
    done
    printf '%s' "$pid"
}

# has_cap N: does this process hold capability N in its effective set?
# (CAP_SYS_RESOURCE = 24; container runtimes often drop it, even for root.)
has_cap() {
    local hex
    hex=$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status 2>/dev/null) || return 1
    [[ $hex =~ ^[0-9a-fA-F]+$ ]] || return 1
    (((16#$hex >> $1) & 1))
}

kernel_release() { uname -r; }

# kernel_at_least MAJOR MINOR
kernel_at_least() {
    local rel major minor
    rel=$(kernel_release)
    [[ $rel =~ ^([0-9]+)\.([0-9]+) ]] || return 1
    major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
    ((major > $1 || (major == $1 && minor >= $2)))
}
