"""Secrets never leave the process: redaction of traffic details.

Rules this module keeps:

* Header values of ``SECRET_HEADERS`` (the Inspector's ``X-MCP-Proxy-Auth``,
  ``Authorization``, cookies, API keys) are replaced by ``REDACTED``.
* Query parameters named in ``SECRET_PARAMS`` (the Inspector's
  ``MCP_PROXY_AUTH_TOKEN``, OAuth ``access_token``, ...) keep their name and
  lose their value.
* ``scrub()`` is the last line of defence, applied by the log formatters to
  every string they write: it catches the same secrets in free text.
* JSON a peer sent (MCP params and results: the tap, the request log) is
  redacted as a decoded value (``redact_json``), not as text: a member whose
  name says it is a secret loses its whole value (numbers, objects and
  arrays too; escaped names such as ``pass\\u0077ord`` are decoded first),
  JSON inside a string is walked as JSON, and strings lose what has the
  shape of a secret (PEM blocks, URL userinfo, ``sk-...``, GitHub, Slack and
  AWS keys, JWTs, ``password: ...``).  Errs on the side of removing too
  much; MCP's ``progressToken`` and token counts are not secrets.

Callers redact before they store, log or expose anything derived from
traffic; the log formatter scrubs again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import msgspec

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
    r"(?i)(?<![A-Za-z0-9_.-])(?P<name>"
    + "|".join(re.escape(p) for p in sorted(SECRET_PARAMS, key=len, reverse=True))
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
    return [(n.decode("latin-1") if isinstance(n, bytes) else n, redact_header(n, v)) for n, v in headers]


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
    return any(map(lowered.__contains__, hints))  # (no Python frame per hint)


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
    r"|signature|sig)(\s*[:=]?\s*)([^\s,;]+)"
)
#: A run of 16+ token characters with both letters and digits: a key, not a word.
_TOKENISH_RE = re.compile(
    r"(?<![A-Za-z0-9._~+/=-])(?=[A-Za-z0-9._~+/=-]*[0-9])(?=[A-Za-z0-9._~+/=-]*[A-Za-z])"
    r"[A-Za-z0-9._~+/=-]{16,}"
)


def redact_text(text: str) -> str:
    """Free text a peer wrote (a WebSocket close reason, an error message it
    sent): ``scrub``, then the word after a secret-sounding one and anything
    that looks like a key.  Errs on the side of removing too much."""
    text = scrub(text)
    text = _SECRET_WORD_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _TOKENISH_RE.sub(REDACTED, text)


# --- JSON values a peer sent (the tap, the request log) --------------------------------------


def _minimal(hints: set[str]) -> set[str]:
    """The hints that do not contain another one: the same texts pass."""
    return {h for h in hints if not any(o != h and o in h for o in hints)}


#: Member names (lower-cased, without punctuation) that are secrets whatever
#: their value: a number, an object or an array under them goes whole.
_SECRET_NAMES = frozenset({"key", "pwd", "pass", "pin", "otp", "auth", "jwt", "sig", "bearer", "cookie"})
_NAME_PUNCTUATION = re.compile(r"[\W_]+")
#: Parts of member names that say "secret" ("clientSecret", "apiKeys", "x_auth_token").
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "authorization",
    "cookie",
    "privatekey",
    "accesskey",
    "signingkey",
    "sessionkey",
    "signature",
)
#: Names with a secret-sounding part that are not secrets: MCP's progress
#: token (the operator needs it) and token counts ("maxTokens", "usage.inputTokens").
_NOT_SECRET = frozenset({"progresstoken", "nextpagetoken", "tokencount", "tokenlimit"})


@functools.lru_cache(maxsize=4096)
def secret_name(name: str) -> bool:
    """Whether a JSON member called ``name`` holds a secret (member names
    repeat: the answers are cached, a bounded number of them)."""
    key = _NAME_PUNCTUATION.sub("", name.lower())
    if key in _SECRET_NAMES:
        return True
    if key in _NOT_SECRET or key.endswith("tokens"):
        return False
    return any(part in key for part in _SECRET_PARTS)


#: Secrets recognisable by their shape wherever they appear in a string.
_SHAPES = re.compile(
    r"-----BEGIN [A-Z0-9 ]{1,40}-----.*?(?:-----END [A-Z0-9 ]{1,40}-----|\Z)"  # PEM blocks (keys, even cut)
    r"|(?<=://)[^/\s@\"'<>]{1,256}@"  # URL userinfo: user:password@, token@
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"  # sk-..., sk-proj-..., sk-ant-... API keys
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"  # GitHub tokens
    r"|\bxox[abprse]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",  # JWTs
    re.S,
)
#: "password: x", "api_key = x" in free text.
_LABELLED = re.compile(
    r"(?i)\b((?:pass(?:word|wd|phrase)?|pwd|secret|api[-_ ]?key|access[-_ ]?token|token)"
    r"\s*[:=]\s*)[^\s,;\"'&]+"
)
#: Every pattern ``redact_string`` applies needs one of these (``scrub``'s
#: too): "auth" for the header names, "gh" for GitHub's prefixes.  Hints
#: that contain another are dropped (each is one scan of the text).
_STRING_HINTS = tuple(
    sorted(
        _minimal(
            {
                *_SCRUB_HINTS,
                "auth",
                "-----begin",
                "://",
                "sk-",
                "pk-",
                "rk-",
                "gh",
                "xox",
                "akia",
                "asia",
                "eyj",
                "pass",
                "pwd",
                "secret",
                "key",
                "token",
            }
        )
    )
)


def redact_string(text: str) -> str:
    """A string a peer sent: JSON inside it is walked as JSON; secrets
    recognisable by their shape or label, and what ``scrub`` removes, go."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") and len(text) > 1:
        try:
            inner = msgspec.json.decode(text)
        except msgspec.DecodeError:
            pass
        else:
            value, changed = redact_value(inner)
            return msgspec.json.encode(value).decode() if changed else text
    if not _may_hold(text, _STRING_HINTS):
        return text
    text = _scrub_patterns(text)
    text = _SHAPES.sub(lambda m: REDACTED + ("@" if m.group(0).endswith("@") else ""), text)
    return _LABELLED.sub(lambda m: m.group(1) + REDACTED, text)


