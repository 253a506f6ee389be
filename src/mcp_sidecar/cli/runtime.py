"""``proxyctl route ROUTE drain|disable|enable`` and ``proxyctl log-level LEVEL``:
changing a running tree without restarting it (HAProxy's runtime API, Envoy's
``/healthcheck/fail`` and ``/logging``).

Rules this module keeps:

* Over the control socket (its peer's uid checked by the supervisor); the
  admin API has the same (``POST /api/routes/NAME?action=...``,
  ``POST /api/log-level?level=...``, with the admin token).
* A route's state holds for every worker, the ones started later included,
  and across reloads while the route exists, until ``enable``.
* One line on success, ``--json`` for scripts; exit 0 done, 1 refused (no
  such route), 2 usage, 3 not running.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..forward.state import OPERATOR_ACTIONS
from ..logs import LEVELS
from .manage import ask_supervisor, json_option, report_reply
from .options import reports_errors, resolve_state_dir, state_dir_option


@click.command("route")
@click.argument("name")
@click.argument("action", type=click.Choice(list(OPERATOR_ACTIONS)))
@json_option
@state_dir_option
@reports_errors
def route(name: str, action: str, as_json: bool, state_dir: Path | None) -> None:
    """Take route NAME out or back in: drain (new clients refused, open
    connections finish), disable (new clients refused, open connections
    closed), enable.

    Exit 0 done, 1 no such route, 3 not running."""
    report_reply(ask_supervisor(resolve_state_dir(state_dir), "route", route=name, action=action), as_json)


@click.command("log-level")
@click.argument("level", type=click.Choice(list(LEVELS)))
@json_option
@state_dir_option
@reports_errors
def log_level(level: str, as_json: bool, state_dir: Path | None) -> None:
    """Set the log level of the running supervisor and every worker.

    Exit 0 done, 3 not running."""
    report_reply(ask_supervisor(resolve_state_dir(state_dir), "log-level", level=level), as_json)
