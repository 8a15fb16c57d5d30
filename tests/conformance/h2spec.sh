#!/usr/bin/env bash
# h2spec (HTTP/2 conformance, RFC 7540/9113 and HPACK) against a real uringapi, over h2c
# (prior knowledge) and over TLS (ALPN h2). `make conformance-h2` builds h2spec into
# target/h2spec first; every h2spec case must pass. It needs the Go module proxy, which this
# machine and CI cannot reach: there `make conformance` runs check_h2.py, our own suite of the
# same sections, instead (README, "HTTP/2").
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
H2SPEC=${H2SPEC:?set H2SPEC to the h2spec binary}
BIN=${URINGAPI_BIN:-$REPO/.venv/bin/uringapi}
OUT=$REPO/target/h2spec/run
rm -rf "$OUT" && mkdir -p "$OUT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$OUT/key.pem" \
    -out "$OUT/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    2>/dev/null || { echo "h2spec: openssl failed"; exit 1; }

free_port() { "$REPO/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

failed=()
check() {  # check NAME [server flags...]: one server, one h2spec run against it
    local name=$1; shift
    local port; port=$(free_port)
    echo "=== h2spec: $name"
    (cd "$REPO/tests/conformance" && exec "$BIN" serve h2spec_app:app --port "$port" \
        --workers 2 --log-level warning "$@") >"$OUT/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    local tls=()
    [ "$name" = tls ] && tls=(-t -k)
    if ! "$H2SPEC" -h 127.0.0.1 -p "$port" -o 5 "${tls[@]}" -j "$OUT/$name.xml" \
        >"$OUT/$name.txt" 2>&1; then
        failed+=("$name")
        grep -E "×|failed" "$OUT/$name.txt" | head -40
    fi
    tail -n 2 "$OUT/$name.txt"
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

check h2c
check tls --ssl-certfile "$OUT/cert.pem" --ssl-keyfile "$OUT/key.pem"

if [ ${#failed[@]} -ne 0 ]; then
    printf 'h2spec: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "h2spec: every case passed"
