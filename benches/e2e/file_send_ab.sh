#!/usr/bin/env bash
# Static files through the front end, two builds side by side: front-end CPU per request
# and requests served, for files of 16 KiB, 256 KiB and 4 MiB (wrk -t1 -c8, 4 s each), and
# the front end's CPU ticks and wall time for three 1 GiB downloads in a row (curl).
#
#   benches/e2e/file_send_ab.sh OLD_EXE NEW_EXE [ROUNDS]
#
# OLD_EXE and NEW_EXE are copies of the front-end executable (worker/python/uringapi/_bin/
# uringapi after `make setup` of each build); the workers come from .venv. Rounds alternate
# old and new (default 4). Each server: 1 worker, 1 thread, `--static-mount /s=DIR` of
# files made in a temporary directory and read once so their pages are in the page cache.
# CPU is the front-end process's utime+stime from /proc (ticks of 10 ms). Loopback: the
# receiver's copy runs on the same 2 CPUs, so compare the two builds, not absolute rates.
set -euo pipefail

if [[ $# -lt 2 || ! -x $1 || ! -x $2 ]]; then
    echo "error: need two front-end executables, old and new" >&2
    echo "hint: benches/e2e/file_send_ab.sh /tmp/uringapi-old /tmp/uringapi-new 4" >&2
    exit 2
fi
OLD=$1 NEW=$2 ROUNDS=${3:-4}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$(mktemp -d)
PORT=8024
trap 'rm -rf "$DIR"' EXIT
head -c $((1 << 30)) /dev/zero > "$DIR/g.bin"
for size in 16384 262144 4194304; do head -c $size /dev/urandom > "$DIR/f$size.bin"; done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one() {  # label exe
    PATH=$REPO/.venv/bin:$PATH "$2" serve hello_asgi:app --app-dir "$REPO/benches/e2e/apps" \
        --port $PORT --workers 1 --threads 1 --static-mount "/s=$DIR" > "$DIR/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/s/f16384.bin" && break; sleep 0.1; done
    cat "$DIR"/*.bin > /dev/null
    local t0 s0 t1 s1 n
    t0=$(ticks $pid); s0=$(date +%s.%N)
    for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$PORT/s/g.bin"; done
    t1=$(ticks $pid); s1=$(date +%s.%N)
    echo "$1 1GiB x3 curl: front-end ticks $((t1 - t0)) wall $(echo "$s1 - $s0" | bc)"
    for size in 16384 262144 4194304; do
        t0=$(ticks $pid)
        n=$(wrk -t1 -c8 -d4s "http://127.0.0.1:$PORT/s/f$size.bin" | awk '/requests in/{print $1}')
        t1=$(ticks $pid)
        echo "$1 $((size / 1024)) KiB wrk -c8 4s: $n req, front-end ticks $((t1 - t0)), CPU-µs/req $(echo "($t1 - $t0) * 10000 / $n" | bc -l | cut -c1-6)"
    done
    kill -INT $pid; wait $pid || true
}

for _ in $(seq "$ROUNDS"); do one old "$OLD"; one new "$NEW"; done
