"""TLS contexts from a route's settings: the files read once, the contexts built from their bytes.

Rules this module keeps:

* TLS 1.2 or newer, both ways; the standard library's default ciphers.
* Towards clients: the route's certificate chain and key; with
  ``tls_client_ca`` a client certificate signed by it is required (mutual
  TLS).  HTTP routes offer ALPN ``http/1.1`` (the bytes are HTTP/1.1: a
  client must not pick h2); ``tcp`` routes offer nothing.
* Towards the upstream: verified (the CA file, else the system's trust
  store) for ``upstream_tls_name``, else the upstream's host; verification
  off only when ``upstream_tls_verify = false`` says so.
* Files are read once, when the configuration is loaded (``load_material``:
  a bad file is a config error naming its field, and the contexts are built
  from the bytes to prove them usable); workers build their contexts from
  those bytes (``TlsMaterial``), never from the files.  So a ``reload``
  picks up renewed certificates (it loads again), and a worker replaced
  after a certificate file broke on disk starts with what loaded last.
* ``TlsSettingsError`` names the setting at fault; ``config/parse.py`` turns
  it into a ``ConfigError`` with the route's prefix.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from pathlib import Path

from ..errors import SidecarError
from .certinfo import not_after
from .model import ProxyConfig, RouteSettings, TlsMaterial

ALPN_HTTP = ["http/1.1"]
#: A certificate that expires within this is warned about (config validate,
#: start, reload); the alert rule fires at the same horizon.
CERT_EXPIRY_WARNING_S = 14 * 86400.0


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
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, ssl.SSLError):
        return f"not usable: {exc.reason or exc}".replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


def _read(path: str | None, field: str) -> bytes | None:
    """The file of the setting ``field`` (its TOML name, for the error)."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsSettingsError(field, f"cannot read {path}: {_reason(exc)}") from None


def load_material(settings: RouteSettings) -> TlsMaterial:
    """Read the route's TLS files and prove them usable (both contexts are
    built from the bytes); raises ``TlsSettingsError`` naming the field."""
    if settings.tls.cert is None and settings.tls.key is None:
        if settings.tls.client_ca is not None:
            raise TlsSettingsError("tls_client_ca", "needs tls_cert and tls_key (mutual TLS is TLS)")
    elif settings.tls.cert is None or settings.tls.key is None:
        missing = "tls_cert" if settings.tls.cert is None else "tls_key"
        raise TlsSettingsError(missing, "missing: tls_cert and tls_key go together")
    upstream = settings.upstream_tls
    if not upstream.enabled:
        for field, value in (("upstream_tls_ca", upstream.ca), ("upstream_tls_name", upstream.name)):
            if value is not None:
                raise TlsSettingsError(field, "needs upstream_tls = true")
    tls = settings.tls
    chain = _read(tls.cert, "tls_cert")
    material = TlsMaterial(
        cert_chain=chain,
        key=_read(tls.key, "tls_key"),
        client_ca=_read(tls.client_ca, "tls_client_ca"),
        upstream_ca=_read(upstream.ca, "upstream_tls_ca") if upstream.enabled else None,
        cert_not_after_unix=not_after(chain) if chain is not None else None,
    )
    server_context(settings, material)
    client_context(settings, material)
    return material


def _load_chain(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    """``load_cert_chain`` from bytes: OpenSSL reads files, so the bytes are
    handed over as anonymous memory files (``memfd``), never written to disk;
    a private temporary directory where memfd is missing."""
    fds: list[int] = []
    try:
        try:
            for data in (chain, key):
                fd = os.memfd_create("mcp-sidecar-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                _write_all(fd, data)
            context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
            return
        except (AttributeError, FileNotFoundError, PermissionError):
            pass  # no memfd, or no /proc: the fallback below
    finally:
        for fd in fds:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="mcp-sidecar-tls-") as directory:  # 0700
        paths = []
        for name, data in (("chain.pem", chain), ("key.pem", key)):
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def server_context(settings: RouteSettings, material: TlsMaterial) -> ssl.SSLContext | None:
    """The context that terminates TLS for clients, or None (clear text)."""
    if material.cert_chain is None or material.key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        _load_chain(context, material.cert_chain, material.key)
    except (OSError, ssl.SSLError) as exc:
        # Which file: the key fails with "key values mismatch" or a PEM error naming it.
        field = "tls_key" if "key" in str(exc).lower() and "certificate" not in str(exc).lower() else "tls_cert"
        raise TlsSettingsError(field, f"cannot load the certificate chain and key: {_reason(exc)}") from None
    if material.client_ca is not None:
        try:
            context.load_verify_locations(cadata=material.client_ca.decode("ascii", "replace"))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsSettingsError("tls_client_ca", f"cannot load the CA: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    if settings.protocol != "tcp":
        context.set_alpn_protocols(ALPN_HTTP)
    return context


def client_context(settings: RouteSettings, material: TlsMaterial) -> ssl.SSLContext | None:
    """The context for connecting to the upstream, or None (clear text)."""
    if not settings.upstream_tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if material.upstream_ca is not None:
        try:
            context.load_verify_locations(cadata=material.upstream_ca.decode("ascii", "replace"))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsSettingsError("upstream_tls_ca", f"cannot load the CA: {_reason(exc)}") from None
    if not settings.upstream_tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.protocol != "tcp":
        context.set_alpn_protocols(ALPN_HTTP)
    return context


def client_context_from_files(settings: RouteSettings) -> ssl.SSLContext | None:
    """The upstream context straight from the files (``proxyctl check``)."""
    return client_context(settings, load_material(settings)) if settings.upstream_tls.enabled else None


def expiry_warning(route: str, settings: RouteSettings, material: TlsMaterial, now: float | None = None) -> str | None:
    """A route's certificate that expired, or expires within
    ``CERT_EXPIRY_WARNING_S``, in words; None when it is not due."""
    expires = material.cert_not_after_unix
    if expires is None:
        return None
    now = time.time() if now is None else now
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    if expires <= now:
        return f"route {route}: the certificate in tls_cert ({settings.tls.cert}) expired on {when}: clients refuse it"
    if expires - now <= CERT_EXPIRY_WARNING_S:
        days = (expires - now) / 86400
        return (
            f"route {route}: the certificate in tls_cert ({settings.tls.cert}) expires in {days:.1f} days, on "
            f"{when}: renew it and reload"
        )
    return None


def certificate_warnings(config: ProxyConfig, now: float | None = None) -> list[str]:
    """Every route's certificate that expired or expires soon, in words."""
    return [w for r in config.routes if (w := expiry_warning(r.name, r.settings, r.tls_material, now)) is not None]
