"""Fault injection's bookkeeping, sans-io: the specs as the configuration,
the API and the CLI give them, and the book that matches, rolls, counts and
expires them (on trio's MockClock where time matters)."""

from __future__ import annotations

import math
import random

import pytest
import trio

from mcp_sidecar.config.faults import FaultError, FaultKind, parse_fault
from mcp_sidecar.config.parse import build_config
from mcp_sidecar.errors import ConfigError
from mcp_sidecar.faults.book import FaultBook


def spec(**table):
    return parse_fault({"route": "r", **table})


def config_with(faults, enabled=True):
    document = {"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9", "fault": faults}]}
    if enabled is not None:
        document["faults"] = {"enabled": enabled}
    return build_config(document)


def test_specs_read_the_same_from_every_way_in() -> None:
    latency = spec(kind="latency", latency="100ms", jitter="10ms", direction="upstream", ttl="10m")
    assert (latency.latency_s, latency.jitter_s, latency.direction, latency.ttl_s) == (0.1, 0.01, "upstream", 600.0)
    assert latency.describe() == "latency 100ms +-10ms upstream"
    assert parse_fault(latency.as_json()) == latency  # what the API shows can be posted back
    error = spec(kind="error", method="tools/call", target="search*", code=-32603, probability=0.2)
    assert error.describe() == "error -32603 tools/call search* p=0.2"
    configured = config_with([{"kind": "error", "method": "tools/call", "target": "search*", "probability": 0.2}])
    assert configured.routes[0].faults[0].name == "error-1"
    assert configured.routes[0].faults[0].probability == 0.2


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ({"kind": "latncy"}, "kind", "did you mean latency?"),
        ({"kind": "latency"}, "latency", "missing (a latency fault needs it)"),
        ({"kind": "latency", "latency": "1s", "code": 1}, "code", "not a setting of latency"),
        ({"kind": "error", "method": "ping", "target": "x"}, "target", "only tools/call, prompts/get"),
        ({"kind": "bandwidth", "rate": 0}, "rate", "must be greater than 0"),
        ({"kind": "latency", "latency": "2h"}, "latency", "at most 3600s"),
        ({"kind": "delay", "delay": "1s", "probability": 1.5}, "probability", "at most 1"),
        ({"kind": "http_status", "status": 404, "retry_after": 5}, "retry_after", "only with status 429 or 503"),
        ({"kind": "slicer", "average_size": 10, "size_variation": 10}, "size_variation", "smaller than average"),
    ],
)
def test_a_bad_fault_names_its_field(table, field, words) -> None:
    with pytest.raises(FaultError) as caught:
        spec(**table)
    assert caught.value.key == field and words in str(caught.value)
    with pytest.raises(ConfigError) as config_error:
        config_with([table])
    assert f"route[1].fault[1].{field}:" in str(config_error.value)


def test_faults_in_the_configuration_need_faults_enabled() -> None:
    for enabled in (None, False):
        with pytest.raises(ConfigError) as caught:
            config_with([{"kind": "down"}], enabled=enabled)
        assert str(caught.value).endswith(
            "route[1].fault: fault injection is off: set [faults] enabled = true to use it"
        )
    with pytest.raises(ConfigError, match=r"route\[1\].fault\[2\].name: duplicate fault name 'x'"):
        config_with([{"kind": "down", "name": "x"}, {"kind": "drop", "name": "x"}])


def test_mcp_faults_match_by_method_target_and_client() -> None:
    book = FaultBook("r", random.Random(1))
    book.add(spec(kind="error", name="e", method="tools/call", target="search*", client="10.0.0.*"), 0.0)
    book.add(spec(kind="delay", name="d", method="prompts/*", delay="1s"), 0.0)
    assert book.mcp_fault(1.0, "tools/call", "search_docs", "10.0.0.7:5000").spec.name == "e"
    assert book.mcp_fault(1.0, "tools/call", "search_docs", "10.0.1.7:5000") is None  # another client
    assert book.mcp_fault(1.0, "tools/call", "fetch", "10.0.0.7:5000") is None  # another tool
    assert book.mcp_fault(1.0, "prompts/get", "greet", "x").spec.name == "d"
    assert book.mcp_fault(1.0, "tools/list", None, "x") is None
    assert book.injected == {"error": 1, "delay": 1}


