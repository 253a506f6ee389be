"""Fault specifications: what a ``[[route.fault]]`` table (or a JSON body
of ``POST /api/faults``, or ``proxyctl fault add``) asks for, validated.

Rules this module keeps:

* One parser for every way in (``parse_fault``): the TOML table, the API's
  JSON object and the CLI's options use the same key names, so a fault
  written once can be pasted anywhere.  An error names the key.
* Only the keys of the fault's kind are accepted (a ``latency`` with a
  ``code`` is a mistake, said so), and every number is bounded: a fault
  cannot make the proxy hold unbounded data or time.
* Pure data: nothing here runs a fault (faults/ does).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import ConfigError
from .values import fraction, int_in, parse_duration, parse_size


class FaultKind(StrEnum):
    # TCP faults (Toxiproxy's toxics, per direction)
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    SLICER = "slicer"
    RESET_PEER = "reset_peer"
    TIMEOUT = "timeout"
    LIMIT_DATA = "limit_data"
    SLOW_CLOSE = "slow_close"
    DOWN = "down"
    # MCP faults (matched by JSON-RPC method, target and client)
    ERROR = "error"
    DELAY = "delay"
    DROP = "drop"
    CUT = "cut"
    HTTP_STATUS = "http_status"
    STRIP_KEEPALIVE = "strip_keepalive"


TCP_KINDS = frozenset(
    {
        FaultKind.LATENCY,
        FaultKind.BANDWIDTH,
        FaultKind.SLICER,
        FaultKind.RESET_PEER,
        FaultKind.TIMEOUT,
        FaultKind.LIMIT_DATA,
        FaultKind.SLOW_CLOSE,
    }
)
MCP_KINDS = frozenset(
    {
        FaultKind.ERROR,
        FaultKind.DELAY,
        FaultKind.DROP,
        FaultKind.CUT,
        FaultKind.HTTP_STATUS,
        FaultKind.STRIP_KEEPALIVE,
    }
)


class Direction(StrEnum):
    """Toxiproxy's names: ``upstream`` is the client's bytes on their way to
    the server, ``downstream`` the server's on their way back."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"


