"""Building the configuration: TOML file, ``--forward`` specs and profiles -> ``ProxyConfig``.

Rules this module keeps:

* Every value is validated before anything is bound or started; the first
  problem raises ``ConfigError`` naming the source, the field and the fault.
* Unknown keys are errors (a typo must not silently fall back to a default).
* Durations are seconds: a TOML number (``5``, ``0.25``) or a string with a
  unit (``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``).  Internally every field
  that holds a duration ends in ``_s``; sizes end in ``_bytes``.
* Routes are numbered from 1 in messages: ``route[1]`` is the first.
* Pure: nothing is read from the process (its environment) but through the
  ``Environment`` passed in; the command line reads it, in one place
  (cli/options.py).

File layout::

    [proxy]                      # process-wide settings
    drain_timeout = "25s"

    [defaults]                   # per-route settings every route inherits
    connect_timeout = "5s"

    [[route]]
    name = "ui"
    listen = "0.0.0.0:6274"      # or a list of addresses
    upstream = "localhost:6274"
    idle_timeout = "10m"         # any [defaults] key may be overridden here
"""

from __future__ import annotations

import difflib
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .addresses import NONLOOPBACK, AddressSyntaxError, HostPort, parse_forward, parse_hostport
from .defaults import (
    ADMIN_TOKEN_ENV,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    GATE_TOKEN_ENV,
    MAX_HISTORY_POINTS,
    ROUTE_NAME_RE,
)
from .faults import route_faults
from .keys import (
    ADMIN_KEYS,
    FAULTS_KEYS,
    OBSERVE_KEYS,
    PROXY_KEYS,
    RECORD_KEYS,
    ROUTE_KEYS,
    SETTING_KEYS,
    SUPERVISOR_KEYS,
    TOP_KEYS,
)
from .model import AdminConfig, ObserveConfig, ProxyConfig, RecordConfig, RouteConfig, RouteSettings, SupervisorConfig
from .otel import otel_config
from .profiles import DEFAULT_PROFILE, PROFILE_RISKS, PROFILES, gate_by_default, refuse_exposure
from .tls import TlsSettingsError, load_material
from .values import (
    format_duration,
    secret_token,
)


def _section(
    source: str, name: str, document: dict[str, Any], keys: dict[str, tuple[str, Callable[[Any], Any]]]
) -> dict[str, Any]:
    """Parse a flat ``[name]`` table into attribute values."""
    table = _table(source, name, document.get(name, {}))
    _check_keys(source, f"{name}.", table, set(keys))
    return _parse_values(source, f"{name}.", table, keys)


def _parse_values(
    source: str, prefix: str, table: dict[str, Any], keys: dict[str, tuple[str, Callable[[Any], Any]]]
) -> dict[str, Any]:
    """TOML key -> parsed attribute value; a bad value names its field."""
    values: dict[str, Any] = {}
    for key, (attr, parse) in keys.items():
        if key in table:
            try:
                values[attr] = parse(table[key])
            except ValueError as exc:
                raise ConfigError(source, f"{prefix}{key}", str(exc)) from None
    return values


def _record_config(source: str, value: Any) -> RecordConfig:
    """``[observe] record = { dir = ..., ... }``: a bad key or value names its field."""
    table = _table(source, "observe.record", value)
    _check_keys(source, "observe.record.", table, set(RECORD_KEYS))
    if "dir" not in table:
        raise ConfigError(source, "observe.record.dir", "required: the directory the recordings go to")
    return RecordConfig(**_parse_values(source, "observe.record.", table, RECORD_KEYS))


