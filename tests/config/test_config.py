from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mcp_sidecar.config.addresses import HostPort
from mcp_sidecar.config.defaults import DEFAULT_BUFFER_BYTES, DEFAULT_CONNECT_RETRY_WINDOW_S, DEFAULT_OBSERVE_CPU_SHARE
from mcp_sidecar.config.parse import build_config, load_config
from mcp_sidecar.config.profiles import exposure_warnings
from mcp_sidecar.config.values import format_duration, parse_duration
from mcp_sidecar.config.render import render_toml
from mcp_sidecar.errors import ConfigError


def test_default_is_inspector_v1_on_nonloopback_addresses() -> None:
    config = build_config()
    assert config.profile == "inspector-v1"
    assert [(r.name, [str(a) for a in r.listen], str(r.upstream)) for r in config.routes] == [
        ("inspector-ui", ["@nonloopback:6274"], "localhost:6274"),
        ("inspector-proxy", ["@nonloopback:6277"], "localhost:6277"),
    ]


def test_inspector_v2_profile_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(profile="inspector-v2")
    assert err.value.exit_code == 2
    assert str(err.value) == (
        "--profile inspector-v2: refusing to listen beyond loopback (@nonloopback:6274, @nonloopback:6275): "
        "Inspector v2 serves its API token in its page to anyone who loads it, and that token runs commands on "
        "this host; reach it through an SSH tunnel to loopback "
        "(ssh -L 6274:localhost:6274 -L 6275:localhost:6275 THIS_HOST), "
        "or pass --dangerously-expose-unprotected on a trusted network"
    )


def test_inspector_v2_profile_exposed_on_explicit_request() -> None:
    config = build_config(profile="inspector-v2", dangerously_expose_unprotected=True)
    assert [(r.name, r.listen[0].port, r.upstream.port) for r in config.routes] == [
        ("inspector-ui", 6274, 6274),
        ("inspector-sandbox", 6275, 6275),
    ]
    assert config.dangerously_expose_unprotected
    assert exposure_warnings(config) == [
        f"route {name} listens beyond loopback without protection (--dangerously-expose-unprotected): "
        "Inspector v2 serves its API token in its page to anyone who loads it, and that token runs commands on "
        "this host" for name in ("inspector-ui", "inspector-sandbox")
    ]
    assert tomllib.loads(render_toml(config))["proxy"]["dangerously_expose_unprotected"] is True
    # The same from the [proxy] table of a file.
    from_file = build_config({"proxy": {"dangerously_expose_unprotected": True}}, profile="inspector-v2")
    assert exposure_warnings(from_file) == exposure_warnings(config)


def test_inspector_v1_profile_is_not_guarded() -> None:
    for expose in (False, True):
        config = build_config(profile="inspector-v1", dangerously_expose_unprotected=expose)
        assert [r.name for r in config.routes] == ["inspector-ui", "inspector-proxy"]
        assert exposure_warnings(config) == []
    assert exposure_warnings(build_config(forwards=("0.0.0.0:7000:localhost:8000",),
                                          dangerously_expose_unprotected=True)) == []


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
        ({"route": [{"listen": "x:1", "upstream": "h:1", "connect_timeout": "5 parsecs"}]},
         "route[1].connect_timeout", "expected a duration"),
        ({"route": [{"listen": "x:1", "upstream": "h:1", "connect_timeout": 0}]},
         "route[1].connect_timeout", "must be greater than 0"),
        ({"route": [{"listen": "x:1", "upstream": "h:1", "max_connections": 0}]},
         "route[1].max_connections", "must be in 1..1000000"),
        ({"route": [{"listen": "x:1", "upstream": "h:1", "max_connections": "9"}]},
         "route[1].max_connections", "expected an integer"),
        ({"route": [{"listen": "x:1", "upstream": "h:1", "name": "has space"}]}, "route[1].name", "must be 1-64"),
        ({"route": [{"listen": "x:1", "upstream": "h:1"}, {"listen": "x:1", "upstream": "h:2"}]},
         "route[2].listen", "x:1 is already used by route[1]"),
        ({"route": [{"name": "a", "listen": "x:1", "upstream": "h:1"}, {"name": "a", "listen": "x:2",
                                                                        "upstream": "h:2"}]},
         "route[2].name", "duplicate route name 'a'"),
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
    with pytest.raises(ConfigError, match="missing.toml: file not found"):
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


@pytest.mark.parametrize("value, seconds", [(5, 5.0), (0.25, 0.25), ("250ms", 0.25), ("2m", 120.0),
                                            ("1h", 3600.0), ("0", 0.0), ("1.5s", 1.5)])
def test_durations(value, seconds: float) -> None:
    assert parse_duration(value) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("value", [True, "5 min", "-1s", float("inf"), "s", None])
def test_bad_durations(value) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_render_round_trips_with_defaults_filled(tmp_path: Path) -> None:
    original = build_config(
        {"defaults": {"idle_timeout": "90s"},
         "route": [{"name": "a", "listen": ["127.0.0.1:1", "[::1]:1"], "upstream": "localhost:2",
                    "buffer_size": 65536}]},
        forwards=("9000:[::1]:9001",),
    )
    text = render_toml(original)
    document = tomllib.loads(text)
    assert document["route"][0]["connect_timeout"] == "5s"  # defaults are explicit
    again = build_config(document, source="rendered")
    assert again.routes == original.routes
    assert again.drain_timeout_s == original.drain_timeout_s


def test_forwards_on_one_port_get_distinct_names_and_can_be_named() -> None:
    config = build_config(forwards=("[::1]:7000:[::1]:8000", "127.0.0.1:7000:localhost:8000", "ui=7001:localhost:3000",
                                    "127.0.0.2:7000:localhost:8000"))
    assert [r.name for r in config.routes] == ["port-7000", "port-7000-2", "ui", "port-7000-3"]
    assert config.routes[2].listen[0].port == 7001 and str(config.routes[2].upstream) == "localhost:3000"
    with pytest.raises(ConfigError, match=r"route\[1\].name: must be 1-64 characters"):
        build_config(forwards=("bad name=7000:localhost:8000",))
    with pytest.raises(ConfigError, match=r"duplicate route name 'ui'"):
        build_config(forwards=("ui=7000:localhost:8000", "ui=7001:localhost:8001"))