def test_count_stops_a_fault_after_its_first_injections() -> None:
    book = FaultBook("r", random.Random(1))
    book.add(spec(kind="drop", name="d", count=3), 0.0)
    hits = [book.mcp_fault(float(i), "tools/call", "t", "c") is not None for i in range(6)]
    assert hits == [True, True, True, False, False, False]
    assert book.active(10.0) == []  # gone, not listed as spent
    assert book.spent == set()  # (a runtime fault: nothing to keep from coming back)


async def test_a_spent_configured_fault_does_not_come_back_with_the_next_message() -> None:
    from mcp_sidecar.forward import faultcontrol
    from mcp_sidecar.forward.proxy import Proxy

    config = config_with([{"kind": "down", "name": "once", "count": 1}])
    proxy = Proxy(config, [])
    book = proxy.routes[0].faults
    assert book is not None and book.refuse_connection(0.0) is not None
    assert book.active(0.0) == [] and book.spent == {"once"}
    faultcontrol.apply_runtime(proxy.routes, (), ())  # the supervisor's next message
    assert book.active(0.0) == []  # not installed again (a reload would)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_probability_holds_over_a_thousand_matches(seed: int) -> None:
    """probability 0.2 over 1000 matches: within the binomial 99 % interval
    (mean 200, +-2.576 standard deviations)."""
    book = FaultBook("r", random.Random(seed))
    book.add(spec(kind="error", name="e", probability=0.2), 0.0)
    hits = sum(book.mcp_fault(0.0, "tools/call", "t", "c") is not None for _ in range(1000))
    half_width = 2.576 * math.sqrt(1000 * 0.2 * 0.8)
    assert 200 - half_width <= hits <= 200 + half_width, hits
    tcp = FaultBook("r", random.Random(seed))
    tcp.add(spec(kind="latency", latency="1ms", probability=0.2), 0.0)
    chosen = sum(bool(tcp.connection_faults(0.0)) for _ in range(1000))  # per connection, as Toxiproxy's toxicity
    assert 200 - half_width <= chosen <= 200 + half_width, chosen


async def test_ttl_expires_on_the_clock(autojump_clock) -> None:
    book = FaultBook("r", random.Random(1))
    book.add(spec(kind="down", name="gone-soon", ttl="10m"), trio.current_time())
    book.add(spec(kind="drop", name="kept"), trio.current_time())
    await trio.sleep(599)
    assert [f.spec.name for f in book.active(trio.current_time())] == ["gone-soon", "kept"]
    assert book.as_json(trio.current_time())[0]["expires_in_s"] == 1.0
    await trio.sleep(1)
    assert [f.spec.name for f in book.active(trio.current_time())] == ["kept"]
    assert book.refuse_connection(trio.current_time()) is None  # the route is up again


def test_tcp_faults_are_chosen_per_connection_and_down_refuses() -> None:
    book = FaultBook("r", random.Random(1))
    book.add(spec(kind="latency", name="l", latency="5ms"), 0.0)
    book.add(spec(kind="down", name="d", count=1), 0.0)
    assert [f.spec.name for f in book.connection_faults(0.0)] == ["l"]  # (down is not a connection's fault)
    assert book.refuse_connection(0.0).spec.name == "d"
    assert book.refuse_connection(0.0) is None  # count 1: the next connection is served
    assert book.injected == {"latency": 1, "down": 1}
    assert FaultKind.DOWN not in {f.spec.kind for f in book.active(0.0)}


def test_config_show_writes_faults_that_read_back_the_same() -> None:
    import tomllib

    from mcp_sidecar.config.render import render_toml

    config = config_with(
        [
            {"kind": "latency", "latency": "100ms", "jitter": "10ms", "ttl": "10m"},
            {"kind": "http_status", "name": "busy", "status": 429, "retry_after": 5, "count": 3},
        ]
    )
    text = render_toml(config)
    assert "[faults]\nenabled = true\n" in text and 'latency = "100ms"' in text and 'ttl = "600s"' in text
    again = build_config(tomllib.loads(text))
    assert again.routes[0].faults == config.routes[0].faults
