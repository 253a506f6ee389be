"""Deployment files are valid: the systemd unit verifies, the Dockerfile
installs the package this repository builds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_verify_cleanly(tmp_path: Path) -> None:
    proxyctl = shutil.which("proxyctl") or str(Path(ROOT, ".venv/bin/proxyctl"))
    paths = []
    for name in ("mcp-sidecar.service", "mcp-sidecar.socket"):
        unit = (ROOT / "systemd" / name).read_text().replace("/usr/local/bin/proxyctl", proxyctl)
        path = tmp_path / name
        path.write_text(unit)
        paths.append(str(path))
    result = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    # systemd-analyze exits 0 even for ignored settings: any output is a finding.
    findings = [l for l in (result.stdout + result.stderr).splitlines() if "mcp-sidecar" in l]
    assert result.returncode == 0 and findings == [], result.stdout + result.stderr


def test_service_is_notify_with_watchdog_and_reload() -> None:
    unit = (ROOT / "systemd" / "mcp-sidecar.service").read_text()
    for line in ("Type=notify", "WatchdogSec=30s", "Restart=on-failure", "KillMode=mixed",
                 "ExecReload=/usr/local/bin/proxyctl reload --state-dir /run/mcp-sidecar",
                 "RuntimeDirectory=mcp-sidecar"):
        assert line in unit.splitlines(), line


def test_dockerfile_runs_proxyctl_from_this_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md ./" in text and "COPY src ./src" in text
    assert 'ENTRYPOINT ["proxyctl"]' in text
    assert "USER 10001" in text
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'proxyctl = "mcp_sidecar.cli:main"' in scripts
