# Sourced by scripts/test under CI=true: install the Debian tools the suite
# uses, so that no test skips for want of one (a test that skips in CI
# checks nothing).  Idempotent: only what is missing is installed; needs
# root (CI runs as root); apt's chatter goes to a log shown on failure.
#
#   chromium         the dashboard's browser tests (tests/admin/test_dashboard_browser.py)
#   prometheus       promtool: the alert rules' unit tests (tests/test_deploy.py)
#   systemd          systemd-analyze verify of the units (tests/test_deploy.py)
#   openssl          a second TLS implementation as client (tests/forward/test_tls.py)
#   iproute2         ip netns: second hosts for exposure and dead-link tests
set -euo pipefail
_need=()
command -v chromium >/dev/null 2>&1 || _need+=(chromium)
command -v promtool >/dev/null 2>&1 || _need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || _need+=(systemd)
command -v openssl >/dev/null 2>&1 || _need+=(openssl)
command -v ip >/dev/null 2>&1 || _need+=(iproute2)
if [ "${#_need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "scripts: CI=true needs root to install ${_need[*]} (apt-get); run as root or install them" >&2
        exit 1
    fi
    echo "installing Debian tools for the suite: ${_need[*]} ..." >&2
    _log="$(mktemp)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${_need[@]}"; } \
           >"$_log" 2>&1; then
        cat "$_log" >&2
        rm -f "$_log"
        echo "scripts: apt-get install ${_need[*]} failed (log above)" >&2
        exit 1
    fi
    rm -f "$_log"
fi
