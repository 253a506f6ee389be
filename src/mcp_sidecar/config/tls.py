"""TLS contexts from a route's settings: built to validate, built again to serve.

Rules this module keeps:

* TLS 1.2 or newer, both ways; the standard library's default ciphers.
* Towards clients: the route's certificate chain and key; with
  ``tls_client_ca`` a client certificate signed by it is required (mutual
  TLS).  HTTP routes offer ALPN ``http/1.1`` (the bytes are HTTP/1.1: a
  client must not pick h2); ``tcp`` routes offer nothing.
* Towards the upstream: verified (the CA file, else the system's trust
  store) for ``upstream_tls_name``, else the upstream's host; verification
  off only when ``upstream_tls_verify = false`` says so.
* Files are read when the context is built: at config validation (so a bad
  file is a config error naming its field) and again in each worker, so a
  ``reload`` picks up renewed certificates.
* ``TlsSettingsError`` names the setting at fault; ``config/parse.py`` turns
  it into a ``ConfigError`` with the route's prefix.
"""

from __future__ import annotations

import ssl

from ..errors import SidecarError
from .model import RouteSettings

ALPN_HTTP = ["http/1.1"]


class TlsSettingsError(SidecarError):
    """A TLS setting that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, ssl.SSLError):
        return f"not usable: {exc.reason or exc}".replace("_", " ").lower()
    return str(exc)


def server_context(settings: RouteSettings) -> ssl.SSLContext | None:
    """The context that terminates TLS for clients, or None (clear text)."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise TlsSettingsError("tls_client_ca", "needs tls_cert and tls_key (mutual TLS is TLS)")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        missing = "tls_cert" if settings.tls_cert is None else "tls_key"
        raise TlsSettingsError(missing, "missing: tls_cert and tls_key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        # Which file: the key fails with "key values mismatch" or a PEM error naming it.
        field = "tls_key" if "key" in str(exc).lower() and "certificate" not in str(exc).lower() else "tls_cert"
        raise TlsSettingsError(field, f"cannot load the certificate chain and key: {_reason(exc)}") from None
    if settings.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSettingsError("tls_client_ca", f"cannot load the CA: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    if settings.protocol != "tcp":
        context.set_alpn_protocols(ALPN_HTTP)
    return context


def client_context(settings: RouteSettings) -> ssl.SSLContext | None:
    """The context for connecting to the upstream, or None (clear text)."""
    if not settings.upstream_tls:
        for field in ("upstream_tls_ca", "upstream_tls_name"):
            if getattr(settings, field) is not None:
                raise TlsSettingsError(field, "needs upstream_tls = true")
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.upstream_tls_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.upstream_tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSettingsError("upstream_tls_ca", f"cannot load the CA: {_reason(exc)}") from None
    if not settings.upstream_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.protocol != "tcp":
        context.set_alpn_protocols(ALPN_HTTP)
    return context
