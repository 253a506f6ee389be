"""The upstream health checks of a supervisor with several workers: run once
per upstream, here, and passed on to every worker.

Rules this module keeps:

* One ``RouteHealth`` per configured route (health/checks.py), checked by
  tasks of the supervisor; after every check the states go to the workers
  (``HealthUpdate``), which apply them to their own copies (their connect
  order and readiness follow).  A new worker gets the states with its
  configuration; a reload starts the checks of the new configuration.
* The states survive any worker's exit (they are not in a worker).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..config.model import ProxyConfig
from ..health.checks import RouteHealth, route_health, run_checks
from ..net.exhaustion import LocalExhaustion
from ..net.upstream import Connector
from .messages import HealthUpdate


class SupervisorChecks:
    """The health of every route's upstreams, checked by the supervisor."""

    def __init__(self, config: ProxyConfig, on_change: Callable[[HealthUpdate], None]) -> None:
        self.config = config
        self.on_change = on_change
        self.routes: dict[str, RouteHealth] = {route.name: route_health(route) for route in config.routes}
        self.exhaustion = LocalExhaustion()
        self._scope: trio.CancelScope | None = None

    def update(self) -> HealthUpdate:
        """Every route's upstream states now."""
        return HealthUpdate(tuple((name, tuple(health.targets)) for name, health in self.routes.items()))

    def _checked(self) -> None:
        self.on_change(self.update())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check every enabled upstream until cancelled (or ``reconfigure``d)."""
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                for route in self.config.routes:
                    health = self.routes[route.name]
                    if not health.enabled:
                        continue
                    s = route.settings
                    connector = Connector(route.upstreams, s.connect_timeout_s, 0.0, s.max_connecting, health.preferred)
                    for target in health.targets:
                        nursery.start_soon(run_checks, route.name, s, target, connector, self.exhaustion, self._checked)
                task_status.started()
                await trio.sleep_forever()

    def reconfigure(self, config: ProxyConfig, nursery: trio.Nursery) -> None:
        """A reload: the new configuration's checks (a route kept keeps its state
        while its upstreams are the same)."""
        old = self.routes
        self.config = config
        self.routes = {}
        for route in config.routes:
            kept = old.get(route.name)
            fresh = route_health(route)
            same = kept is not None and [t.address for t in kept.targets] == [t.address for t in fresh.targets]
            self.routes[route.name] = kept if same and kept is not None else fresh
        if self._scope is not None:
            self._scope.cancel()
        nursery.start_soon(self.run)
