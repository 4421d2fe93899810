#!/usr/bin/env bash
# Installs the matrix-nio benchmark peer into target/peers/nio-venv.
# Last line on stdout: the venv's python. Exit 77: skipped (no python3/venv/pip, or install failed).
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${NIO_VENV:-$root/target/peers/nio-venv}"
req="$here/requirements.txt"
marker="$venv/.argus-requirements.sha256"

peer="nio"
# shellcheck source=../skip.sh
. "$here/../skip.sh"

python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || skip "'$python' not found on PATH"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' 2>/dev/null \
    || skip "'$python' is older than 3.8"

hash="$(sha256sum "$req" | cut -d' ' -f1)" || skip "cannot hash $req"

if [ -x "$venv/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$hash" ] \
    && "$venv/bin/python" -c 'import nio' >/dev/null 2>&1; then
    echo "$venv/bin/python"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --help >/dev/null 2>&1 || skip "'$python -m venv' is unavailable (Debian: apt-get install python3-venv)"
    mkdir -p "$(dirname "$venv")" || skip "cannot create $(dirname "$venv")"
    "$python" -m venv "$venv" >&2 || { rm -rf "$venv"; skip "'$python -m venv $venv' failed"; }
fi

"$venv/bin/python" -m pip --version >/dev/null 2>&1 || skip "pip is missing in $venv (Debian: apt-get install python3-pip python3-venv)"

rm -f "$marker"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$req" >&2 \
    || skip "pip install -r $req failed (no network to PyPI?)"
"$venv/bin/python" -c 'import nio' >/dev/null 2>&1 || skip "matrix-nio does not import after install"

echo "$hash" >"$marker"
echo "$venv/bin/python"
