# Sourced by scripts/demo, scripts/test and scripts/bench: create .venv if
# missing and (re)install the project when pyproject.toml changed since the
# last install.  Idempotent; pip's chatter goes to .venv/install.log and is
# shown on failure.
#
# A Python without the venv module or ensurepip (Debian and Ubuntu ship them
# in python3-venv) is detected before anything is created, and said in one
# line.  A .venv left half-made (no working pip: an interrupted or failed
# creation) is removed and made again; a failed creation removes what it made.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRA="${1:-}"
PYTHON="${PYTHON:-python3}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "scripts: $PYTHON not found: install Python 3.11 or newer" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "scripts: $("$PYTHON" -V 2>&1) is too old: mcp-sidecar needs Python 3.11 or newer" >&2
    exit 1
fi
if [ -d "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "scripts: $VENV is incomplete (no working pip): making it again" >&2
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        echo "scripts: $PYTHON cannot create a virtual environment (no venv/ensurepip module): install" \
             "python3-venv (Debian/Ubuntu: apt-get install python3-venv or python$version-venv)" >&2
        exit 1
    fi
    if ! "$PYTHON" -m venv "$VENV" >"$ROOT/.venv-create.log" 2>&1; then
        cat "$ROOT/.venv-create.log" >&2
        rm -rf "$VENV" "$ROOT/.venv-create.log"
        echo "scripts: creating $VENV failed (log above); nothing was left behind" >&2
        exit 1
    fi
    rm -f "$ROOT/.venv-create.log"
fi
STAMP="$VENV/.installed${EXTRA:+-$EXTRA}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/constraints.txt" -nt "$STAMP" ]; then
    echo "installing mcp-sidecar${EXTRA:+[$EXTRA]} into .venv ..." >&2
    if ! "$VENV/bin/python" -m pip install -c "$ROOT/constraints.txt" -e "$ROOT${EXTRA:+[$EXTRA]}" \
            >"$VENV/install.log" 2>&1; then
        cat "$VENV/install.log" >&2
        echo "scripts: pip install failed (log above)" >&2
        exit 1
    fi
    touch "$STAMP"
fi
