"""Deployment files are valid: the systemd unit verifies, the Dockerfile
installs the package this repository builds."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, exported_metrics


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
    assert 'proxyctl = "mcp_sidecar.cli.main:main"' in scripts


def _exported_metric_names() -> set[str]:
    families = exported_metrics()
    return set(families) | {name for samples in families.values() for name in samples}


def test_alert_rules_and_docs_use_only_exported_metrics() -> None:
    """The Prometheus examples and the docs' queries name metrics that exist."""
    exported = _exported_metric_names()
    for path in (ROOT / "deploy" / "prometheus" / "alerts.yml", ROOT / "docs" / "metrics.md"):
        used = set(re.findall(r"\b(mcp_[a-z_]+)\b", path.read_text())) - {"mcp_sidecar"}  # (the package)
        def known(name: str) -> bool:
            return any(name.removesuffix(suffix) in exported
                       for suffix in ("", "_total", "_bucket", "_count", "_sum"))

        unknown = {n for n in used if not known(n)}
        assert not unknown, f"{path.name}: unknown metrics {sorted(unknown)}"


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (apt-get install prometheus); the metric names are "
                           "still checked by test_alert_rules_and_docs_use_only_exported_metrics")
def test_promtool_accepts_rules_and_config() -> None:
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        result = subprocess.run(["promtool", *args], cwd=ROOT / "deploy" / "prometheus", capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_example_runs_the_sidecar_with_probes_on_its_admin_endpoint() -> None:
    text = (ROOT / "deploy" / "kubernetes" / "inspector-with-sidecar.yaml").read_text()
    args = re.search(r'args: \["run", (.*)\]', text).group(1)
    assert '"--profile", "inspector-v1"' in args and '"--admin", "0.0.0.0:6279"' in args
    assert "path: /healthz" in text and "path: /readyz" in text
    assert "MCP_SIDECAR_ADMIN_TOKEN" in text  # the admin endpoint leaves loopback: a token
