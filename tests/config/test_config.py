from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from mcp_sidecar.config.addresses import HostPort
from mcp_sidecar.config.defaults import DEFAULT_BUFFER_BYTES, DEFAULT_CONNECT_RETRY_WINDOW_S, DEFAULT_OBSERVE_CPU_SHARE
from mcp_sidecar.config.parse import build_config, load_config
from mcp_sidecar.config.profiles import exposure_notices, exposure_warnings
from mcp_sidecar.config.render import render_toml
from mcp_sidecar.config.values import format_duration, parse_duration
from mcp_sidecar.errors import ConfigError


def test_default_is_inspector_v1_on_nonloopback_addresses() -> None:
    config = build_config()
    assert config.profile == "inspector-v1"
    assert [(r.name, [str(a) for a in r.listen], str(r.upstream)) for r in config.routes] == [
        ("inspector-ui", ["@nonloopback:6274"], "localhost:6274"),
        ("inspector-proxy", ["@nonloopback:6277"], "localhost:6277"),
    ]


def test_inspector_v2_profile_is_gated_beyond_loopback_and_refused_without_the_gate() -> None:
    config = build_config(profile="inspector-v2")
    assert [(r.name, r.listen[0].port, r.upstream.port, r.settings.gate.mode) for r in config.routes] == [
        ("inspector-ui", 6274, 6274, "token"),
        ("inspector-sandbox", 6275, 6275, "token"),
        ("inspector-apps", 6278, 6278, "token"),
    ]
    assert len({r.settings.gate.token for r in config.routes}) == 1  # one token, one cookie for the three origins
    assert exposure_warnings(config) == []
    with pytest.raises(ConfigError) as err:
        build_config({"defaults": {"gate": "off"}}, profile="inspector-v2")
    assert err.value.exit_code == 2
    assert str(err.value) == (
        "--profile inspector-v2: refusing to listen beyond loopback without the access gate "
        "(@nonloopback:6274, @nonloopback:6275, @nonloopback:6278): "
        "Inspector v2 serves its API token in its page to anyone who loads it, and that token runs commands on "
        "this host; keep the access gate (the default), or reach it through an SSH tunnel to loopback "
        "(ssh -L 6274:localhost:6274 -L 6275:localhost:6275 -L 6278:localhost:6278 THIS_HOST), "
        "or pass --dangerously-expose-unprotected on a trusted network"
    )


def test_inspector_v2_profile_exposed_on_explicit_request() -> None:
    config = build_config(profile="inspector-v2", dangerously_expose_unprotected=True)
    assert [(r.name, r.listen[0].port, r.upstream.port, r.settings.gate.mode) for r in config.routes] == [
        ("inspector-ui", 6274, 6274, "off"),
        ("inspector-sandbox", 6275, 6275, "off"),
        ("inspector-apps", 6278, 6278, "off"),
    ]
    assert config.dangerously_expose_unprotected
    assert exposure_warnings(config) == [
        f"route {name} listens beyond loopback without protection (--dangerously-expose-unprotected): "
        "Inspector v2 serves its API token in its page to anyone who loads it, and that token runs commands on "
        "this host"
        for name in ("inspector-ui", "inspector-sandbox", "inspector-apps")
    ]
    assert tomllib.loads(render_toml(config))["proxy"]["dangerously_expose_unprotected"] is True
    # The same from the [proxy] table of a file.
    from_file = build_config({"proxy": {"dangerously_expose_unprotected": True}}, profile="inspector-v2")
    assert exposure_warnings(from_file) == exposure_warnings(config)


def test_inspector_v1_profile_is_not_guarded_and_its_page_is_gated() -> None:
    for expose in (False, True):
        config = build_config(profile="inspector-v1", dangerously_expose_unprotected=expose)
        assert [r.name for r in config.routes] == ["inspector-ui", "inspector-proxy"]
        assert exposure_warnings(config) == []
        ui, proxy = config.routes
        assert ui.settings.gate.mode == "token" and ui.settings.gate.token  # beyond loopback: gated by default
        assert proxy.settings.gate.mode == "off"  # the page calls it cross-origin, without cookies
        assert exposure_notices(config) == [
            "route inspector-ui is protected by the access gate (token)",
            "route inspector-proxy is protected by the Inspector's own session token (MCP_PROXY_AUTH_TOKEN; "
            "readable on the path without TLS)",
        ]
    # A gate chosen in [defaults] wins, also "off".
    assert build_config({"defaults": {"gate": "off"}}, profile="inspector-v1").routes[0].settings.gate.mode == "off"


