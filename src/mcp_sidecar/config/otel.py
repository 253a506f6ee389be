"""``[otel]``: exporting every observed MCP request as an OpenTelemetry span (pure).

Rules this module keeps:

* Off unless an endpoint is set (``[otel] endpoint`` or ``traces_endpoint``,
  else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``);
  ``OTEL_SDK_DISABLED=true`` turns it off whatever the rest says.
* The file's keys win over the environment's variables; a variable fills
  what the file does not say (the OpenTelemetry SDKs' own precedence, with the
  file as the code's explicit settings).
* Every value is checked here, at start and by ``config validate``: a bad
  one is a ``ConfigError`` naming the key (``otel.sampler``) or the variable
  (``$OTEL_TRACES_SAMPLER``), never a crash later or a silent no-op.
* Traces and metrics are two signals: traces on with an endpoint (unless
  ``OTEL_TRACES_EXPORTER=none``), metrics only when asked (``[otel] metrics
  = true`` or ``OTEL_METRICS_EXPORTER=otlp``: the Prometheus endpoint is the
  default way to them).  A signal's own endpoint is taken as it is; the base
  endpoint gets ``/v1/traces`` or ``/v1/metrics`` appended.
* OTLP over HTTP with protobuf only (``OTEL_EXPORTER_OTLP_PROTOCOL`` may say
  ``http/protobuf``; ``grpc`` is refused, said why: it would need a gRPC stack).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .values import parse_duration

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_SAMPLER = "parentbased_always_on"
DEFAULT_SERVICE_NAME = "mcp-sidecar"
#: Spans a worker's queue holds before new ones are dropped (counted).
DEFAULT_QUEUE_SPANS = 2048
#: Spans sent per export request, at most.
DEFAULT_BATCH_SPANS = 512
DEFAULT_EXPORT_TIMEOUT_S = 10.0
TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
#: How often the metrics are exported (the SDKs' default of OTEL_METRIC_EXPORT_INTERVAL), seconds.
DEFAULT_METRICS_INTERVAL_S = 60.0
#: Resource attributes from the Kubernetes downward API's variables (the last one set wins).
_KUBERNETES = (
    ("k8s.pod.name", "POD_NAME"),
    ("k8s.pod.name", "K8S_POD_NAME"),
    ("k8s.namespace.name", "POD_NAMESPACE"),
    ("k8s.namespace.name", "K8S_NAMESPACE_NAME"),
    ("k8s.node.name", "NODE_NAME"),
    ("k8s.node.name", "K8S_NODE_NAME"),
)


@dataclass(frozen=True)
class OtelConfig:
    """Where spans go and which are made (``traces_endpoint`` None: tracing off)."""

    traces_endpoint: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()
    sampler: str = DEFAULT_SAMPLER
    sampler_arg: float = 1.0
    queue_spans: int = DEFAULT_QUEUE_SPANS
    batch_spans: int = DEFAULT_BATCH_SPANS
    export_timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S
    #: Notifications are spans too (opt-in: a busy server sends many).
    notifications: bool = False
    #: Where the metrics go (None: no OTLP metrics) and their headers and period.
    metrics_endpoint: str | None = None
    metrics_headers: tuple[tuple[str, str], ...] = ()
    metrics_interval_s: float = DEFAULT_METRICS_INTERVAL_S

    @property
    def enabled(self) -> bool:
        """Spans are exported."""
        return self.traces_endpoint is not None

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics_endpoint is not None


def _endpoint(value: Any, where: tuple[str, str], *, path: str = "") -> str:
    """An http(s) URL; a base endpoint gets the signal's ``path`` appended (the spec's rule)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(*where, f"expected an http:// or https:// URL, got {value!r}")
    url = urllib.parse.urlsplit(value.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(*where, f"expected an http:// or https:// URL, got {value!r}")
    try:
        url.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ConfigError(*where, f"bad port in {value!r}") from None
    if path:
        return value.strip().rstrip("/") + path
    return value.strip()


def _pairs(value: Any, where: tuple[str, str], what: str) -> tuple[tuple[str, str], ...]:
    """``k=v,k2=v2`` (values URL-decoded, as the spec says) or a TOML table."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, str):
        items = []
        for part in value.split(","):
            if not part.strip():
                continue
            key, sep, item = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(
                    *where, f"expected {what} as key=value pairs separated by commas, got {part.strip()!r}"
                )
            items.append((urllib.parse.unquote(key.strip()), urllib.parse.unquote(item.strip())))
    else:
        raise ConfigError(*where, f"expected {what} as key=value pairs, got {value!r}")
    out = []
    for key, item in items:
        if not isinstance(key, str) or not isinstance(item, str) or not key.isprintable() or not item.isprintable():
            raise ConfigError(*where, f"expected printable text keys and values, got {key!r}")
        if "\r" in item or "\n" in item:
            raise ConfigError(*where, f"a value holds a line break: {key!r}")
        out.append((key, item))
    return tuple(out)


def _sampler(value: Any, where: tuple[str, str]) -> str:
    if value not in SAMPLERS:
        raise ConfigError(*where, f"expected one of {', '.join(SAMPLERS)}, got {value!r}")
    return str(value)


def _ratio(value: Any, where: tuple[str, str]) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ConfigError(*where, f"expected a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(*where, f"expected a number from 0 to 1, got {value!r}")
    return ratio


def _flag(value: Any, where: tuple[str, str]) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(*where, f"expected true or false, got {value!r}")
    return value


def _duration(value: Any, where: tuple[str, str], why: str, *, least: float = 0.0) -> float:
    """A positive duration of at least ``least`` seconds, else ``why``."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(*where, str(exc)) from None
    if not (seconds > 0 and seconds >= least):
        raise ConfigError(*where, why)
    return seconds


def _exporter(env: Mapping[str, str], name: str) -> str:
    """``OTEL_TRACES_EXPORTER`` or ``OTEL_METRICS_EXPORTER``: otlp, none, or unset ("")."""
    exporter = (env.get(name) or "").strip()
    if exporter not in ("", "otlp", "none"):
        raise ConfigError(f"${name}", "", f"expected otlp or none, got {exporter!r}")
    return exporter


def _truthy(value: str) -> bool:
    return value.strip().lower() == "true"


_KEYS = {
    "endpoint",
    "traces_endpoint",
    "headers",
    "service_name",
    "resource_attributes",
    "sampler",
    "sampler_arg",
    "queue_spans",
    "batch_spans",
    "export_timeout",
    "notifications",
    "metrics",
    "metrics_endpoint",
    "metrics_interval",
}


def otel_config(source: str, table: Mapping[str, Any], env: Mapping[str, str]) -> OtelConfig:
    """``[otel]`` (``table``) and the OpenTelemetry variables (``env``), checked."""
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(source, f"otel.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_KEYS))})")

    def file(key: str) -> tuple[str, str]:
        return (source, f"otel.{key}")

    def var(name: str) -> tuple[str, str]:
        return (f"${name}", "")

    for name in (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    ):
        protocol = env.get(name)
        if protocol and protocol.strip() != "http/protobuf":
            raise ConfigError(*var(name), f"only http/protobuf is supported (OTLP over HTTP), got {protocol!r}")
    values: dict[str, Any] = {}
    base: tuple[Any, tuple[str, str]] | None = None
    if "endpoint" in table:
        base = (table["endpoint"], file("endpoint"))
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        base = (env["OTEL_EXPORTER_OTLP_ENDPOINT"], var("OTEL_EXPORTER_OTLP_ENDPOINT"))
    values["traces_endpoint"] = _signal_endpoint(
        source, table, env, base, "traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", TRACES_PATH
    )
    if _exporter(env, "OTEL_TRACES_EXPORTER") == "none":
        values["traces_endpoint"] = None

    def variable_headers(name: str) -> tuple[tuple[str, str], ...]:
        return _pairs(env[name], var(name), "headers") if env.get(name) else ()

    general = variable_headers("OTEL_EXPORTER_OTLP_HEADERS")
    headers = (*general, *variable_headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
    metrics_headers = (*general, *variable_headers("OTEL_EXPORTER_OTLP_METRICS_HEADERS"))
    if "headers" in table:
        headers = metrics_headers = _pairs(table["headers"], file("headers"), "headers")
    values["headers"], values["metrics_headers"] = headers, metrics_headers
    _metrics(source, table, env, base, values)
    if "notifications" in table:
        values["notifications"] = _flag(table["notifications"], file("notifications"))
    if "service_name" in table:
        if not isinstance(table["service_name"], str) or not table["service_name"].strip():
            raise ConfigError(*file("service_name"), f"expected a name, got {table['service_name']!r}")
        values["service_name"] = table["service_name"].strip()
    elif env.get("OTEL_SERVICE_NAME"):
        values["service_name"] = env["OTEL_SERVICE_NAME"].strip()
    # The Kubernetes downward API's usual variables name the pod (deploy/kubernetes sets them).
    attributes: tuple[tuple[str, str], ...] = tuple((key, env[name]) for key, name in _KUBERNETES if env.get(name))
    if env.get("OTEL_RESOURCE_ATTRIBUTES"):
        attributes = (
            *attributes,
            *_pairs(env["OTEL_RESOURCE_ATTRIBUTES"], var("OTEL_RESOURCE_ATTRIBUTES"), "attributes"),
        )
    if "resource_attributes" in table:
        attributes = (*attributes, *_pairs(table["resource_attributes"], file("resource_attributes"), "attributes"))
    values["resource_attributes"] = attributes
    if "sampler" in table:
        values["sampler"] = _sampler(table["sampler"], file("sampler"))
    elif env.get("OTEL_TRACES_SAMPLER"):
        values["sampler"] = _sampler(env["OTEL_TRACES_SAMPLER"].strip(), var("OTEL_TRACES_SAMPLER"))
    if "sampler_arg" in table:
        values["sampler_arg"] = _ratio(table["sampler_arg"], file("sampler_arg"))
    elif env.get("OTEL_TRACES_SAMPLER_ARG"):
        values["sampler_arg"] = _ratio(env["OTEL_TRACES_SAMPLER_ARG"], var("OTEL_TRACES_SAMPLER_ARG"))
    for key, low, high in (("queue_spans", 1, 1_000_000), ("batch_spans", 1, 100_000)):
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(*file(key), f"expected an integer from {low} to {high}, got {value!r}")
            values[key] = value
    if "export_timeout" in table:
        values["export_timeout_s"] = _duration(table["export_timeout"], file("export_timeout"), "must be positive")
    if _truthy(env.get("OTEL_SDK_DISABLED", "")):
        values["traces_endpoint"] = values["metrics_endpoint"] = None
    return OtelConfig(**values)


def _signal_endpoint(
    source: str,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    base: tuple[Any, tuple[str, str]] | None,
    key: str,
    variable: str,
    path: str,
) -> str | None:
    """A signal's URL: the file's own key, else its variable, else the base endpoint's."""
    if key in table:
        return _endpoint(table[key], (source, f"otel.{key}"), path="")
    if env.get(variable):
        return _endpoint(env[variable], (f"${variable}", ""), path="")
    if base is not None:
        return _endpoint(base[0], base[1], path=path)
    return None


def _metrics(
    source: str,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    base: tuple[Any, tuple[str, str]] | None,
    values: dict[str, Any],
) -> None:
    """The OTLP metrics: asked for, where to, how often."""
    asked = _exporter(env, "OTEL_METRICS_EXPORTER") == "otlp"
    if "metrics" in table:
        asked = _flag(table["metrics"], (source, "otel.metrics"))
    endpoint = _signal_endpoint(
        source, table, env, base, "metrics_endpoint", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", METRICS_PATH
    )
    if asked and endpoint is None:
        raise ConfigError(
            source,
            "otel.metrics",
            "metrics are asked for but no endpoint is set (otel.endpoint or otel.metrics_endpoint)",
        )
    values["metrics_endpoint"] = endpoint if asked else None
    if "metrics_interval" in table:
        where = (source, "otel.metrics_interval")
        values["metrics_interval_s"] = _duration(table["metrics_interval"], where, "must be at least 1s", least=1.0)
    elif env.get("OTEL_METRIC_EXPORT_INTERVAL"):
        try:
            milliseconds = int(env["OTEL_METRIC_EXPORT_INTERVAL"].strip())
        except ValueError:
            milliseconds = 0
        if milliseconds < 1000:
            raise ConfigError(
                "$OTEL_METRIC_EXPORT_INTERVAL",
                "",
                f"expected milliseconds, at least 1000, got {env['OTEL_METRIC_EXPORT_INTERVAL']!r}",
            )
        values["metrics_interval_s"] = milliseconds / 1000
