#!/usr/bin/env bash
# Prints the path of a CPython interpreter of the version given as its digits ("310" for
# 3.10): a pyenv install first (~/.pyenv/versions/3.10.*), else python3.10 on PATH. Fails
# with an error and a hint when there is none: the conformance run needs every version.
set -euo pipefail
digits=${1:?usage: find-python.sh 310}
version="${digits:0:1}.${digits:1}"
root=${PYENV_ROOT:-$HOME/.pyenv}
for candidate in $(ls -d "$root"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V -r) \
                 "$(command -v "python$version" || true)"; do
    # A pyenv shim is on PATH even when it cannot run that version: try it.
    if [ -n "$candidate" ] && "$candidate" -c 'import sys, venv' >/dev/null 2>&1; then
        echo "$candidate"
        exit 0
    fi
done
echo "error: no Python $version interpreter found (looked in $root/versions and on PATH)" >&2
echo "hint: install it (e.g. \`pyenv install $version\`) or put python$version on PATH" >&2
exit 1