def test_unprotected_exposure_of_a_loopback_upstream_warns() -> None:
    exposed = build_config(forwards=("0.0.0.0:7000:localhost:8000",))
    assert exposure_warnings(exposed) == [
        "route port-7000 listens on 0.0.0.0:7000, beyond loopback, in front of localhost:8000 (loopback only), "
        'and nothing controls who connects: set gate = "token", tls_client_ca (client certificates) or allow'
    ]
    # Loopback listeners, and upstreams that are reachable anyway, are no exposure.
    assert exposure_warnings(build_config(forwards=("7000:localhost:8000",))) == []
    assert exposure_warnings(build_config(forwards=("0.0.0.0:7000:10.1.2.3:8000",))) == []
    allowed = build_config(
        {"route": [{"listen": "0.0.0.0:7000", "upstream": "127.0.0.1:8000", "allow": ["10.0.0.0/8", "::1"]}]}
    )
    assert exposure_warnings(allowed) == []
    assert exposure_notices(allowed) == ["route port-7000 is protected by allow 10.0.0.0/8, ::1/128"]


def test_the_shipped_config_warns_of_nothing_its_routes_say_what_protects_them() -> None:
    """deploy/sidecar.toml (what the systemd unit reads): the Inspector's proxy is
    protected by the Inspector's own token (protected_by), the page by the gate."""
    from mcp_sidecar.config.parse import load_config_file

    from ..conftest import ROOT

    shipped = build_config(load_config_file(str(ROOT / "deploy" / "sidecar.toml")), from_file=True)
    assert exposure_warnings(shipped) == []
    assert exposure_notices(shipped) == [
        "route inspector-ui is protected by the access gate (token)",
        "route inspector-proxy is protected by the Inspector's own session token (MCP_PROXY_AUTH_TOKEN)",
    ]
    bad = {"route": [{"listen": "0.0.0.0:7000", "upstream": "127.0.0.1:8000", "protected_by": "x" * 201}]}
    with pytest.raises(ConfigError, match=r"route\[1\]\.protected_by"):
        build_config(bad)


def test_server_only_tls_is_not_access_control(tmp_path) -> None:
    from ..conftest import make_tls_files

    files = make_tls_files(tmp_path)
    route = {
        "listen": "0.0.0.0:7000",
        "upstream": "127.0.0.1:8000",
        "tls_cert": str(files.cert),
        "tls_key": str(files.key),
    }
    tls_only = build_config({"route": [route]})
    assert exposure_warnings(tls_only) == [
        "route port-7000 listens on 0.0.0.0:7000, beyond loopback, in front of 127.0.0.1:8000 (loopback only), and "
        'nothing controls who connects; its TLS encrypts the way but lets anyone in: set gate = "token", '
        "tls_client_ca (client certificates) or allow"
    ]
    assert exposure_notices(tls_only) == []
    mutual = build_config({"route": [{**route, "tls_client_ca": str(files.ca_file)}]})
    assert exposure_warnings(mutual) == []
    assert exposure_notices(mutual) == ["route port-7000 is protected by TLS with client certificates"]
    gated = build_config({"route": [{**route, "gate": "token"}]})
    assert exposure_notices(gated) == ["route port-7000 is protected by TLS, the access gate (token)"]


def test_expose_option_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"proxy.dangerously_expose_unprotected: expected true or false"):
        build_config({"proxy": {"dangerously_expose_unprotected": "yes"}})


def test_forwards_replace_default_profile() -> None:
    config = build_config(forwards=("7000:localhost:8000", "[::1]:7001:[::1]:8001"))
    assert config.profile is None
    assert [r.name for r in config.routes] == ["port-7000", "port-7001"]
    assert config.routes[1].listen == (HostPort("::1", 7001),)


def test_file_routes_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.toml"
    path.write_text(
        """
[proxy]
drain_timeout = "10s"

[defaults]
connect_timeout = "250ms"
idle_timeout = 600

[[route]]
name = "ui"
listen = ["0.0.0.0:6274", "[::]:6274"]
upstream = "localhost:6274"
max_connections = 10

[[route]]
listen = "127.0.0.1:7000"
upstream = "[::1]:8000"
idle_timeout = "0"
"""
    )
    config = load_config(path)
    ui, second = config.routes
    assert config.drain_timeout_s == 10.0
    assert config.observe_cpu_share == DEFAULT_OBSERVE_CPU_SHARE
    assert ui.listen == (HostPort("0.0.0.0", 6274), HostPort("::", 6274))
    assert ui.settings.connect_timeout_s == 0.25
    assert ui.settings.idle_timeout_s == 600
    assert ui.settings.max_connections == 10
    assert ui.settings.connect_retry_window_s == DEFAULT_CONNECT_RETRY_WINDOW_S
    assert second.name == "port-7000"
    assert second.settings.idle_timeout_s == 0
    assert second.settings.buffer_bytes == DEFAULT_BUFFER_BYTES


