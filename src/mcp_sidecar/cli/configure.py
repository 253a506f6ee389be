"""``proxyctl config validate | show``."""

from __future__ import annotations

import dataclasses
import json

import click

from ..config.parse import build_config, load_config_file
from ..config.render import effective_document, render_toml
from ..config.tls import certificate_warnings
from .options import RouteSource, environment_warnings, process_environment, reports_errors, with_route_options


@click.group()
def config() -> None:
    """Validate or show a configuration."""


def _one_file(positional: str | None, option: str | None) -> str | None:
    """FILE, given either way (``config validate FILE`` or ``--config FILE``)."""
    if positional and option and positional != option:
        raise click.UsageError(f"two configuration files given ({positional} and --config {option}): give one")
    return positional or option


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--config", "-c", "config_option", type=click.Path(dir_okay=False), help="The file (same as FILE).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def config_validate(file: str | None, config_option: str | None, as_json: bool) -> None:
    """Check FILE (or --config FILE); print a summary, exit 2 with the reason if invalid."""
    file = _one_file(file, config_option)
    if file is None:
        raise click.UsageError("Missing argument 'FILE' (or --config FILE).")
    cfg = build_config(load_config_file(file), source=file, from_file=True, environment=process_environment())
    warnings = certificate_warnings(cfg) + environment_warnings(cfg)
    if as_json:
        click.echo(
            json.dumps(
                {"ok": True, "file": file, "routes": [r.name for r in cfg.routes], "warnings": warnings}, indent=1
            )
        )
        return
    click.echo(f"{file}: ok ({len(cfg.routes)} route{'s' if len(cfg.routes) != 1 else ''})")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@with_route_options
@click.option("--json", "as_json", is_flag=True, help="The effective configuration as JSON (as GET /api/config).")
@reports_errors
def config_show(file: str | None, routes: RouteSource, as_json: bool) -> None:
    """Print the effective configuration of FILE (or --config FILE, --forward,
    --profile), defaults filled in, as TOML."""
    path = _one_file(file, routes.config_path)
    if path != routes.config_path:
        routes = dataclasses.replace(routes, config_path=path)
    loaded = routes.load()
    if as_json:
        click.echo(json.dumps(effective_document(loaded), indent=1))
        return
    click.echo(render_toml(loaded), nl=False)
