"""Rendering the effective configuration as TOML (``proxyctl config show``).

Rules this module keeps:

* Every default is written out, so the output is the whole truth and can be
  fed back as a file.
* Secrets (the admin token, the alert webhook, gate tokens) are never
  written: a comment says they are set.  Unset optional values are left out.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .keys import OBSERVE_KEYS, RECORD_KEYS, SETTING_KEYS, SUPERVISOR_KEYS
from .model import ProxyConfig, RouteSettings
from .values import format_duration, format_size


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _settings_lines(settings: RouteSettings) -> list[str]:
    """Every setting as its flat TOML key, in SETTING_KEYS' order (grouped
    ones read through their group); secrets named, never shown."""
    lines = []
    for key, (attribute, _) in SETTING_KEYS.items():
        group, dot, name = attribute.partition(".")
        value = getattr(getattr(settings, group), name) if dot else getattr(settings, attribute)
        if attribute == "gate.token":
            if value is not None:
                lines.append(f"# gate_token is set (not shown; {settings.gate.token_source})")
            continue
        if value is None or value == ():
            continue  # unset (TOML has no null)
        shown = format_duration(value) if attribute.endswith("_s") else value
        lines.append(f"{key} = {_toml_value(shown)}")
    return lines


def render_toml(config: ProxyConfig) -> str:
    """The effective configuration, every default filled in, as TOML."""
    lines = [f"# effective configuration (source: {config.source}"]
    lines[0] += f", profile: {config.profile})" if config.profile else ")"
    lines += [
        "[proxy]",
        f"workers = {_toml_value('auto' if config.workers == 0 else config.workers)}",
        f"drain_timeout = {_toml_value(format_duration(config.drain_timeout_s))}",
        f"tcp_stats_interval = {_toml_value(format_duration(config.tcp_stats_interval_s))}",
        f"observe_cpu_share = {config.observe_cpu_share!r}",
        f"observe_memory = {_toml_value(format_size(config.observe_memory_bytes))}",
        f"dangerously_expose_unprotected = {_toml_value(config.dangerously_expose_unprotected)}",
        "",
    ]
    admin = config.admin
    lines += ["[admin]", f"listen = {_toml_value(str(admin.listen) if admin.listen else 'off')}"]
    lines.append(f"open_on_loopback = {_toml_value(admin.open_on_loopback)}")
    if admin.hosts:
        lines.append(f"hosts = {_toml_value(list(admin.hosts))}")
    if admin.token:
        lines.append(f"# token is set (not shown; {admin.token_source})")
    lines.append("")
    lines.append("[observe]")
    attr_to_key = {attr: key for key, (attr, _) in OBSERVE_KEYS.items()}
    for f in fields(config.observe):
        value = getattr(config.observe, f.name)
        if f.name == "record":
            if value is not None:  # an inline table, every key shown
                keys = {attr: key for key, (attr, _) in RECORD_KEYS.items()}
                parts = [f"{keys[g.name]} = {_toml_value(getattr(value, g.name))}" for g in fields(value)]
                lines.append("record = { " + ", ".join(parts) + " }")
            continue
        shown = format_duration(value) if f.name.endswith("_s") else value
        lines.append(f"{attr_to_key[f.name]} = {_toml_value(shown)}")
    lines.append("")
    lines.append("[supervisor]")
    attr_to_key = {attr: key for key, (attr, _) in SUPERVISOR_KEYS.items()}
    for f in fields(config.supervisor):
        value = getattr(config.supervisor, f.name)
        if f.name == "alert_webhook":
            if value:
                lines.append("# alert_webhook is set (not shown)")
            continue
        shown = format_duration(value) if f.name.endswith("_s") else value
        lines.append(f"{attr_to_key[f.name]} = {_toml_value(shown)}")
    lines.append("")
    lines += ["[faults]", f"enabled = {_toml_value(config.faults_enabled)}", ""]
    otel = config.otel
    if otel.enabled or otel.metrics_enabled:  # (off: nothing to say; the OTEL_* variables were read already)
        attributes = ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in otel.resource_attributes)
        lines.append("[otel]")
        if otel.traces_endpoint is not None:
            lines.append(f"traces_endpoint = {_toml_value(otel.traces_endpoint)}")
        lines += [
            f"service_name = {_toml_value(otel.service_name)}",
            f"resource_attributes = {{ {attributes} }}" if attributes else "resource_attributes = {}",
            f"sampler = {_toml_value(otel.sampler)}",
            f"sampler_arg = {_toml_value(otel.sampler_arg)}",
            f"queue_spans = {otel.queue_spans}",
            f"batch_spans = {otel.batch_spans}",
            f"export_timeout = {_toml_value(format_duration(otel.export_timeout_s))}",
            f"notifications = {_toml_value(otel.notifications)}",
            f"metrics = {_toml_value(otel.metrics_enabled)}",
        ]
        if otel.metrics_endpoint is not None:
            lines.append(f"metrics_endpoint = {_toml_value(otel.metrics_endpoint)}")
            lines.append(f"metrics_interval = {_toml_value(format_duration(otel.metrics_interval_s))}")
        for what, headers in (("headers", otel.headers), ("metrics' headers", otel.metrics_headers)):
            if headers:
                lines.append(f"# {what} are set (not shown): {', '.join(k for k, _ in headers)}")
        lines.append("")
    for route in config.routes:
        lines.append("[[route]]")
        lines.append(f"name = {_toml_value(route.name)}")
        listen = [str(a) for a in route.listen]
        lines.append(f"listen = {_toml_value(listen if len(listen) > 1 else listen[0])}")
        ups = [str(u) for u in route.upstreams]
        lines.append(f"upstream = {_toml_value(ups if len(ups) > 1 else ups[0])}")
        lines += _settings_lines(route.settings)
        lines.append("")
        for fault in route.faults:
            lines.append("[[route.fault]]")
            for key, value in fault.as_json().items():
                if key == "route":
                    continue
                shown = format_duration(value) if isinstance(value, float) and key in _DURATION_KEYS else value
                lines.append(f"{key} = {_toml_value(shown)}")
            lines.append("")
    return "\n".join(lines)


#: A fault's keys that hold a duration (rendered with their unit).
_DURATION_KEYS = frozenset({"ttl", "latency", "jitter", "delay", "after", "timeout", "retry_after"})


def secrets_set(config: ProxyConfig) -> list[str]:
    """Which secrets the configuration holds (named, never shown)."""
    names = []
    if config.admin.token:
        names.append(f"admin.token ({config.admin.token_source})")
    if config.supervisor.alert_webhook:
        names.append("supervisor.alert_webhook")
    names += [
        f"route {r.name}: gate_token ({r.settings.gate.token_source})" for r in config.routes if r.settings.gate.token
    ]
    return names


def effective_document(config: ProxyConfig) -> dict[str, Any]:
    """The effective configuration as data (``/api/config``): exactly what
    ``render_toml`` prints, parsed back, so the two never disagree; secrets
    are named in ``secrets_set``, never shown."""
    import tomllib

    text = render_toml(config)
    return {
        "source": config.source,
        "profile": config.profile,
        "secrets_set": secrets_set(config),
        "config": tomllib.loads(text),
        "toml": text,
    }