#: Members MCP defines as opaque tokens a client chooses to correlate messages
#: (progress notifications): never secrets, shown as sent.
PROTOCOL_TOKENS = frozenset({"progressToken"})


def redact_value(value: Any) -> tuple[Any, bool]:
    """A decoded JSON value with its secrets replaced: whole subtrees under
    secret member names, secrets inside strings; and whether anything was."""
    if isinstance(value, str):
        cleaned = redact_string(value)
        return cleaned, cleaned is not value and cleaned != value
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for name, item in value.items():
            if secret_name(name) and item is not None and item != "":
                out[name] = REDACTED
                changed = True
            elif name in PROTOCOL_TOKENS and isinstance(item, (str, int)):
                out[name] = item  # (MCP's own correlation tokens: shown as sent, whatever their shape)
            else:
                out[name], sub = redact_value(item)
                changed = changed or sub
        return out, changed
    if isinstance(value, list):
        items = [redact_value(item) for item in value]
        return [item for item, _ in items], any(sub for _, sub in items)
    return value, False


#: Every secret member name, lower-cased and stripped of punctuation, contains one of these.
_NAME_HINTS = _minimal({*_SECRET_NAMES, *_SECRET_PARTS})
#: The hints ``_json_may_hold`` looks for in a text squeezed to its letters and
#: digits (the member names' and the string hints made of letters and digits
#: only: a text that holds one as written holds it squeezed too), and those it
#: looks for as written (with punctuation: ``://``, ``sk-``, ...).
_SQUEEZED_HINTS = tuple(sorted(_minimal({*_NAME_HINTS, *(h for h in _STRING_HINTS if h.isalnum())})))
_WRITTEN_HINTS = ("\\", *sorted(h for h in _STRING_HINTS if not h.isalnum()))
#: Bytes that are not lower-case letters or digits: deleted to squeeze a text the
#: way ``secret_name`` squeezes a member name (``bytes.translate``: 4x a regex sub).
_NOT_ALNUM = bytes(c for c in range(256) if not (48 <= c <= 57 or 97 <= c <= 122))


def _contains_any(hints: tuple[str, ...]) -> Callable[[str], bool]:
    """A test of whether a text contains one of ``hints``, as one chain of
    ``in`` (generated from the hints, which are this module's constants): about
    50 ns a hint on a message's text, where a regular expression of the same
    alternatives takes 40-80 ns a character, and ``any(map(...))`` 100 ns a hint."""
    chain = " or ".join(f"{hint!r} in text" for hint in hints)
    test: Callable[[str], bool] = eval(f"lambda text: {chain}")  # (the literals of this module only)
    return test


_holds_written_hint = _contains_any(_WRITTEN_HINTS)
_holds_squeezed_hint = _contains_any(_SQUEEZED_HINTS)


def _json_may_hold(raw: bytes) -> bool:
    """Whether ``redact_value`` could change anything in this JSON text; False
    is exact, not a guess: with no escape and no non-ASCII byte, every member
    name and string is in the text as decoded, so a secret name (its letters
    and digits) or a string hint would be found in the text too."""
    if not raw.isascii():
        return True
    lowered = raw.lower()
    return _holds_written_hint(lowered.decode("ascii")) or _holds_squeezed_hint(
        lowered.translate(None, _NOT_ALNUM).decode("ascii")
    )


def redact_json(raw: bytes) -> bytes:
    """JSON text a peer sent, redacted (``redact_value``); the bytes as they
    came when there was nothing to remove (known from the text alone when it
    can be: ``_json_may_hold``)."""
    if not _json_may_hold(raw):
        return raw
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return redact_string(raw.decode("utf-8", "replace")).encode()
    cleaned, changed = redact_value(value)
    return msgspec.json.encode(cleaned) if changed else raw
