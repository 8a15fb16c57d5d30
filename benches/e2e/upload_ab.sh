#!/usr/bin/env bash
# Uploads to a FastAPI app, two builds of uringapi side by side with uvicorn and granian:
# wall time of a 200 MB upload (curl on the same machine) and the server's CPU for it
# (utime+stime of its whole process group from /proc, ticks of 10 ms), as a multipart
# form read through `UploadFile` and as a raw body read through `request.stream()`.
#
#   benches/e2e/upload_ab.sh OLD_EXE NEW_EXE [ROUNDS] [OLD_PYTHONPATH]
#
# OLD_EXE and NEW_EXE are copies of the front-end executable (worker/python/uringapi/_bin/
# uringapi after `make setup` of each build). The workers come from .venv, or, for the
# old build, from OLD_PYTHONPATH when given (a copy of the old build's worker/python, for
# changes on the worker side). Every server: 1 worker (uringapi: 1 front-end thread),
# benches/e2e/apps/upload_app.py, each at its default scheduling policy (uringapi's is
# SCHED_BATCH): uvicorn and granian are a reference here, not a fair comparison (that is
# `make bench`). Rounds rotate the order of the four servers (default 3).
set -euo pipefail

if [[ $# -lt 2 || ! -x $1 || ! -x $2 ]]; then
    echo "error: need two front-end executables, old and new" >&2
    echo "hint: benches/e2e/upload_ab.sh /tmp/uringapi-old /tmp/uringapi-new 3 [/tmp/old-python]" >&2
    exit 2
fi
OLD=$1 NEW=$2 ROUNDS=${3:-3} OLD_PY=${4:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$REPO/.venv/bin
APPS=$REPO/benches/e2e/apps
DIR=$(mktemp -d)
PORT=8025
trap 'rm -rf "$DIR"' EXIT
head -c 200000000 /dev/urandom > "$DIR/body.bin"
WANT=$(sha256sum "$DIR/body.bin" | cut -d' ' -f1)

group_ticks() {  # process group id: utime+stime of its live members
    local sum=0 pid
    for pid in $(pgrep -g "$1"); do
        sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo $sum
}

start() {  # name: starts the server in a session of its own (pid = process group), prints its pid
    case $1 in
    old) PYTHONPATH=$OLD_PY exec setsid "$OLD" serve upload_app:app --app-dir "$APPS" \
            --port $PORT --workers 1 --threads 1 --python "$VENV/python" ;;
    new) exec setsid "$NEW" serve upload_app:app --app-dir "$APPS" --port $PORT --workers 1 \
            --threads 1 --python "$VENV/python" ;;
    uvicorn) exec setsid "$VENV/uvicorn" upload_app:app --app-dir "$APPS" --port $PORT \
            --log-level warning ;;
    granian) cd "$APPS" && exec setsid "$VENV/granian" --interface asgi upload_app:app \
            --port $PORT --workers 1 --log-level warning ;;
    esac > "$DIR/$1.log" 2>&1 &
    echo $!
}

one() {  # name
    local pid t0 t1 out kind
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
        echo "error: port $PORT is taken by another server" >&2; exit 1
    fi
    pid=$(start "$1")
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    [[ $(group_ticks "$pid") -gt 0 ]] || { echo "error: $1 is not running as pid $pid" >&2; exit 1; }
    for kind in multipart stream; do
        t0=$(group_ticks "$pid")
        if [[ $kind == multipart ]]; then
            out=$(curl -s -w ' %{time_total}' -F "f=@$DIR/body.bin" "http://127.0.0.1:$PORT/multipart")
        else
            out=$(curl -s -w ' %{time_total}' --data-binary "@$DIR/body.bin" \
                -H 'content-type: application/octet-stream' "http://127.0.0.1:$PORT/stream")
        fi
        t1=$(group_ticks "$pid")
        [[ $out == *"$WANT"* ]] || { echo "error: $1 $kind answered: $out" >&2; exit 1; }
        echo "$1 $kind 200 MB: wall ${out##* } s, server ticks $((t1 - t0))"
    done
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 100); do pgrep -g "$pid" > /dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
}

names=(old new uvicorn granian)
for round in $(seq 0 $((ROUNDS - 1))); do
    for i in 0 1 2 3; do one "${names[$(((i + round) % 4))]}"; done
done
