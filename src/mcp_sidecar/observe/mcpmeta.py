"""Which MCP revision a request speaks, what it is about, and whether its
headers keep their revision's rules (sans-io).

Rules this module keeps:

* Protocol versions are a bounded label (``version_label``): the released
  revisions, ``unknown`` (nothing says), ``other`` (something does, but no
  released revision).  A request's version is, first found: its
  ``MCP-Protocol-Version`` header (2025-06-18 and later); the version in its
  ``params._meta`` (2026-07-28 carries it in every request); the version its
  session negotiated (``initialize``); for an ``initialize``, the version it
  asks for.
* A request's target is the tool or prompt (``params.name`` of
  ``tools/call`` and ``prompts/get``) or the resource (``params.uri`` of
  ``resources/read``) it is about: the ``Mcp-Name`` header (2026-07-28)
  when present and it agrees with the body, else the body's value.  A
  resource URI is shown without its query and fragment (they may carry
  credentials).  Labels are capped per route (``TargetLabels``).
* Conformance is checked in passing against each revision's transport text,
  never enforced: the bytes are forwarded unchanged whatever the verdict.
  2026-07-28 (streamable HTTP, "Request Metadata"): every request carries
  ``MCP-Protocol-Version`` matching ``_meta``'s version, and ``Mcp-Method``;
  ``tools/call``, ``resources/read`` and ``prompts/get`` carry ``Mcp-Name``;
  a header that disagrees with the body, or an ``Mcp-Name`` that is not a
  valid value (base64 sentinel included), is a violation.  2025-06-18 and
  later: requests after ``initialize`` carry ``MCP-Protocol-Version``.
  2025-03-26 and later: a POST of notifications or responses only is
  answered ``202 Accepted`` when accepted (an error status when not).
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Any

from .jsonrpc import ParamFacts

#: Every released revision, oldest first.
KNOWN_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28")
_KNOWN = frozenset(KNOWN_VERSIONS)
#: Revisions with per-request metadata (no sessions, no initialize).
MODERN_VERSIONS = frozenset({"2026-07-28"})
#: Revisions whose HTTP requests after initialize carry MCP-Protocol-Version.
_VERSION_HEADER_VERSIONS = frozenset({"2025-06-18", "2025-11-25"})
UNKNOWN = "unknown"
OTHER = "other"
#: Methods about one target, and the ``params`` member that names it.
TARGET_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
#: Longest target label kept as it is (longer ones are cut).
MAX_TARGET_CHARS = 128
_SENTINEL_PREFIX, _SENTINEL_SUFFIX = "=?base64?", "?="


class Conformance(StrEnum):
    """What ``mcp_conformance_total{kind}`` counts."""

    METHOD_HEADER_MISMATCH = "method_header_mismatch"
    NAME_HEADER_MISMATCH = "name_header_mismatch"
    VERSION_HEADER_MISMATCH = "version_header_mismatch"
    METHOD_HEADER_MISSING = "method_header_missing"
    NAME_HEADER_MISSING = "name_header_missing"
    VERSION_HEADER_MISSING = "version_header_missing"
    HEADER_VALUE_INVALID = "header_value_invalid"
    NOTIFICATION_NOT_202 = "notification_not_202"


def version_label(value: Any) -> str:
    """A bounded label for a stated protocol version."""
    if value is None:
        return UNKNOWN
    return value if isinstance(value, str) and value in _KNOWN else OTHER


class _Invalid:
    """A header value that is not valid (see ``header_text``)."""


INVALID = _Invalid()


def header_text(raw: str | None) -> str | _Invalid | None:
    """An ``Mcp-Name``/``Mcp-Param-*`` value as text: decoded from the
    base64 sentinel (``=?base64?...?=``) when it is one; ``INVALID`` when the
    sentinel does not decode, or a plain value is not visible ASCII."""
    if raw is None:
        return None
    if raw.startswith(_SENTINEL_PREFIX) and raw.endswith(_SENTINEL_SUFFIX) and len(raw) >= 11:
        try:
            return base64.b64decode(raw[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return INVALID
    if not raw.isascii() or not raw.isprintable():
        return INVALID
    return raw


def request_version(header: str | None, facts: ParamFacts, session_version: str | None, method: str) -> str:
    """The version label a request is counted under (the rule above)."""
    if header is not None:
        return version_label(header)
    if facts.meta is not None and facts.meta.protocol_version is not None:
        return version_label(facts.meta.protocol_version)
    if session_version is not None:
        return session_version
    if method == "initialize" and facts.protocolVersion is not None:
        return version_label(facts.protocolVersion)
    return UNKNOWN


def target_name(method: str, facts: ParamFacts, header: str | None) -> tuple[str | None, bool]:
    """The target a request is about (None if its method has none) and
    whether an ``Mcp-Name`` header disagreed with the body (or was invalid)."""
    member = TARGET_METHODS.get(method)
    if member is None:
        return None, False
    body = facts.name if member == "name" else facts.uri
    body = body if isinstance(body, str) else None
    named = header_text(header)
    if isinstance(named, _Invalid):
        return body, True
    if named is not None and body is not None and named != body:
        return body, True
    value = body if body is not None else named
    if value is not None and member == "uri":
        value = value.split("?", 1)[0].split("#", 1)[0]
    return value, False


def request_conformance(
    method: str,
    facts: ParamFacts,
    *,
    method_header: str | None,
    name_header: str | None,
    version_header: str | None,
    session_version: str | None,
) -> list[Conformance]:
    """The violations of one request sent over streamable HTTP (the rules above)."""
    found: list[Conformance] = []
    meta_version = facts.meta.protocol_version if facts.meta is not None else None
    modern = meta_version in MODERN_VERSIONS or version_header in MODERN_VERSIONS
    if method_header is not None and method_header != method:
        found.append(Conformance.METHOD_HEADER_MISMATCH)
    if version_header is not None and meta_version is not None and version_header != meta_version:
        found.append(Conformance.VERSION_HEADER_MISMATCH)
    member = TARGET_METHODS.get(method)
    if name_header is not None:
        named = header_text(name_header)
        body = (facts.name if member == "name" else facts.uri) if member is not None else None
        if isinstance(named, _Invalid):
            found.append(Conformance.HEADER_VALUE_INVALID)
        elif isinstance(body, str) and named != body:
            found.append(Conformance.NAME_HEADER_MISMATCH)
    if modern:
        if method_header is None:
            found.append(Conformance.METHOD_HEADER_MISSING)
        if version_header is None:
            found.append(Conformance.VERSION_HEADER_MISSING)
        if member is not None and name_header is None:
            body = facts.name if member == "name" else facts.uri
            if isinstance(body, str):
                found.append(Conformance.NAME_HEADER_MISSING)
    elif version_header is None and session_version in _VERSION_HEADER_VERSIONS and method != "initialize":
        found.append(Conformance.VERSION_HEADER_MISSING)
    return found


def answer_conformance(status: int | None, notifications_only: bool) -> Conformance | None:
    """A POST of notifications or responses only, accepted with another
    status than 202 (an error status is the spec's "cannot accept": allowed)."""
    if notifications_only and status is not None and status < 400 and status != 202:
        return Conformance.NOTIFICATION_NOT_202
    return None


class TargetLabels:
    """A route's target labels: the first ``limit`` distinct names are
    labels, later ones ``other`` (counted in ``capped``)."""

    __slots__ = ("capped", "limit", "names")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.names: set[str] = set()
        #: Requests whose target was folded into ``other`` by the cap.
        self.capped = 0

    def label(self, name: str | None) -> str:
        if name is None:
            return ""
        if len(name) > MAX_TARGET_CHARS:
            name = name[: MAX_TARGET_CHARS - 1] + "…"
        if name in self.names:
            return name
        if len(self.names) < self.limit:
            self.names.add(name)
            return name
        self.capped += 1
        return OTHER
