from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_sidecar.config.addresses import AddressSyntaxError, HostPort, beyond_loopback, parse_forward, parse_hostport


@pytest.mark.parametrize(
    "host, beyond",
    [
        ("127.0.0.1", False),
        ("127.3.4.5", False),
        ("::1", False),
        ("localhost", False),
        ("LOCALHOST.", False),
        ("0.0.0.0", True),
        ("::", True),
        ("@nonloopback", True),
        ("192.0.2.7", True),
        ("fe80::1%eth0", True),
        ("inspector.example", True),
    ],
)
def test_beyond_loopback(host: str, beyond: bool) -> None:
    assert beyond_loopback(host) is beyond


@pytest.mark.parametrize(
    "text, expected",
    [
        ("localhost:6274", HostPort("localhost", 6274)),
        ("127.0.0.1:1", HostPort("127.0.0.1", 1)),
        ("[::1]:8000", HostPort("::1", 8000)),
        ("[fe80::1%eth0]:80", HostPort("fe80::1%eth0", 80)),
        ("@nonloopback:6277", HostPort("@nonloopback", 6277)),
    ],
)
def test_parse_hostport(text: str, expected: HostPort) -> None:
    assert parse_hostport(text) == expected
    assert parse_hostport(str(expected)) == expected  # str() round-trips


@pytest.mark.parametrize(
    "text, message",
    [
        ("localhost", 'expected "HOST:PORT"'),
        ("::1:80", "write IPv6 addresses in brackets"),
        ("[::1]80", "expected ':' after ']'"),
        ("[::1:80", "unclosed '['"),
        ("host:http", "port must be a number"),
        ("host:70000", "port must be in 1..65535"),
        ("host:0", "port must be in 1..65535"),
        (":80", "missing host"),
        ("[zz::1]:80", "invalid IPv6 address"),
    ],
)
def test_parse_hostport_errors(text: str, message: str) -> None:
    with pytest.raises(AddressSyntaxError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_hostport(text)


def test_listen_port_zero_only_when_allowed() -> None:
    assert parse_hostport("127.0.0.1:0", allow_zero_port=True).port == 0


@pytest.mark.parametrize(
    "spec, listen, upstream",
    [
        # As ssh -L: no bind address means loopback; "*" or an empty one, every interface.
        ("7000:localhost:8000", "127.0.0.1:7000", "localhost:8000"),
        (":7000:localhost:8000", "*:7000", "localhost:8000"),
        ("127.0.0.1:7000:localhost:8000", "127.0.0.1:7000", "localhost:8000"),
        ("[::1]:7000:[::1]:8000", "[::1]:7000", "[::1]:8000"),
        ("*:7000:10.1.2.3:8000", "*:7000", "10.1.2.3:8000"),  # (both families)
        ("0.0.0.0:7000:10.1.2.3:8000", "0.0.0.0:7000", "10.1.2.3:8000"),
        ("0:127.0.0.1:9", "127.0.0.1:0", "127.0.0.1:9"),
    ],
)
def test_parse_forward(spec: str, listen: str, upstream: str) -> None:
    fwd = parse_forward(spec)
    assert (str(fwd.listen), str(fwd.upstream)) == (listen, upstream)


@pytest.mark.parametrize("spec", ["7000", "7000:host", "a:b:c:d:e", "::1:7000:host:80", "7000:host:0"])
def test_parse_forward_errors(spec: str) -> None:
    with pytest.raises(AddressSyntaxError):
        parse_forward(spec)


@given(st.text(max_size=40))
def test_parsers_raise_only_address_errors(text: str) -> None:
    for parse in (parse_hostport, parse_forward):
        try:
            parse(text)
        except AddressSyntaxError:
            pass
