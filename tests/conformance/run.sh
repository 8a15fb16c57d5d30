#!/usr/bin/env bash
# Runs every outside check in tests/conformance (see README.md). `make conformance` calls it
# once the venvs under target/conformance hold the uringapi wheel. Every check runs even
# when an earlier one failed; the exit code is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
CONF=$REPO/target/conformance
DAPHNE_DIR=${DAPHNE_DIR:?set DAPHNE_DIR to the unpacked daphne sdist}
PYTEST_ARGS=(-q -p no:cacheprovider --timeout 300)
failed=()

run() {  # run NAME COMMAND...: runs one check, remembers a failure
    local name=$1; shift
    echo "=== conformance: $name"
    if ! "$@"; then failed+=("$name"); fi
}

rm -rf "$CONF/tmp" && mkdir -p "$CONF/tmp"
for v in 310 312 313; do
    run "smoke python ${v:0:1}.${v:1}" "$CONF/venv$v/bin/python" -m pytest "${PYTEST_ARGS[@]}" \
        --basetemp "$CONF/tmp/smoke$v" tests/conformance/check_smoke.py
done
run "asgion" "$CONF/venv312/bin/python" -m pytest "${PYTEST_ARGS[@]}" -s \
    --basetemp "$CONF/tmp/asgion" tests/conformance/check_asgion.py
run "daphne HTTP tests" env -C "$DAPHNE_DIR" DAPHNE_CONFORMANCE_DIR="$CONF/tmp/daphne" \
    PYTHONPATH="$REPO/tests/conformance:$DAPHNE_DIR" \
    "$CONF/venv312/bin/python" -m pytest "${PYTEST_ARGS[@]}" -rs -p daphne_swap \
    --hypothesis-seed 0 \
    --rootdir "$DAPHNE_DIR" --basetemp "$CONF/tmp/daphne-pytest" \
    tests/test_http_request.py tests/test_http_response.py
run "daphne websocket tests" env -C "$DAPHNE_DIR" DAPHNE_CONFORMANCE_DIR="$CONF/tmp/daphne-ws" \
    PYTHONPATH="$REPO/tests/conformance:$DAPHNE_DIR" \
    "$CONF/venv312/bin/python" -m pytest "${PYTEST_ARGS[@]}" -rs -p daphne_swap \
    --hypothesis-seed 0 \
    --rootdir "$DAPHNE_DIR" --basetemp "$CONF/tmp/daphne-ws-pytest" \
    tests/test_websocket.py
# HTTP/2: our own RFC 9113/RFC 7541 suite over h2c and TLS, in place of h2spec (README).
run "HTTP/2 (check_h2.py)" "$CONF/venv312/bin/python" tests/conformance/check_h2.py \
    --bin "$CONF/venv312/bin/uringapi"
# Autobahn's 517 cases take minutes (pytest-timeout's limit is raised inside the check).
rm -f "$CONF"/autobahn/summary-*.txt
run "autobahn (kosoku)" "$CONF/venv312/bin/python" -m pytest "${PYTEST_ARGS[@]}" -s \
    --basetemp "$CONF/tmp/autobahn" tests/conformance/check_autobahn.py
if [ -f "$CONF/autobahn/summary-${CONFORMANCE_SERVER:-uringapi}.txt" ]; then
    cat "$CONF/autobahn/summary-${CONFORMANCE_SERVER:-uringapi}.txt"
fi

if [ ${#failed[@]} -ne 0 ]; then
    printf 'conformance: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "conformance: every check passed"
