"""Certificates read once when the configuration loads: their validity, and warnings before they expire."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import trio
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.config.certinfo import not_after
from mcp_sidecar.config.parse import build_config
from mcp_sidecar.net.http import request

from ..conftest import run_proxyctl, start_proxy, write_config

_CA = trustme.CA(key_type=trustme.KeyType.ECDSA)
UTC = datetime.UTC


def _cert_files(directory: Path, expires: datetime.datetime) -> tuple[Path, Path]:
    issued = _CA.issue_cert("localhost", "127.0.0.1", not_after=expires, key_type=trustme.KeyType.ECDSA)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    return cert, key


@settings(max_examples=25, deadline=None)
@given(st.datetimes(min_value=datetime.datetime(2027, 1, 1), max_value=datetime.datetime(2120, 12, 31)))
def test_not_after_is_read_from_the_der_for_both_time_encodings(moment: datetime.datetime) -> None:
    moment = moment.replace(microsecond=0, tzinfo=UTC)  # UTCTime before 2050, GeneralizedTime from then on
    issued = _CA.issue_cert("localhost", not_after=moment, key_type=trustme.KeyType.ECDSA)
    chain = b"".join(p.bytes() for p in issued.cert_chain_pems)  # the leaf first, then the CA's
    assert not_after(chain) == moment.timestamp()


def test_not_after_gives_none_for_what_is_not_a_certificate() -> None:
    assert not_after(b"") is None
    assert not_after(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") is None
    assert not_after(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n") is None


def test_validate_warns_of_a_certificate_that_expires_soon_or_has_expired(tmp_path: Path) -> None:
    soon = datetime.datetime.now(UTC) + datetime.timedelta(days=3, hours=1)
    cert, key = _cert_files(tmp_path / "soon", soon)
    old_cert, old_key = _cert_files(tmp_path / "old", datetime.datetime(2020, 5, 6, 7, 8, tzinfo=UTC))
    fine_cert, fine_key = _cert_files(tmp_path / "fine", datetime.datetime.now(UTC) + datetime.timedelta(days=90))
    config = write_config(
        tmp_path / "c.toml",
        [
            {
                "name": "soon",
                "listen": "127.0.0.1:0",
                "upstream": "127.0.0.1:1",
                "tls_cert": str(cert),
                "tls_key": str(key),
            },
            {
                "name": "old",
                "listen": "127.0.0.1:0",
                "upstream": "127.0.0.1:1",
                "tls_cert": str(old_cert),
                "tls_key": str(old_key),
            },
            {
                "name": "fine",
                "listen": "127.0.0.1:0",
                "upstream": "127.0.0.1:1",
                "tls_cert": str(fine_cert),
                "tls_key": str(fine_key),
            },
        ],
    )
    result = run_proxyctl("config", "validate", str(config))
    assert result.returncode == 0 and result.stdout == f"{config}: ok (3 routes)\n"
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: route soon: the certificate in tls_cert ({cert}) expires in 3.0 days, on ")
    assert warnings[0].endswith(": renew it and reload")
    assert warnings[1] == (
        f"warning: route old: the certificate in tls_cert ({old_cert}) expired on "
        "2020-05-06 07:08 UTC: clients refuse it"
    )


async def test_status_and_metrics_show_each_tls_routes_expiry(nursery, tmp_path: Path) -> None:
    with trio.fail_after(20):
        expires = datetime.datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
        cert, key = _cert_files(tmp_path, expires)
        doc = {
            "route": [
                {
                    "name": "secure",
                    "listen": "127.0.0.1:0",
                    "upstream": "127.0.0.1:1",
                    "tls_cert": str(cert),
                    "tls_key": str(key),
                    "health_interval": 0,
                },
                {"name": "plain", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "health_interval": 0},
            ]
        }
        proxy = await start_proxy(nursery, doc, admin=True)
        reply = await request("127.0.0.1", proxy.admin_port, "/api/status")
        import json

        routes = {r["name"]: r for r in json.loads(reply.body)["routes"]}
        assert routes["secure"]["tls_cert_expires_unix"] == expires.timestamp()
        assert routes["plain"]["tls_cert_expires_unix"] is None
        metrics = (await request("127.0.0.1", proxy.admin_port, "/metrics")).body.decode()
        assert f'mcp_sidecar_tls_cert_expiry_timestamp_seconds{{route="secure"}} {expires.timestamp():.9e}' in metrics
        assert 'mcp_sidecar_tls_cert_expiry_timestamp_seconds{route="plain"}' not in metrics


def test_the_material_is_loaded_once_and_never_shown(tmp_path: Path) -> None:
    cert, key = _cert_files(tmp_path, datetime.datetime(2031, 1, 1, tzinfo=UTC))
    config = build_config(
        {"route": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "tls_cert": str(cert), "tls_key": str(key)}]}
    )
    route = config.routes[0]
    assert route.tls_material.key == key.read_bytes() and route.tls_material.cert_chain == cert.read_bytes()
    secret = key.read_bytes().decode()
    assert "PRIVATE" not in repr(config) and "PRIVATE" not in repr(route.tls_material)
    from mcp_sidecar.config.render import effective_document

    assert secret.splitlines()[1] not in str(effective_document(config))
    assert time.time() < route.tls_material.cert_not_after_unix
