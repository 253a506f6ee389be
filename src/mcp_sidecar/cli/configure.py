"""``proxyctl config validate | show``."""

from __future__ import annotations

import click

from ..config.parse import build_config, load_config_file
from ..config.render import render_toml
from .options import RouteSource, reports_errors, with_route_options


@click.group()
def config() -> None:
    """Validate or show a configuration."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@reports_errors
def config_validate(file: str) -> None:
    """Check FILE; print a summary, exit 2 with the reason if invalid."""
    cfg = build_config(load_config_file(file), source=file)
    click.echo(f"{file}: ok ({len(cfg.routes)} route{'s' if len(cfg.routes) != 1 else ''})")


@config.command("show")
@with_route_options
@reports_errors
def config_show(routes: RouteSource) -> None:
    """Print the effective configuration, defaults filled in, as TOML."""
    click.echo(render_toml(routes.load()), nl=False)


