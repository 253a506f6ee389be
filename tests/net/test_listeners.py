from __future__ import annotations

import errno
import ipaddress
import os
import socket

import pytest

from mcp_sidecar.config.addresses import HostPort, parse_forward
from mcp_sidecar.config.parse import build_config
from mcp_sidecar.errors import BindError
from mcp_sidecar.net.listeners import _explain, bind_all, expand_listen_host
from mcp_sidecar.net.netinfo import listeners_on_port, nonloopback_addresses

from ..conftest import free_port, ipv6_loopback_available


def test_nonloopback_addresses_exclude_loopback_and_link_local() -> None:
    for addr in nonloopback_addresses():
        ip = ipaddress.ip_address(addr)
        assert not ip.is_loopback and not ip.is_link_local and not ip.is_unspecified


def test_listeners_on_port_names_this_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = listeners_on_port(port)
    assert [(item.address, item.pid) for item in found] == [("127.0.0.1", os.getpid())]
    assert found[0].describe().startswith(f"pid {os.getpid()} (")
    assert found[0].describe().endswith(f"listening on 127.0.0.1:{port}")


def test_busy_port_names_address_route_and_owner() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        config = build_config({"route": [{"name": "ui", "listen": f"127.0.0.1:{port}", "upstream": "h:1"}]})
        with pytest.raises(BindError) as info:
            bind_all(config)
    message = str(info.value)
    assert message.startswith(
        f"cannot listen on 127.0.0.1:{port} (route ui): address already in use by pid {os.getpid()}"
    )


def test_wildcard_colliding_with_loopback_upstream_explains_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        config = build_config(forwards=(f"0.0.0.0:{port}:localhost:{port}",))
        try:
            listeners = bind_all(config)
        except BindError as exc:
            assert f"listening on 127.0.0.1:{port}" in str(exc)
            assert f"listen on @nonloopback:{port}" in str(exc)
        else:  # some kernels allow the wildcard beside a loopback listener
            for item in listeners:
                item.close()
            pytest.skip("this kernel lets 0.0.0.0 and 127.0.0.1 listen on the same port")


def test_nothing_half_started_when_a_later_route_fails() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        config = build_config(forwards=(f"127.0.0.1:{free}:h:1", f"127.0.0.1:{busy_port}:h:1"))
        with pytest.raises(BindError):
            bind_all(config)
    # The first route's socket was closed again: its port can be bound.
    with socket.socket() as again:
        again.bind(("127.0.0.1", free))


def test_privileged_port_message() -> None:
    route = build_config(forwards=("80:h:1",)).routes[0]
    error = _explain(OSError(errno.EACCES, "Permission denied"), HostPort("0.0.0.0", 80), f"route {route.name}")
    assert str(error).startswith("cannot listen on 0.0.0.0:80 (route port-80): permission denied: ports below")
    assert "CAP_NET_BIND_SERVICE" in str(error)


def test_address_not_on_host_message() -> None:
    config = build_config(forwards=("192.0.2.250:0:h:1",))  # TEST-NET-1, not configured here
    try:
        listeners = bind_all(config)
    except BindError as exc:
        assert str(exc) == "cannot listen on 192.0.2.250:0 (route route-1): address not available on this host"
    else:
        for item in listeners:
            item.close()
        pytest.skip("192.0.2.250 is configured on this host")


def test_expand_names_and_literals() -> None:
    assert expand_listen_host("::1", 1) == ["::1"]
    assert "127.0.0.1" in expand_listen_host("localhost", 1)
    with pytest.raises(BindError, match=r"cannot resolve 'no-such-host\.invalid'"):
        expand_listen_host("no-such-host.invalid", 1)


def test_every_interface_listens_on_both_families_on_one_port() -> None:
    """``*:PORT`` (and ``--forward '*:PORT:...'``): 0.0.0.0 and [::] as ssh -L does, one
    port even when it is 0; an IPv6 client and an IPv4 client both reach it."""
    assert ipv6_loopback_available(), "the suite needs IPv6 on loopback (CI has it)"
    spec = parse_forward("*:0:127.0.0.1:9")
    config = build_config({"route": [{"name": "r", "listen": str(spec.listen), "upstream": "127.0.0.1:9"}]})
    listeners = bind_all(config)
    try:
        assert sorted(item.address.host for item in listeners) == ["0.0.0.0", "::"]
        (port,) = {item.address.port for item in listeners}
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                client.connect((host, port))  # (accepted by the kernel into that socket's backlog)
    finally:
        for item in listeners:
            item.close()


def test_an_ipv6_wildcard_takes_both_families_unless_ipv4_has_its_own() -> None:
    """``[::]:PORT`` is one dual-stack socket (an IPv4 client reaches it too, as
    Linux, Node and Go do by default); listed beside ``0.0.0.0:PORT`` each
    family keeps its own socket, and both bind."""
    assert ipv6_loopback_available(), "the suite needs IPv6 on loopback (CI has it)"
    alone = build_config({"route": [{"name": "r", "listen": "[::]:0", "upstream": "127.0.0.1:9"}]})
    (listener,) = bind_all(alone)
    try:
        assert listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                client.connect((host, listener.address.port))
    finally:
        listener.close()
    port = free_port()
    both = build_config(
        {
            "route": [
                {"name": "v4", "listen": f"0.0.0.0:{port}", "upstream": "127.0.0.1:9"},
                {"name": "v6", "listen": f"[::]:{port}", "upstream": "127.0.0.1:9"},
            ]
        }
    )
    listeners = bind_all(both)  # (a dual-stack [::] would take the port from 0.0.0.0)
    try:
        v6 = next(item for item in listeners if item.route.name == "v6")
        assert v6.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for item in listeners:
            item.close()