def _table(source: str, fieldname: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(source, fieldname, f"expected a table, got {type(value).__name__}")
    return value


def _check_keys(source: str, prefix: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.75)
            if close:
                raise ConfigError(source, f"{prefix}{key}", f"unknown key (did you mean {close[0]}?)")
            known = ", ".join(sorted(allowed))
            raise ConfigError(source, f"{prefix}{key}", f"unknown key (known keys: {known})")


def _apply_settings(source: str, prefix: str, base: RouteSettings, table: dict[str, Any]) -> RouteSettings:
    return with_values(base, _parse_values(source, prefix, table, SETTING_KEYS))


def with_values(settings: RouteSettings, values: dict[str, Any]) -> RouteSettings:
    """``settings`` with ``values`` set (``group.attribute`` names reach into a group)."""
    flat: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        group, dot, attribute = name.partition(".")
        if dot:
            grouped.setdefault(group, {})[attribute] = value
        else:
            flat[name] = value
    for group, changes in grouped.items():
        flat[group] = replace(getattr(settings, group), **changes)
    return replace(settings, **flat)


def _parse_listen(source: str, fieldname: str, value: Any) -> tuple[HostPort, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(source, fieldname, "needs at least one address")
    result = []
    for item in items:
        try:
            result.append(parse_hostport(item, allow_zero_port=True))
        except AddressSyntaxError as exc:
            raise ConfigError(source, fieldname, str(exc)) from None
    return tuple(result)


def _build_route(source: str, index: int, table: dict[str, Any], defaults: RouteSettings) -> RouteConfig:
    prefix = f"route[{index}]."
    _check_keys(source, prefix, table, ROUTE_KEYS)
    for required in ("listen", "upstream"):
        if required not in table:
            raise ConfigError(source, f"{prefix}{required}", "missing (required)")
    listen = _parse_listen(source, f"{prefix}listen", table["listen"])
    raw_upstreams = table["upstream"] if isinstance(table["upstream"], list) else [table["upstream"]]
    if not raw_upstreams:
        raise ConfigError(source, f"{prefix}upstream", "needs at least one address")
    upstreams = []
    for item in raw_upstreams:
        try:
            upstream = parse_hostport(item)
        except AddressSyntaxError as exc:
            raise ConfigError(source, f"{prefix}upstream", str(exc)) from None
        if upstream.host == NONLOOPBACK:
            raise ConfigError(source, f"{prefix}upstream", f"{NONLOOPBACK} is only valid in listen")
        upstreams.append(upstream)
    name = table.get("name", f"port-{listen[0].port}" if listen[0].port else f"route-{index}")
    if not isinstance(name, str) or not ROUTE_NAME_RE.match(name):
        raise ConfigError(source, f"{prefix}name", f"must be 1-64 characters of A-Z a-z 0-9 _ . - , got {name!r}")
    settings = _apply_settings(source, prefix, defaults, table)
    if settings.health.interval_s and settings.health.interval_max_s < settings.health.interval_s:
        raise ConfigError(source, f"{prefix}health_interval_max", "must not be shorter than health_interval")
    try:  # loads the files now: a bad certificate is a config error, and workers start from these bytes
        tls = load_material(settings)
    except TlsSettingsError as exc:
        raise ConfigError(source, f"{prefix}{exc.field}", str(exc)) from None
    if settings.gate.mode != "off" and settings.protocol == "tcp":
        raise ConfigError(source, f"{prefix}gate", 'needs HTTP: protocol = "tcp" carries bytes it cannot read')
    faults = route_faults(source, prefix, name, table.get("fault", []))
    return RouteConfig(
        name=name, listen=listen, upstreams=tuple(upstreams), settings=settings, faults=faults, tls_material=tls
    )


@dataclass(frozen=True)
class Environment:
    """What a configuration takes from outside its document, passed in (parsing
    reads no global state): the process environment's variables, and the
    gate token for gated routes that set none when ``MCP_SIDECAR_GATE_TOKEN``
    does not either -- generated once per process by the caller, so that a
    reload keeps it and a restart of the whole tree prints a new one."""

    variables: Mapping[str, str] = field(default_factory=dict)
    generated_gate_token: str | None = None

    def secret(self, name: str) -> str | None:
        """A token from the environment, validated (a bad one is a config error naming the variable)."""
        value = self.variables.get(name)
        if not value:
            return None
        try:
            return secret_token(value)
        except ValueError as exc:
            raise ConfigError(f"${name}", "", str(exc)) from None


def _with_gate_tokens(routes: list[RouteConfig], environment: Environment) -> list[RouteConfig]:
    out = []
    for route in routes:
        gate = route.settings.gate
        if gate.mode == "token":
            if gate.token is not None:
                gate = replace(gate, token_source="config")
            elif (from_env := environment.secret(GATE_TOKEN_ENV)) is not None:
                gate = replace(gate, token=from_env, token_source="env")
            else:
                generated = environment.generated_gate_token or secrets.token_urlsafe(24)
                environment = replace(environment, generated_gate_token=generated)  # one for all routes
                gate = replace(gate, token=generated, token_source="generated")
            route = replace(route, settings=replace(route.settings, gate=gate))
        out.append(route)
    return out


def _check_routes(source: str, routes: list[RouteConfig]) -> None:
    if not routes:
        raise ConfigError(source, "route", "no routes: add [[route]] tables, --forward or --profile")
    addresses: dict[HostPort, int] = {}
    for index, route in enumerate(routes, start=1):
        for addr in route.listen:
            if addr.port and addr in addresses:
                raise ConfigError(
                    source, f"route[{index}].listen", f"{addr} is already used by route[{addresses[addr]}]"
                )
            addresses[addr] = index
    names: dict[str, int] = {}
    for index, route in enumerate(routes, start=1):
        if route.name in names:
            raise ConfigError(
                source, f"route[{index}].name", f"duplicate route name {route.name!r} (also route[{names[route.name]}])"
            )
        names[route.name] = index


def build_config(
    document: dict[str, Any] | None = None,
    *,
    source: str = "<defaults>",
    forwards: tuple[str, ...] = (),
    profile: str | None = None,
    dangerously_expose_unprotected: bool = False,
    from_file: bool = False,
    environment: Environment = Environment(),
) -> ProxyConfig:
    """Validate a parsed TOML document plus CLI routes into a ``ProxyConfig``.

    With no routes, no forwards and no profile, the default profile
    (``inspector-v1``) supplies the routes -- unless the document came from a
    file (``from_file``): a file without routes is an error, never silently
    the Inspector's routes.  ``dangerously_expose_unprotected``
    (the command-line flag) sets the ``[proxy]`` key of that name.
    ``environment``: the tokens the environment supplies (nothing is read
    from ``os.environ`` here).
    """
    document = document or {}
    _check_keys(source, "", document, TOP_KEYS)
    proxy_values = _section(source, "proxy", document, PROXY_KEYS)
    if dangerously_expose_unprotected:
        proxy_values["dangerously_expose_unprotected"] = True
    admin_values = _section(source, "admin", document, ADMIN_KEYS)
    if "token" in admin_values:
        admin_values["token_source"] = "config"
    elif (from_env := environment.secret(ADMIN_TOKEN_ENV)) is not None:
        admin_values["token"] = from_env
        admin_values["token_source"] = "env"
    proxy_values["admin"] = AdminConfig(**admin_values)
    supervisor_values = _section(source, "supervisor", document, SUPERVISOR_KEYS)
    if supervisor_values.get("heartbeat_timeout_s", DEFAULT_HEARTBEAT_TIMEOUT_S) <= supervisor_values.get(
        "heartbeat_interval_s", DEFAULT_HEARTBEAT_INTERVAL_S
    ):
        raise ConfigError(source, "supervisor.heartbeat_timeout", "must be longer than heartbeat_interval")
    proxy_values["supervisor"] = SupervisorConfig(**supervisor_values)

    observe_values = _section(source, "observe", document, OBSERVE_KEYS)
    route_defaults = {k: observe_values.pop(k) for k in list(observe_values) if k.startswith("observe.")}
    if "record" in observe_values:
        observe_values["record"] = _record_config(source, observe_values["record"])
    observe = ObserveConfig(**observe_values)
    if observe.history_s and observe.history_interval_s < 1.0:
        raise ConfigError(source, "observe.history_interval", "must be at least 1s")
    if observe.history_s and observe.history_s / observe.history_interval_s > MAX_HISTORY_POINTS:
        raise ConfigError(
            source,
            "observe.history",
            f"at most {MAX_HISTORY_POINTS} points of history_interval "
            f"({format_duration(MAX_HISTORY_POINTS * observe.history_interval_s)})",
        )
    proxy_values["observe"] = observe
    proxy_values["otel"] = otel_config(source, _table(source, "otel", document.get("otel", {})), environment.variables)
    proxy_values.update(_section(source, "faults", document, FAULTS_KEYS))

    defaults_table = _table(source, "defaults", document.get("defaults", {}))
    _check_keys(source, "defaults.", defaults_table, set(SETTING_KEYS))
    defaults = _apply_settings(source, "defaults.", with_values(RouteSettings(), route_defaults), defaults_table)

    raw_routes = document.get("route", [])
    if not isinstance(raw_routes, list):
        raise ConfigError(source, "route", "expected [[route]] tables")
    routes = [
        _build_route(source, i, _table(source, f"route[{i}]", t), defaults) for i, t in enumerate(raw_routes, start=1)
    ]

    for spec in forwards:
        index = len(routes) + 1
        name, sep, address_spec = spec.partition("=")
        if not sep:
            name, address_spec = "", spec
        try:
            fwd = parse_forward(address_spec)
        except AddressSyntaxError as exc:
            raise ConfigError("--forward", spec, str(exc)) from None
        table = {"listen": str(fwd.listen), "upstream": str(fwd.upstream)}
        if name:
            table["name"] = name
        elif fwd.listen.port:
            # The same port on two addresses ([::1]:P and 127.0.0.1:P) gets port-P and port-P-2.
            taken = {r.name for r in routes}
            table["name"] = base = f"port-{fwd.listen.port}"
            suffix = 2
            while table["name"] in taken:
                table["name"] = f"{base}-{suffix}"
                suffix += 1
        routes.append(_build_route("--forward", index, table, defaults))

    if profile is None and not routes:
        if from_file:
            raise ConfigError(
                source,
                "route",
                "no routes: add [[route]] tables (docs/configuration.md), or give --forward or --profile",
            )
        profile = DEFAULT_PROFILE
    if profile is not None:
        if profile not in PROFILES:
            raise ConfigError("--profile", "", f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
        start = len(routes)
        for table in PROFILES[profile]:
            routes.append(_build_route(f"profile {profile}", len(routes) + 1, dict(table), defaults))
        unprotected = bool(proxy_values.get("dangerously_expose_unprotected")) and profile in PROFILE_RISKS
        routes[start:] = gate_by_default(profile, routes[start:], explicit="gate" in defaults_table or unprotected)
        if not unprotected:
            refuse_exposure(profile, routes)

    _check_routes(source, routes)
    record = proxy_values["observe"].record
    if record is not None:
        names = {route.name for route in routes}
        for name in record.routes:
            if name not in names:
                raise ConfigError(source, "observe.record.routes", f"no route named {name!r}")
    if not proxy_values.get("faults_enabled"):
        for index, route in enumerate(routes, start=1):
            if route.faults:
                raise ConfigError(
                    source, f"route[{index}].fault", "fault injection is off: set [faults] enabled = true to use it"
                )
    return ProxyConfig(
        routes=tuple(_with_gate_tokens(routes, environment)), profile=profile, source=source, **proxy_values
    )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and parse a TOML file; errors name the file and the position."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None


def load_config(
    path: str | Path | None = None,
    *,
    forwards: tuple[str, ...] = (),
    profile: str | None = None,
    dangerously_expose_unprotected: bool = False,
    environment: Environment = Environment(),
) -> ProxyConfig:
    document = load_config_file(path) if path is not None else None
    return build_config(
        document,
        source=str(path) if path else "<command line>",
        forwards=forwards,
        profile=profile,
        dangerously_expose_unprotected=dangerously_expose_unprotected,
        from_file=path is not None,
        environment=environment,
    )