#: Bounds: a fault shapes traffic, it never makes the proxy hold more than this.
MAX_FAULT_DELAY_S = 3600.0
MAX_FAULTS_PER_ROUTE = 64
FAULT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: The targets a fault may match by name (MCP's methods that name one).
TARGET_METHODS = ("tools/call", "prompts/get", "resources/read")


@dataclass(frozen=True)
class FaultSpec:
    """One fault as configured.  ``name`` identifies it for removal; the
    kind's settings are the only ones that matter (the others keep their
    defaults)."""

    kind: FaultKind
    route: str = ""
    name: str = ""
    #: Applies to a connection (TCP faults) or a matching request (MCP faults) with this probability.
    probability: float = 1.0
    #: Removes itself this long after it was added (None: never).
    ttl_s: float | None = None
    #: Applies to the first ``count`` connections or matches (None: every one).
    count: int | None = None
    # --- TCP ---
    direction: Direction = Direction.DOWNSTREAM
    latency_s: float = 0.0
    jitter_s: float = 0.0
    #: bandwidth: bytes per second.
    rate_bytes_s: int = 0
    #: slicer: average slice, its variation, the pause between slices.
    average_size: int = 0
    size_variation: int = 0
    #: slicer: pause between slices; slow_close: how long the close is held; MCP delay: how long the answer is.
    delay_s: float = 0.0
    #: reset_peer: after this many bytes, or this long (0: at once); limit_data: after this many bytes.
    after_bytes: int = 0
    after_s: float = 0.0
    #: timeout: close after this long with nothing forwarded (0: never close, hold everything).
    timeout_s: float = 0.0
    # --- MCP ---
    method: str = "*"
    target: str = "*"
    client: str = "*"
    code: int = -32603
    message: str = "injected by mcp-sidecar"
    #: http_status: the status, and Retry-After in seconds (429/503; None: none).
    status: int = 503
    retry_after_s: float | None = None
    #: cut: close the response stream after this many events.
    events: int = 0

    @property
    def is_tcp(self) -> bool:
        return self.kind in TCP_KINDS

    @property
    def is_mcp(self) -> bool:
        return self.kind in MCP_KINDS

    def matches(self, method: str, target: str | None, client: str) -> bool:
        """Whether an MCP request (its method, target name, client address) is this fault's."""
        if not fnmatch.fnmatchcase(method, self.method):
            return False
        if self.target != "*" and (target is None or not fnmatch.fnmatchcase(target, self.target)):
            return False
        return self.client == "*" or fnmatch.fnmatchcase(client, self.client)

    def as_json(self) -> dict[str, Any]:
        """The spec in the keys ``parse_fault`` reads (only what the kind uses)."""
        out: dict[str, Any] = {"route": self.route, "name": self.name, "kind": str(self.kind)}
        out["probability"] = self.probability
        if self.ttl_s is not None:
            out["ttl"] = self.ttl_s
        if self.count is not None:
            out["count"] = self.count
        for key in _KIND_KEYS[self.kind]:
            attr, _ = _KEYS[key]
            value = getattr(self, attr)
            out[key] = str(value) if isinstance(value, StrEnum) else value
        return out

    def describe(self) -> str:
        """One line for people: ``latency 100ms +-10ms downstream`` ..."""
        k = self.kind
        parts = [str(k)]
        if k is FaultKind.LATENCY:
            parts.append(f"{_ms(self.latency_s)}" + (f" +-{_ms(self.jitter_s)}" if self.jitter_s else ""))
        elif k is FaultKind.BANDWIDTH:
            parts.append(f"{self.rate_bytes_s} B/s")
        elif k is FaultKind.SLICER:
            parts.append(f"{self.average_size}+-{self.size_variation} B every {_ms(self.delay_s)}")
        elif k is FaultKind.RESET_PEER:
            parts.append(f"after {self.after_bytes} B" if self.after_bytes else f"after {_ms(self.after_s)}")
        elif k is FaultKind.TIMEOUT:
            parts.append(f"close after {_ms(self.timeout_s)}" if self.timeout_s else "hold forever")
        elif k is FaultKind.LIMIT_DATA:
            parts.append(f"{self.after_bytes} B")
        elif k is FaultKind.SLOW_CLOSE:
            parts.append(_ms(self.delay_s))
        elif k is FaultKind.ERROR:
            parts.append(str(self.code))
        elif k is FaultKind.DELAY:
            parts.append(_ms(self.delay_s))
        elif k is FaultKind.CUT:
            parts.append(f"after {self.events} events")
        elif k is FaultKind.HTTP_STATUS:
            parts.append(str(self.status))
        if self.is_tcp:
            parts.append(str(self.direction))
        if self.is_mcp:
            matched = [p for p in (self.method, self.target) if p != "*"]
            parts.append(" ".join(matched) or "every request")
            if self.client != "*":
                parts.append(f"client {self.client}")
        if self.probability < 1:
            parts.append(f"p={self.probability:g}")
        if self.count is not None:
            parts.append(f"first {self.count}")
        return " ".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def _probability(value: Any) -> float:
    if value == 0:
        raise ValueError("must be greater than 0 (remove the fault instead)")
    return fraction(value)


def _bounded_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds > MAX_FAULT_DELAY_S:
        raise ValueError(f"at most {MAX_FAULT_DELAY_S:g}s, got {value!r}")
    return seconds


def _ttl(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return seconds


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return size


def _size(value: Any) -> int:
    return parse_size(value)


def _pattern(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 256 or not value.isprintable():
        raise ValueError(f"expected a name or a glob (*, ?) of at most 256 printable characters, got {value!r}")
    return value


def _message(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 512:
        raise ValueError(f"expected text of at most 512 characters, got {value!r}")
    return value


def _code(value: Any) -> int:
    return int_in(-(2**31), 2**31 - 1)(value)


def _status(value: Any) -> int:
    return int_in(400, 599)(value)


def _direction(value: Any) -> Direction:
    try:
        return Direction(value)
    except ValueError:
        raise ValueError(f"expected upstream or downstream, got {value!r}") from None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not FAULT_NAME_RE.match(value):
        raise ValueError(f"must be 1-64 characters of A-Z a-z 0-9 _ . -, got {value!r}")
    return value


#: key -> (attribute, parser)
_KEYS: dict[str, tuple[str, Any]] = {
    "name": ("name", _name),
    "probability": ("probability", _probability),
    "ttl": ("ttl_s", _ttl),
    "count": ("count", int_in(1, 10**9)),
    "direction": ("direction", _direction),
    "latency": ("latency_s", _bounded_duration),
    "jitter": ("jitter_s", _bounded_duration),
    "rate": ("rate_bytes_s", _positive_size),
    "average_size": ("average_size", _positive_size),
    "size_variation": ("size_variation", _size),
    "delay": ("delay_s", _bounded_duration),
    "after_bytes": ("after_bytes", _size),
    "after": ("after_s", _bounded_duration),
    "timeout": ("timeout_s", _bounded_duration),
    "bytes": ("after_bytes", _positive_size),
    "method": ("method", _pattern),
    "target": ("target", _pattern),
    "client": ("client", _pattern),
    "code": ("code", _code),
    "message": ("message", _message),
    "status": ("status", _status),
    "retry_after": ("retry_after_s", _bounded_duration),
    "events": ("events", int_in(0, 10**6)),
}
_COMMON = ("name", "probability", "ttl", "count")
_MCP_MATCH = ("method", "target", "client")
#: The keys each kind takes besides the common ones (and its required ones).
_KIND_KEYS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.LATENCY: ("direction", "latency", "jitter"),
    FaultKind.BANDWIDTH: ("direction", "rate"),
    FaultKind.SLICER: ("direction", "average_size", "size_variation", "delay"),
    FaultKind.RESET_PEER: ("direction", "after", "after_bytes"),
    FaultKind.TIMEOUT: ("direction", "timeout"),
    FaultKind.LIMIT_DATA: ("direction", "bytes"),
    FaultKind.SLOW_CLOSE: ("direction", "delay"),
    FaultKind.DOWN: (),
    FaultKind.ERROR: (*_MCP_MATCH, "code", "message"),
    FaultKind.DELAY: (*_MCP_MATCH, "delay"),
    FaultKind.DROP: _MCP_MATCH,
    FaultKind.CUT: (*_MCP_MATCH, "events"),
    FaultKind.HTTP_STATUS: (*_MCP_MATCH, "status", "retry_after"),
    FaultKind.STRIP_KEEPALIVE: _MCP_MATCH,
}
_REQUIRED: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.LATENCY: ("latency",),
    FaultKind.BANDWIDTH: ("rate",),
    FaultKind.SLICER: ("average_size",),
    FaultKind.LIMIT_DATA: ("bytes",),
    FaultKind.SLOW_CLOSE: ("delay",),
    FaultKind.DELAY: ("delay",),
}


class FaultError(ValueError):
    """A fault that cannot be: ``key`` is the field at fault ("" for the whole)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)

    @property
    def said(self) -> str:
        """The error as the API and proxyctl say it: ``key: message``."""
        return f"{self.key}: {self}" if self.key else str(self)


def fault_keys(kind: FaultKind) -> tuple[str, ...]:
    """Every key a fault of ``kind`` takes (besides ``kind`` and ``route``)."""
    return (*_COMMON, *_KIND_KEYS[kind])


def parse_fault(table: dict[str, Any], *, route: str = "", default_name: str = "") -> FaultSpec:
    """A fault from its keys (``kind`` required; ``route`` allowed and
    checked against ``route`` when given).  Raises ``FaultError`` naming the key."""
    if not isinstance(table, dict):
        raise FaultError("", f"expected a table, got {type(table).__name__}")
    raw_kind = table.get("kind")
    if raw_kind is None:
        raise FaultError("kind", f"missing (one of {', '.join(k.value for k in FaultKind)})")
    try:
        kind = FaultKind(raw_kind)
    except ValueError:
        close = difflib.get_close_matches(str(raw_kind), [k.value for k in FaultKind], n=1)
        hint = f"did you mean {close[0]}?" if close else f"one of {', '.join(k.value for k in FaultKind)}"
        raise FaultError("kind", f"unknown kind {raw_kind!r} ({hint})") from None
    allowed = {"kind", "route", *fault_keys(kind)}
    for key in table:
        if key not in allowed:
            if key in _KEYS:
                raise FaultError(key, f"not a setting of {kind} (it takes {', '.join(fault_keys(kind))})")
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.75)
            raise FaultError(key, f"unknown key (did you mean {close[0]}?)" if close else "unknown key")
    if route and table.get("route", route) != route:
        raise FaultError("route", f"this fault belongs to route {route!r}, not {table['route']!r}")
    values: dict[str, Any] = {"kind": kind, "route": route or str(table.get("route", ""))}
    for key, raw in table.items():
        if key in ("kind", "route"):
            continue
        attr, parse = _KEYS[key]
        try:
            values[attr] = parse(raw)
        except ValueError as exc:
            raise FaultError(key, str(exc)) from None
    for key in _REQUIRED.get(kind, ()):
        if key not in table:
            raise FaultError(key, f"missing (a {kind} fault needs it)")
    spec = FaultSpec(**values)
    if kind is FaultKind.RESET_PEER and "after" in table and "after_bytes" in table:
        raise FaultError("after_bytes", "give after (a time) or after_bytes, not both")
    if kind is FaultKind.SLICER and spec.size_variation >= spec.average_size:
        raise FaultError("size_variation", "must be smaller than average_size")
    if kind is FaultKind.LATENCY and spec.jitter_s > spec.latency_s:
        raise FaultError("jitter", "must not exceed latency")
    if kind is FaultKind.HTTP_STATUS and spec.retry_after_s is not None and spec.status not in (429, 503):
        raise FaultError("retry_after", "only with status 429 or 503 (RFC 9110)")
    if spec.is_mcp and spec.target != "*" and not any(fnmatch.fnmatchcase(m, spec.method) for m in TARGET_METHODS):
        raise FaultError("target", f"only {', '.join(TARGET_METHODS)} have a target (method is {spec.method!r})")
    if not spec.name:
        spec = FaultSpec(**{**values, "name": default_name or str(kind)})
    return spec


def runtime_fault(table: Any, taken: Callable[[str], set[str]]) -> FaultSpec:
    """A fault added at run time (the API's JSON, proxyctl's options), read by
    ``parse_fault``; without a name it is named ``KIND-N``, N the first number
    not ``taken(route)``.  Raises ``FaultError``."""
    if isinstance(table, dict) and "name" not in table and isinstance(table.get("route"), str):
        kind = table.get("kind")
        base = kind if isinstance(kind, str) and kind.isidentifier() else "fault"
        names = taken(table["route"])
        n = 1
        while f"{base}-{n}" in names:
            n += 1
        table = {**table, "name": f"{base}-{n}"}
    return parse_fault(table)


def route_faults(source: str, prefix: str, route: str, raw: Any) -> tuple[FaultSpec, ...]:
    """A route's ``[[route.fault]]`` tables (``prefix``: ``route[N].``); names
    unique in the route; an error is a ``ConfigError`` naming the field."""
    if not isinstance(raw, list):
        raise ConfigError(source, f"{prefix}fault", "expected [[route.fault]] tables")
    if len(raw) > MAX_FAULTS_PER_ROUTE:
        raise ConfigError(source, f"{prefix}fault", f"at most {MAX_FAULTS_PER_ROUTE} faults per route")
    faults: list[FaultSpec] = []
    for i, table in enumerate(raw, start=1):
        where = f"{prefix}fault[{i}]"
        kind = table.get("kind", "fault") if isinstance(table, dict) else "fault"
        try:
            spec = parse_fault(table, route=route, default_name=f"{kind}-{i}")
        except FaultError as exc:
            raise ConfigError(source, f"{where}.{exc.key}" if exc.key else where, str(exc)) from None
        if any(f.name == spec.name for f in faults):
            raise ConfigError(source, f"{where}.name", f"duplicate fault name {spec.name!r} in route {route!r}")
        faults.append(spec)
    return tuple(faults)
