"""Secrets never leave the process: redaction of traffic details.

Rules this module keeps:

* Header values of ``SECRET_HEADERS`` (the Inspector's ``X-MCP-Proxy-Auth``,
  ``Authorization``, cookies, API keys) are replaced by ``REDACTED``.
* Query parameters named in ``SECRET_PARAMS`` (the Inspector's
  ``MCP_PROXY_AUTH_TOKEN``, OAuth ``access_token``, ...) keep their name and
  lose their value.
* ``scrub()`` is the last line of defence, applied by the log formatters to
  every string they write: it catches the same secrets in free text.

Callers redact before they store, log or expose anything derived from
traffic; the log formatter scrubs again.
"""

from __future__ import annotations

import re

REDACTED = "REDACTED"

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-mcp-proxy-auth",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-mcp-sidecar-token",
        "x-mcp-remote-auth",
    }
)
SECRET_PARAMS = frozenset(
    {
        "mcp_proxy_auth_token",
        "mcp_sidecar_token",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "password",
        "auth",
        "code",
    }
)

_SECRET_PARAM_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9_.-])(?P<name>" + "|".join(re.escape(p) for p in sorted(SECRET_PARAMS, key=len, reverse=True))
    + r")=(?P<value>[^&;#\s\"',)]*)"
)
#: The scheme word may repeat ("BEARER Bearer <token>"): the token is what follows the last one.
_BEARER_RE = re.compile(r"(?i)\b((?:bearer|basic)(?:\s+(?:bearer|basic)\b)*)\s+[A-Za-z0-9._~+/=-]+")
_HEADER_LINE_RE = re.compile(
    r"(?i)(?P<name>" + "|".join(re.escape(h) for h in sorted(SECRET_HEADERS)) + r")(?P<sep>\"?\s*[:=]\s*\"?)"
    r"(?P<value>[^\"\r\n,}]*)"
)


def redact_header(name: str | bytes, value: str | bytes) -> str:
    name_text = name.decode("latin-1") if isinstance(name, bytes) else name
    value_text = value.decode("latin-1") if isinstance(value, bytes) else value
    return REDACTED if name_text.lower() in SECRET_HEADERS else value_text


def redact_headers(headers: list[tuple[str | bytes, str | bytes]]) -> list[tuple[str, str]]:
    return [
        (n.decode("latin-1") if isinstance(n, bytes) else n, redact_header(n, v)) for n, v in headers
    ]


def _redact_params(text: str) -> str:
    return _SECRET_PARAM_RE.sub(lambda m: f"{m.group('name')}={REDACTED}", text)


def redact_target(target: str | bytes) -> str:
    """A request target (path and query) with secret parameter values removed."""
    text = target.decode("latin-1") if isinstance(target, bytes) else target
    path, sep, query = text.partition("?")
    return path + sep + _redact_params(query) if sep else text


#: The access gate's cookie (net/gate.py: mcp_sidecar_ and 12 hex digits).
_GATE_COOKIE_RE = re.compile(r"(mcp_sidecar_[0-9a-f]{12})=[^;\s\"',]*")


def _may_hold(text: str, hints: tuple[str, ...]) -> bool:
    """Whether ``text`` contains one of ``hints`` (lower-case ASCII), as the
    case-insensitive patterns would see it; False lets a caller skip them.
    Non-ASCII text always may: ``re``'s IGNORECASE matches "İ" to "i", which
    ``str.lower`` turns into two characters."""
    if not text.isascii():
        return True
    lowered = text.lower()
    return any(hint in lowered for hint in hints)


#: Every pattern ``scrub`` applies needs one of these: a parameter or cookie
#: needs "=", a bearer or basic token its word, a header line its name.
#: Substring tests, not a regular expression: an alternation regex scans
#: ~10x slower.
_SCRUB_HINTS = ("=", "bearer", "basic", *sorted(SECRET_HEADERS))


def scrub(text: str) -> str:
    """Remove secrets from free text (log lines, error messages)."""
    if not _may_hold(text, _SCRUB_HINTS):
        return text
    return _scrub_patterns(text)


def _scrub_patterns(text: str) -> str:
    """``scrub`` without the shortcut: every pattern applied."""
    if "=" in text:
        text = _redact_params(text)
        text = _GATE_COOKIE_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _HEADER_LINE_RE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)


_SECRET_WORD_RE = re.compile(
    r"(?i)\b(token|secret|password|passwd|passphrase|api[-_]?key|key|bearer|basic|session|cookie|credentials?"
    r"|signature|sig)(\s*[:=]?\s*)([^\s,;]+)")
#: A run of 16+ token characters with both letters and digits: a key, not a word.
_TOKENISH_RE = re.compile(r"(?<![A-Za-z0-9._~+/=-])(?=[A-Za-z0-9._~+/=-]*[0-9])(?=[A-Za-z0-9._~+/=-]*[A-Za-z])"
                          r"[A-Za-z0-9._~+/=-]{16,}")


def redact_text(text: str) -> str:
    """Free text a peer wrote (a WebSocket close reason, an error message it
    sent): ``scrub``, then the word after a secret-sounding one and anything
    that looks like a key.  Errs on the side of removing too much."""
    text = scrub(text)
    text = _SECRET_WORD_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _TOKENISH_RE.sub(REDACTED, text)


#: JSON members whose name says they hold a secret ("password": "...", "apiKey": "...").
_JSON_SECRET_RE = re.compile(
    r'(?i)"(?P<name>[A-Za-z0-9_-]*(?:token|secret|password|passwd|api[-_]?key|authorization|cookie|'
    r'credentials?|private[-_]?key)[A-Za-z0-9_-]*)"(?P<sep>\s*:\s*)"(?:[^"\\]|\\.)*"?')


#: What a member name ``_JSON_SECRET_RE`` matches must contain.
_JSON_SECRET_HINTS = ("token", "secret", "passw", "apikey", "api-key", "api_key", "authorization", "cookie",
                      "credential", "private")


def redact_json_text(text: str) -> str:
    """JSON text a peer sent (MCP params and results shown by the tap):
    ``scrub``, then the string value of every member whose name says it is
    a secret.  Works on truncated JSON too (an unterminated value is cut).
    Text without a hint of a secret (most tool arguments and results) is
    returned after two scans."""
    text = scrub(text)
    if not _may_hold(text, _JSON_SECRET_HINTS):
        return text
    return _JSON_SECRET_RE.sub(lambda m: f'"{m.group("name")}"{m.group("sep")}"{REDACTED}"', text)
