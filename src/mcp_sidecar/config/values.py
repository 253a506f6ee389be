"""Value parsers: each takes what TOML (or a flag) gave and returns the
validated value, or raises ``ValueError`` with a message for the user.

Rules this module keeps:

* A message says what was expected and what was given -- except for
  secrets (tokens, webhook URLs), whose values are never echoed.
* Durations are seconds: a number, or a string with ``ms``/``s``/``m``/``h``;
  sizes are bytes: an integer, or a string with ``KiB``/``MiB``/``GiB``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from .addresses import AddressSyntaxError, HostPort, parse_hostport

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f'expected a duration such as 5, 0.25 or "250ms", got {value!r}')
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f'expected a duration such as 5, 0.25 or "250ms", got {value!r}')
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"duration must be a finite number >= 0, got {value!r}")
    return seconds


_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNIT_BYTES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, None: 1}


def parse_size(value: Any) -> int:
    """Bytes: an integer, or a string with a binary unit (``"64MiB"``)."""
    if isinstance(value, bool):
        raise ValueError(f'expected a size such as 65536 or "64MiB", got {value!r}')
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(m.group(1)) * _UNIT_BYTES[m.group(2)]
    else:
        raise ValueError(f'expected a size such as 65536 or "64MiB", got {value!r}')
    if size < 0:
        raise ValueError(f"size must be >= 0, got {value!r}")
    return size


def format_size(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if size and size % _UNIT_BYTES[unit] == 0:
            return f"{size // _UNIT_BYTES[unit]}{unit}"
    return str(size)


def size_at_least(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        size = parse_size(value)
        if size < low:
            raise ValueError(f"must be at least {format_size(low)}, got {value!r}")
        return size

    return parse


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def format_span(seconds: float) -> str:
    """A duration as people say it (``10m``, ``1h``, ``90s``, ``250ms``); parse_duration reads it back."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return format_duration(seconds)


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return seconds


def int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


def cpu_share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"expected a fraction of a CPU core, greater than 0 and at most 1, got {value!r}")
    return float(value)


#: At most this many forwarding workers (a sanity bound on a typo, not a tuning limit).
MAX_WORKERS = 256


def worker_count(value: Any) -> int:
    """``"auto"`` (0: one per usable CPU, decided at start) or a count."""
    if value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ValueError(f'expected "auto" or a number of workers from 1 to {MAX_WORKERS}, got {value!r}')
    return value


def fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"expected a fraction greater than 0 and at most 1, got {value!r}")
    return float(value)


def short_text(value: Any) -> str:
    """A sentence for people: at most 200 printable characters ("" for none)."""
    if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
        raise ValueError(f"expected text of at most 200 printable characters, got {value!r}")
    return value.strip()


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def parse_admin_listen(value: Any) -> HostPort | None:
    """``HOST:PORT``, or ``"off"`` (or empty) for no admin endpoint."""
    if value in ("", "off", "none", False):
        return None
    try:
        return parse_hostport(value, allow_zero_port=True)
    except AddressSyntaxError as exc:
        raise ValueError(f'{exc} (or "off")') from None


def secret_token(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 16 or any(c.isspace() for c in value):
        raise ValueError("must be a string of at least 16 characters without spaces")
    return value


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"expected one of {', '.join(repr(o) for o in options)}, got {value!r}")
        return value

    return parse


def url_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f'expected a path starting with "/", got {value!r}')
    return value


def webhook_url(value: Any) -> str:
    # Never echo the value: a Slack or Discord webhook URL is itself a secret.
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got a {type(value).__name__}")
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        scheme = value.split("://", 1)[0] if "://" in value else ""
        shown = f" (scheme {scheme[:10]!r})" if scheme and scheme.isalnum() else ""
        raise ValueError(
            f"expected an http:// or https:// URL{shown}; the value is not shown: a webhook URL is a secret"
        )
    return value


def host_names(value: Any) -> tuple[str, ...]:
    """Host names (``sidecar.example``), lower-cased."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, str) or not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$", item):
            raise ValueError(f'expected host names such as "sidecar.example", got {item!r}')
        out.append(item.lower().rstrip("."))
    return tuple(out)


def route_names(value: Any) -> tuple[str, ...]:
    """A list of route names (checked against the routes once they are built)."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) and item for item in items):
        raise ValueError(f'expected route names such as ["mcp"], got {value!r}')
    return tuple(items)


def file_path(value: Any) -> str:
    """A path to a file that must be readable (checked when the route is built)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {value!r}")
    return value


def server_name(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9.:_-]{1,253}$", value):
        raise ValueError(f"expected a host name, got {value!r}")
    return value


def networks(value: Any) -> tuple[str, ...]:
    """Client addresses or networks (``10.0.0.0/8``, ``::1``), normalised as
    clients are: an IPv4-mapped entry (``::ffff:10.0.0.2``) is the IPv4
    address it maps, since a dual-stack socket's IPv4 client is matched as
    IPv4 (forward/state.py)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("expected at least one address or network (leave the key out to allow everyone)")
    out = []
    for item in items:
        try:
            network = ipaddress.ip_network(str(item).strip(), strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (like 10.0.0.0/8 or ::1)") from None
        if (
            isinstance(network, ipaddress.IPv6Network)
            and network.prefixlen >= 96
            and network.network_address.ipv4_mapped is not None
        ):
            network = ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
        out.append(str(network))
    return tuple(out)
