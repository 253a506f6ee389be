"""An answer then and now, compared structurally (sans-io).

Rules this module keeps:

* Only ``result`` and ``error`` are compared (the ids were mapped, the
  envelope is the transport's).  Objects key by key, arrays item by item,
  numbers by value (1 == 1.0), everything else by equality.
* Ignored everywhere, as no two runs agree on them: keys that name an id
  (``id``, ``...Id``, ``..._id``: request, session, progress ids),
  ``progressToken``, ``_meta`` (the server's metadata), keys that name a
  time (``timestamp``, ``time``, ``date``, ``createdAt``, ``updatedAt``,
  ``expiresAt``), and any string that is an ISO 8601 date-time.  Plus the
  paths the user names (``--ignore``, a JSONPath subset: ``$.a.b``,
  ``$.a[0]``, ``$.a[*]``, ``$.*``, ``$..name``), matched against the answer
  (``$.result.content[0].text``).
* A difference is its path, what was recorded and what came now
  (``ABSENT`` where a side has nothing); at most ``MAX_DIFFERENCES`` per answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import EXIT_USAGE, LocalError

MAX_DIFFERENCES = 50
ABSENT = "(absent)"
_TIME_KEYS = frozenset({"timestamp", "time", "date", "createdat", "updatedat", "expiresat", "progresstoken", "_meta"})
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


class PathSyntaxError(LocalError):
    """An --ignore path this reader does not understand (exit 2)."""

    exit_code = EXIT_USAGE


def ignored_key(name: str) -> bool:
    return name == "id" or name.endswith(("Id", "_id")) or name.lower() in _TIME_KEYS


@dataclass(frozen=True)
class Difference:
    path: str
    recorded: Any
    now: Any


# --- JSONPath (a subset) ----------------------------------------------------------------

_TOKEN = re.compile(r"\.\.([A-Za-z_$][\w$-]*|\*)|\.([A-Za-z_$][\w$-]*|\*)|\[(\d+|\*|'[^']*'|\"[^\"]*\")\]")


def parse_path(text: str) -> tuple[Any, ...]:
    """``$.a..b[0][*]`` -> (("key","a"), ("deep","b"), ("index",0), ("any",))."""
    if not text.startswith("$"):
        raise PathSyntaxError(f"--ignore {text!r}: a JSONPath starts with $ (such as $.result.content[0].text)")
    tokens: list[tuple[Any, ...]] = []
    position = 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PathSyntaxError(f"--ignore {text!r}: cannot read it from {text[position:]!r}")
        deep, key, bracket = match.groups()
        if deep is not None:
            tokens.append(("deep", None if deep == "*" else deep))
        elif key is not None:
            tokens.append(("any",) if key == "*" else ("key", key))
        elif bracket == "*":
            tokens.append(("any",))
        elif bracket.isdigit():
            tokens.append(("index", int(bracket)))
        else:
            tokens.append(("key", bracket[1:-1]))
        position = match.end()
    return tuple(tokens)


def matches(pattern: tuple[Any, ...], path: tuple[Any, ...]) -> bool:
    """Whether the concrete ``path`` (keys and indexes) is one the pattern names
    (or lies beneath one: ignoring a node ignores what it holds)."""
    if not pattern:
        return True
    if not path:
        return False
    token, head, rest = pattern[0], path[0], path[1:]
    kind = token[0]
    if kind == "deep":
        name = token[1]
        if (name is None or head == name) and matches(pattern[1:], rest):
            return True
        return matches(pattern, rest)
    if kind == "any":
        return matches(pattern[1:], rest)
    if kind == "key":
        return head == token[1] and matches(pattern[1:], rest)
    return head == token[1] and isinstance(head, int) and matches(pattern[1:], rest)


def show_path(path: tuple[Any, ...]) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][\w$-]*", part):
            out += f".{part}"
        else:
            out += "[" + repr(part) + "]"
    return out


# --- the comparison --------------------------------------------------------------------


def differences(recorded: Any, now: Any, ignore: tuple[tuple[Any, ...], ...] = ()) -> list[Difference]:
    """Where ``now`` differs from ``recorded`` (both ``{"result": ...}`` or ``{"error": ...}``)."""
    found: list[Difference] = []
    _walk(recorded, now, (), ignore, found)
    return found


def _walk(a: Any, b: Any, path: tuple[Any, ...], ignore: tuple[tuple[Any, ...], ...], found: list[Difference]) -> None:
    if len(found) >= MAX_DIFFERENCES:
        return
    if any(matches(pattern, path) for pattern in ignore):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if ignored_key(key):
                continue
            _walk(a.get(key, _Absent), b.get(key, _Absent), (*path, key), ignore, found)
        return
    if isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            _walk(
                a[index] if index < len(a) else _Absent,
                b[index] if index < len(b) else _Absent,
                (*path, index),
                ignore,
                found,
            )
        return
    if _same(a, b):
        return
    found.append(Difference(show_path(path), ABSENT if a is _Absent else a, ABSENT if b is _Absent else b))


class _AbsentType:
    pass


_Absent: Any = _AbsentType()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) and isinstance(b, str) and _ISO_TIME.match(a) and _ISO_TIME.match(b):
        return True
    return type(a) is type(b) and a == b
