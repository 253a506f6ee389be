"""When a connection's observation stops before the connection does: the
fail-open policy, counted and logged by cause.

Rules this module keeps:

* Whatever the cause, the observer stops (``ConnectionObserver.stop``) and
  the bytes keep flowing unchanged; the pump forwards the rest opaque.
* Each cause is counted apart, so an operator can tell them apart:
  ``shed`` (the worker's CPU budget, ``mcp_sidecar_observer_shed_total``),
  ``out_of_memory`` (the inspection memory budget, a local limit),
  ``peer_fault`` (the peer's bytes defeated the observer,
  ``mcp_sidecar_observer_errors_total{protocol}``) and ``bug`` (a defect of
  ours, ``mcp_sidecar_observer_bugs_total``, logged once per kind with its
  traceback).
* Nothing here raises: this is the path taken when something already went
  wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from ..logs import log
from ..observe.connection import ConnectionObserver, Mode
from .routeobservation import RouteObservation

logger = logging.getLogger("mcp_sidecar.forward.observation")

#: Bug kinds already logged with a traceback (once each per process).
_BUGS_LOGGED: set[str] = set()


def shed(observer: ConnectionObserver, route: RouteObservation, conn_id: int) -> None:
    """Over the CPU budget: this connection is forwarded opaque from now on."""
    protocol = observer.mode
    observer.stop(Mode.SHED)
    route.shed += 1
    route.budget.shed += 1
    log(
        logger,
        logging.INFO,
        "observer.shed",
        route=route.route,
        conn=conn_id,
        protocol=protocol,
        budget=route.budget.share,
    )


def out_of_memory(observer: ConnectionObserver, route: RouteObservation, conn_id: int) -> None:
    """The worker's inspection buffers are full: stop observing this
    connection (a local limit, counted apart from peer faults)."""
    protocol = observer.mode
    observer.stop(Mode.FAILED)
    route.memory_exhausted += 1
    log(
        logger,
        logging.INFO,
        "observer.memory_exhausted",
        route=route.route,
        conn=conn_id,
        protocol=protocol,
        limit_bytes=route.memory.limit,
    )


def peer_fault(observer: ConnectionObserver, route: RouteObservation, conn_id: int, exc: BaseException) -> None:
    """The peer's bytes are not what the observer can read: give up on them."""
    protocol = observer.mode
    observer.stop(Mode.FAILED)
    route.child(route.metrics.observer_errors, protocol).inc()
    log(
        logger,
        logging.INFO,
        "observer.gave_up",
        route=route.route,
        conn=conn_id,
        protocol=protocol,
        error=str(exc)[:200],
    )


def bug(observer: ConnectionObserver, route: RouteObservation, conn_id: int, exc: Exception) -> None:
    """A defect in the observation code met this connection: fail open,
    count it apart from peer garbage, log the first of each kind with its
    traceback."""
    protocol = observer.mode
    route.bugs += 1
    log_bug(exc, route=route.route, conn=conn_id, protocol=protocol)
    try:
        observer.stop(Mode.FAILED)
    except Exception:  # the defect may be in stop itself
        observer.mode = Mode.FAILED


def log_bug(exc: Exception, **fields: Any) -> None:
    """A defect of ours: the first of each kind is logged with its traceback
    (``observer.bug``), the rest only counted by the caller."""
    kind = type(exc).__name__
    if kind not in _BUGS_LOGGED:
        _BUGS_LOGGED.add(kind)
        logger.error("observer.bug", exc_info=exc, extra={"sidecar_fields": {**fields, "error": kind}})