@pytest.mark.parametrize(
    "document, field, message",
    [
        ({"route": [{"listen": "1.2.3.4:1"}]}, "route[1].upstream", "missing (required)"),
        ({"route": [{"listen": "x:1", "upstream": "nohost"}]}, "route[1].upstream", 'expected "HOST:PORT"'),
        ({"route": [{"listen": "x:1", "upstream": "h:1", "idle": 5}]}, "route[1].idle", "unknown key"),
        (
            {"route": [{"listen": "x:1", "upstream": "h:1", "connect_timeout": "5 parsecs"}]},
            "route[1].connect_timeout",
            "expected a duration",
        ),
        (
            {"route": [{"listen": "x:1", "upstream": "h:1", "connect_timeout": 0}]},
            "route[1].connect_timeout",
            "must be greater than 0",
        ),
        (
            {"route": [{"listen": "x:1", "upstream": "h:1", "max_connections": 0}]},
            "route[1].max_connections",
            "must be in 1..1000000",
        ),
        (
            {"route": [{"listen": "x:1", "upstream": "h:1", "max_connections": "9"}]},
            "route[1].max_connections",
            "expected an integer",
        ),
        ({"route": [{"listen": "x:1", "upstream": "h:1", "name": "has space"}]}, "route[1].name", "must be 1-64"),
        (
            {"route": [{"listen": "x:1", "upstream": "h:1"}, {"listen": "x:1", "upstream": "h:2"}]},
            "route[2].listen",
            "x:1 is already used by route[1]",
        ),
        (
            {
                "route": [
                    {"name": "a", "listen": "x:1", "upstream": "h:1"},
                    {"name": "a", "listen": "x:2", "upstream": "h:2"},
                ]
            },
            "route[2].name",
            "duplicate route name 'a'",
        ),
        ({"defaults": {"buffer_size": 10}}, "defaults.buffer_size", "must be in 4096..16777216"),
        ({"proxy": {"drain_timeout": -1}}, "proxy.drain_timeout", "must be a finite number >= 0"),
        ({"proxy": {"drain": 1}}, "proxy.drain", "unknown key"),
        ({"proxy": {"observe_cpu_share": 0}}, "proxy.observe_cpu_share", "greater than 0 and at most 1"),
        ({"proxy": {"observe_cpu_share": "20%"}}, "proxy.observe_cpu_share", "expected a fraction of a CPU core"),
        ({"routes": []}, "routes", "unknown key"),
        ({"route": {"listen": "x:1"}}, "route", "expected [[route]] tables"),
        ({"route": [{"listen": [], "upstream": "h:1"}]}, "route[1].listen", "needs at least one address"),
        ({"route": [{"listen": "x:1", "upstream": "@nonloopback:1"}]}, "route[1].upstream", "only valid in listen"),
    ],
)
def test_errors_name_source_field_and_fault(document, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(document, source="sidecar.toml")
    assert info.value.field == field
    assert message in info.value.message
    assert str(info.value) == f"sidecar.toml: {field}: {info.value.message}"


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[route]\nname=")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML: .*line 1"):
        load_config(bad)


def test_bad_forward_and_profile() -> None:
    with pytest.raises(ConfigError, match=r"--forward: 7000:host: expected"):
        build_config(forwards=("7000:host",))
    with pytest.raises(ConfigError, match="unknown profile 'inspector-v9'"):
        build_config(profile="inspector-v9")


@pytest.mark.parametrize(
    "value, seconds",
    [(5, 5.0), (0.25, 0.25), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0), ("0", 0.0), ("1.5s", 1.5)],
)
def test_durations(value, seconds: float) -> None:
    assert parse_duration(value) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("value", [True, "5 min", "-1s", float("inf"), "s", None])
def test_bad_durations(value) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_render_round_trips_with_defaults_filled(tmp_path: Path) -> None:
    original = build_config(
        {
            "defaults": {"idle_timeout": "90s"},
            "route": [
                {"name": "a", "listen": ["127.0.0.1:1", "[::1]:1"], "upstream": "localhost:2", "buffer_size": 65536}
            ],
        },
        forwards=("9000:[::1]:9001",),
    )
    text = render_toml(original)
    document = tomllib.loads(text)
    assert document["route"][0]["connect_timeout"] == "5s"  # defaults are explicit
    again = build_config(document, source="rendered")
    assert again.routes == original.routes
    assert again.drain_timeout_s == original.drain_timeout_s


def test_render_round_trips_the_otel_settings_without_their_headers() -> None:
    route = {"name": "a", "listen": "127.0.0.1:1", "upstream": "127.0.0.1:2"}
    for otel in (
        {"endpoint": "http://c:4318", "headers": "x-key=SECRET1", "notifications": True, "metrics": True},
        {"metrics": True, "metrics_endpoint": "http://m:4318/v1/metrics", "metrics_interval": "15s"},
    ):
        original = build_config({"otel": otel, "route": [route]})
        text = render_toml(original)
        assert "SECRET1" not in text
        again = build_config(tomllib.loads(text), source="rendered")
        assert dataclasses.replace(again.otel, headers=(), metrics_headers=()) == dataclasses.replace(
            original.otel, headers=(), metrics_headers=()
        )


