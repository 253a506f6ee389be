# Sourced by scripts/demo and scripts/test: create .venv if missing and
# (re)install the project when pyproject.toml changed since the last install.
# Idempotent; pip's chatter goes to .venv/install.log and is shown on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRA="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
STAMP="$VENV/.installed${EXTRA:+-$EXTRA}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "installing mcp-sidecar${EXTRA:+[$EXTRA]} into .venv ..." >&2
    if ! "$VENV/bin/python" -m pip install -e "$ROOT${EXTRA:+[$EXTRA]}" >"$VENV/install.log" 2>&1; then
        cat "$VENV/install.log" >&2
        echo "scripts: pip install failed (log above)" >&2
        exit 1
    fi
    touch "$STAMP"
fi
