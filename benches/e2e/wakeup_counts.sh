#!/usr/bin/env bash
# Where uringapi's work per request goes at a fixed rate, in counts that do not depend on
# how fast the machine is: doorbells, syscalls by kind, context switches, per process.
#
#   benches/e2e/wakeup_counts.sh RATE [DURATION] [SCHED]       # open loop at RATE req/s
#   benches/e2e/wakeup_counts.sh wrk [DURATION] [SCHED]        # closed loop, wrk -t1 -c64
#
# Serves benches/e2e/apps/hello_asgi:app with .venv/bin/uringapi (or the front-end executable
# in $URINGAPI_EXE, e.g. a copy of an older build, with the workers of .venv), 2 workers, 1 thread,
# warms up for 2 s, then counts over DURATION (default 5) seconds with `perf stat
# --per-thread` (tracepoints: needs root or perf_event_paranoid <= -1). Prints requests,
# doorbells per request (uringapi_doorbells_total), the generator's p50/p99 and late sends,
# and per process name: write, read, epoll_pwait, io_uring_enter, context switches and
# CPU-µs per request. `late` above ~1 % of the requests means the machine, not the server,
# set the pace: such a run's counts are not comparable (wake-ups batch when CPUs are short).
# With WAKEUP_JSON=FILE each run also appends its figures to FILE as one JSON line (with
# WAKEUP_LABEL, the executable and the environment's URINGAPI_* variables), for raw files
# under benches/results/.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "error: missing RATE (req/s) or 'wrk'" >&2
    echo "hint: benches/e2e/wakeup_counts.sh 8000 5 batch" >&2
    exit 2
fi
RATE=$1
DUR=${2:-5}
SCHED=${3:-batch}
if ! [[ $RATE == wrk || $RATE =~ ^[0-9]+$ ]] || ! [[ $DUR =~ ^[1-9][0-9]*$ ]] || ! [[ $SCHED == batch || $SCHED == normal ]]; then
    echo "error: bad arguments: RATE '$RATE', DURATION '$DUR', SCHED '$SCHED'" >&2
    echo "hint: RATE is a whole number of req/s or 'wrk', DURATION whole seconds, SCHED batch|normal" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EXE=${URINGAPI_EXE:-$ROOT/.venv/bin/uringapi}
export URINGAPI_PYTHON=${URINGAPI_PYTHON:-$ROOT/.venv/bin/python}
if [[ ! -x $EXE ]]; then
    echo "error: $EXE not found" >&2
    echo "hint: run make setup first" >&2
    exit 2
fi
for tool in perf curl python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; echo "hint: apt-get install linux-perf curl" >&2; exit 2; }
done
TMP=$(mktemp -d)
GEN=$ROOT/target/bench-e2e/bin/fixed_rate_counts
if [[ ! -x $GEN || $ROOT/benches/e2e/loadgen/fixed_rate.rs -nt $GEN ]]; then
    mkdir -p "$(dirname "$GEN")"
    rustc -O -o "$GEN" "$ROOT/benches/e2e/loadgen/fixed_rate.rs"
fi

# Ports the kernel just handed out (a random one could be another server's, which would
# then answer the probe below and be measured instead).
free_port() { "$URINGAPI_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)
cd "$ROOT/benches/e2e/apps"
setsid "$EXE" serve hello_asgi:app --host 127.0.0.1 --port "$PORT" --workers 2 --threads 1 \
    --app-dir . --log-level warning --metrics-port "$MPORT" --sched "$SCHED" >"$TMP/server.log" 2>&1 &
SPID=$!
cleanup() {
    kill -TERM -- "-$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "error: $1" >&2
    echo "hint: the server's log follows; run make setup if the package is stale" >&2
    tail -n 20 "$TMP/server.log" >&2
    exit 1
}
up=0
for _ in $(seq 100); do
    kill -0 "$SPID" 2>/dev/null || fail "the server exited at start-up"
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
        up=1
        break
    fi
    sleep 0.1
done
[[ $up == 1 ]] || fail "the server did not answer on 127.0.0.1:$PORT within 10 s"

load() { # seconds -> stdout of the generator
    if [[ $RATE == wrk ]]; then
        wrk -t1 -c64 -d"${1}s" "http://127.0.0.1:$PORT/"
    else
        "$GEN" --addr "127.0.0.1:$PORT" --rate "$RATE" --connections 32 --duration "$1"
    fi
}
metric() {
    local body
    body=$(curl -sf "http://127.0.0.1:$MPORT/metrics") || fail "cannot read /metrics on port $MPORT (did the server die?)"
    awk -v k="$1" '$1==k || index($1, k "{")==1 {s+=$2} END {print s+0}' <<<"$body"
}

load 2 >/dev/null || fail "the warm-up load failed"
sleep 0.3
D0=$(metric uringapi_doorbells_total)
R0=$(metric uringapi_requests_total)
PIDS=$(pgrep -s "$SPID" | paste -sd,)
perf stat --per-thread -o "$TMP/perf.txt" \
    -e syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_pwait \
    -e syscalls:sys_enter_io_uring_enter,context-switches,task-clock \
    -p "$PIDS" -- sleep "$((DUR + 1))" &
PERF=$!
sleep 0.3
load "$DUR" >"$TMP/load.out" || fail "the measured load failed"
wait "$PERF"
sleep 0.4 # the supervisor republishes counters every 100 ms
D1=$(metric uringapi_doorbells_total)
R1=$(metric uringapi_requests_total)

python3 - "$D0" "$D1" "$R0" "$R1" "$TMP/load.out" "$TMP/perf.txt" "$RATE" "$DUR" "$SCHED" "$EXE" <<'PY'
import collections, json, os, sys, time
d0, d1, r0, r1 = map(float, sys.argv[1:5])
req = r1 - r0
text = open(sys.argv[5]).read()
head = f"requests {req:.0f}  doorbells/req {(d1 - d0) / req:.3f}"
if text.lstrip().startswith("{"):
    doc = json.loads(text)
    lat = doc["latency_us"]
    head += f"  p50 {lat['p50']} us  p99 {lat['p99']} us  late {doc['late_sends']}"
print(head)
per = collections.defaultdict(lambda: collections.defaultdict(float))
for line in open(sys.argv[6]):
    f = line.split()
    if len(f) >= 3 and "-" in f[0]:
        try:
            v = float(f[1].replace(",", ""))
        except ValueError:
            continue
        name = f[0].rsplit("-", 1)[0]
        event = f[2].replace("syscalls:sys_enter_", "")
        per[name]["cpu-us" if event == "msec" else event] += v * (1000 if event == "msec" else 1)
for name, ev in per.items():
    print(f"  {name:14s} " + "  ".join(f"{k} {v / req:.2f}" for k, v in ev.items()) + "  (per request)")
if os.environ.get("WAKEUP_JSON"):
    row = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": os.environ.get("WAKEUP_LABEL", ""),
        "rate": sys.argv[7], "duration_s": int(sys.argv[8]), "sched": sys.argv[9], "exe": sys.argv[10],
        "env": {k: v for k, v in os.environ.items() if k.startswith("URINGAPI_") and k != "URINGAPI_PYTHON"},
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "requests": req, "doorbells_per_request": (d1 - d0) / req,
        "load": json.loads(text) if text.lstrip().startswith("{") else text,
        "per_request": {name: {k: v / req for k, v in ev.items()} for name, ev in per.items()},
    }
    with open(os.environ["WAKEUP_JSON"], "a") as f:
        f.write(json.dumps(row) + "\n")
PY