def test_forwards_on_one_port_get_distinct_names_and_can_be_named() -> None:
    config = build_config(
        forwards=(
            "[::1]:7000:[::1]:8000",
            "127.0.0.1:7000:localhost:8000",
            "ui=7001:localhost:3000",
            "127.0.0.2:7000:localhost:8000",
        )
    )
    assert [r.name for r in config.routes] == ["port-7000", "port-7000-2", "ui", "port-7000-3"]
    assert config.routes[2].listen[0].port == 7001 and str(config.routes[2].upstream) == "localhost:3000"
    with pytest.raises(ConfigError, match=r"route\[1\].name: must be 1-64 characters"):
        build_config(forwards=("bad name=7000:localhost:8000",))
    with pytest.raises(ConfigError, match=r"duplicate route name 'ui'"):
        build_config(forwards=("ui=7000:localhost:8000", "ui=7001:localhost:8001"))


def test_tls_and_access_settings_are_validated_naming_the_field(tmp_path) -> None:
    from ..conftest import make_tls_files

    files = make_tls_files(tmp_path)
    route = {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
    ok = build_config({"route": [{**route, "tls_cert": str(files.cert), "tls_key": str(files.key)}]})
    assert ok.routes[0].settings.tls.cert == str(files.cert)
    cases = [
        ({"tls_cert": str(files.cert)}, r"route\[1\]\.tls_key: missing: tls_cert and tls_key go together"),
        (
            {"tls_cert": str(tmp_path / "nope.pem"), "tls_key": str(files.key)},
            r"route\[1\]\.tls_cert: cannot read " + str(tmp_path / "nope.pem") + ": file not found",
        ),
        ({"tls_cert": str(files.ca_file), "tls_key": str(files.key)}, r"route\[1\]\.tls_(cert|key): cannot load"),
        ({"tls_client_ca": str(files.ca_file)}, r"route\[1\]\.tls_client_ca: needs tls_cert and tls_key"),
        ({"upstream_tls_ca": str(files.ca_file)}, r"route\[1\]\.upstream_tls_ca: needs upstream_tls = true"),
        ({"upstream_tls": True, "upstream_tls_ca": str(files.key)}, r"route\[1\]\.upstream_tls_ca: cannot load"),
        ({"allow": ["10.0.0.0/8", "nonsense"]}, r"route\[1\]\.allow: 'nonsense' is not an IP address or network"),
        ({"allow": []}, r"route\[1\]\.allow: expected at least one"),
        ({"gate": "password"}, r"route\[1\]\.gate: expected one of 'off', 'token'"),
        ({"gate": "token", "gate_token": "short"}, r"route\[1\]\.gate_token: must be a string of at least 16"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_config({"route": [{**route, **extra}]})


def test_gate_tokens_come_from_the_config_the_environment_or_are_generated(monkeypatch) -> None:
    from mcp_sidecar.config.parse import Environment

    route = {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "gate": "token"}
    monkeypatch.setenv("MCP_SIDECAR_GATE_TOKEN", "the-process-environment-is-never-read")
    generated = build_config({"route": [route, {**route, "listen": "127.0.0.1:2"}]}).routes
    gate = generated[0].settings.gate
    assert gate.token_source == "generated" and len(gate.token) >= 32
    assert generated[1].settings.gate.token == gate.token  # one token for every gated route of a config
    # A reload (the same process: the caller passes its token back) keeps it; it is never rendered.
    process = Environment(generated_gate_token=gate.token)
    assert build_config({"route": [route]}, environment=process).routes[0].settings.gate.token == gate.token
    assert gate.token not in render_toml(build_config({"route": [route]}, environment=process))
    assert gate.token not in repr(generated[0].settings)
    from_env = (
        build_config(
            {"route": [route]},
            environment=Environment({"MCP_SIDECAR_GATE_TOKEN": "from-the-environment-123"}, "generated-but-unused-123"),
        )
        .routes[0]
        .settings.gate
    )
    assert (from_env.token, from_env.token_source) == ("from-the-environment-123", "env")
    explicit = build_config({"route": [{**route, "gate_token": "written-in-the-file-123"}]}).routes[0].settings.gate
    assert (explicit.token, explicit.token_source) == ("written-in-the-file-123", "config")
    with pytest.raises(ConfigError, match=r"^\$MCP_SIDECAR_GATE_TOKEN: must be a string of at least 16"):
        build_config({"route": [route]}, environment=Environment({"MCP_SIDECAR_GATE_TOKEN": "short"}))
