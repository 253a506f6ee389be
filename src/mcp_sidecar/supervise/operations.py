"""What an operator asks of a running supervisor: restart, reload, a gated
route's URL, stop -- over the control socket (control.py) or a signal.

Rules this module keeps:

* Restart and reload take the supervisor's lock, one at a time, and are
  refused while stopping (the workers drain; nothing new starts).
* A graceful restart or a reload hands over: the new worker is active
  before the old one drains, so no client is refused.  A reload whose
  configuration is invalid, or whose new worker does not start, changes
  nothing (the old worker keeps serving).
* A gated route's URL, token included, goes only to the control socket's
  peer (its uid checked there), never to a log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from .. import logs
from ..config.faults import FaultError, runtime_fault
from ..config.model import ProxyConfig
from ..config.profiles import exposure_warnings
from ..config.tls import certificate_warnings
from ..config.values import format_span
from ..errors import SidecarError
from ..forward.limits import CountSlots
from ..forward.state import OPERATOR_ACTIONS
from ..logs import log
from ..net.listeners import rebind
from ..net.origins import gate_urls
from . import sdnotify
from .cpus import worker_target
from .ledger import RestartCause
from .messages import Drain
from .reporting import SupervisorReporting
from .workers import KillReason, Role, Stopping, Worker

logger = logging.getLogger("mcp_sidecar.supervise.supervisor")


class SupervisorOperations(SupervisorReporting):
    """The supervisor's operations (its attributes declared in lifecycle.py
    and here for what this part uses)."""

    reload_config: Callable[[], ProxyConfig]
    _lock: trio.Lock

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def request_stop(self) -> None:
        raise NotImplementedError

    async def restart(self, hard: bool = False) -> dict[str, Any]:
        """Graceful: a new worker takes over, the old one drains.  Hard: kill now."""
        async with self._lock:
            if self.stopping:
                return {"ok": False, "stopping": True, "error": "stopping: restart is not possible now"}
            olds = list(self.actives)
            if not olds:
                return {"ok": False, "error": "no active worker"}
            if hard:
                for old in olds:
                    old.kill(KillReason.RESTART)
                    assert self.ledger is not None
                    self.ledger.record("worker_restart", old_pid=old.pid, hard=True)
                pids = ", ".join(str(o.pid) for o in olds)
                return {
                    "ok": True,
                    "restart": "hard",
                    "old_pids": [o.pid for o in olds],
                    "message": f"restarted (hard): killed worker(s) {pids}; new workers take over the sockets",
                }
            assert self.sockets is not None
            # One at a time: a new worker serves before an old one drains.
            news: list[Worker] = []
            for old in olds:
                new = self.standby if self.standby is not None and not self.standby.exited.is_set() else None
                if new is None:
                    try:
                        new = await self._spawn(self.config, self.sockets)
                    except Stopping:
                        return {"ok": False, "stopping": True, "error": "stopping: restart is not possible now"}
                if not await self._activate(new):
                    return {"ok": False, "error": "the new worker did not start", "new_pids": [n.pid for n in news]}
                news.append(new)
                if old in self.actives:
                    self.actives.remove(old)
                    old.role = Role.DRAINING
                    await self._send(old, Drain(handover=True))
                self._count_restart(RestartCause.RESTART)
                assert self.ledger is not None
                self.ledger.record("worker_restart", old_pid=old.pid, new_pid=new.pid)
        self._wake()
        return {
            "ok": True,
            "restart": "graceful",
            "old_pids": [o.pid for o in olds],
            "new_pids": [n.pid for n in news],
            "message": f"restarted: worker(s) {_pids(news)} serve; {_pids(olds)} drain for up to "
            f"{self.config.drain_timeout_s:g} s (the configuration was not re-read)",
        }

    async def reload(self, cause: RestartCause = RestartCause.RELOAD) -> dict[str, Any]:
        """Re-read the config; apply it through a graceful restart, or change nothing
        (``cause``: how the replaced workers are counted -- ``proxyctl restart``
        re-reads the configuration too, as ``systemctl restart`` does)."""
        async with self._lock:
            if self.stopping:
                return {"ok": False, "stopping": True, "error": "stopping: reload is not possible now"}
            current = self.sockets
            assert current is not None
            sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                try:
                    new_config = self.reload_config()
                    new_sockets = rebind(current, new_config)
                except SidecarError as exc:
                    log(logger, logging.ERROR, "reload.rejected", error=str(exc))
                    return {"ok": False, "error": str(exc)}
                new_target = worker_target(new_config.workers)
                new_slots = CountSlots(len(new_config.routes), new_target)
                news: list[Worker] = []
                failed: dict[str, Any] | None = None
                try:
                    for _ in range(new_target):
                        new = await self._spawn(new_config, new_sockets, new_slots, new_target)
                        if not await self._activate(new):
                            failed = {"ok": False, "error": "a new worker did not start; the old ones keep serving"}
                            break
                        news.append(new)
                except Stopping:
                    failed = {"ok": False, "stopping": True, "error": "stopping: reload is not possible now"}
                if failed is not None:
                    for new in news:  # (they served alongside: drained, not killed)
                        if new in self.actives:
                            self.actives.remove(new)
                            new.role = Role.DRAINING
                            await self._send(new, Drain(handover=True))
                    new_slots.close_fd()
                    new_sockets.close_unshared(current)
                    return failed
                replaced = 0
                for worker in self._alive():
                    if worker in news:
                        continue
                    if worker.role is Role.ACTIVE:
                        if worker in self.actives:
                            self.actives.remove(worker)
                        worker.role = Role.DRAINING
                        replaced += 1
                        await self._send(worker, Drain(handover=True))
                    elif worker.role in (Role.STANDBY, Role.STARTING):
                        await self._retire(worker, KillReason.RELOAD)
                admin_changed = new_sockets.admin is not current.admin or new_config.admin != self.config.admin
                record_changed = new_config.observe.record != self.config.observe.record or (
                    new_config.observe.record is not None and new_config.routes != self.config.routes
                )
                self.slots.close_fd()
                self.sockets, self.config, self.target, self.slots = new_sockets, new_config, new_target, new_slots
                if self.central.reconfigure(new_config):
                    self._restart_otel()
                self._prune_controls()
                self.fault_store.reloaded(self.config)
                self._faults_changed()  # (the new workers were told the old suppressions when they started)
                assert self._nursery is not None
                self.checks.reconfigure(new_config, self._nursery)
                if admin_changed:
                    self._restart_admin()
                if record_changed:
                    self._restart_recorders()
                current.close_unshared(new_sockets)
                for _ in range(replaced):  # (per worker replaced, as a restart counts)
                    self._count_restart(cause)
                assert self.ledger is not None
                self.ledger.record(str(cause), routes=[r.name for r in new_config.routes])
                for warning in exposure_warnings(new_config):
                    log(logger, logging.WARNING, "exposure.unprotected", detail=warning)
                for warning in certificate_warnings(new_config):
                    log(logger, logging.WARNING, "tls.certificate_expiry", detail=warning)
                names = [r.name for r in new_config.routes]
                verb = "reloaded" if cause is RestartCause.RELOAD else "restarted with the configuration re-read"
                return {
                    "ok": True,
                    "routes": names,
                    "new_pids": [n.pid for n in news],
                    "message": f"{verb}: {len(names)} route{'s' if len(names) != 1 else ''} ({', '.join(names)}), "
                    f"worker(s) {_pids(news)}; the previous ones drain for up to {new_config.drain_timeout_s:g} s",
                }
            finally:
                sdnotify.notify("READY=1", "STATUS=serving")
                self._wake()

    def _route_command(self, name: Any, action: Any) -> dict[str, Any]:
        if action not in OPERATOR_ACTIONS:
            return {"ok": False, "error": f"action must be one of {', '.join(OPERATOR_ACTIONS)}, got {action!r}"}
        refused = self.control_route(str(name), str(action))
        if refused is not None:
            return {"ok": False, "error": refused}
        state = OPERATOR_ACTIONS[str(action)]
        what = {
            "enabled": "enabled: new clients are forwarded again",
            "draining": "draining: new clients are refused (503 for HTTP), open connections finish",
            "disabled": "disabled: new clients are refused (503 for HTTP), open connections were closed",
        }[state]
        return {"ok": True, "route": name, "state": state, "message": f"route {name} {what}"}

    def _fault_command(self, request: dict[str, Any]) -> dict[str, Any]:
        """``proxyctl fault list|add|remove|clear``."""
        action = request.get("action")
        if action == "list":
            return {"ok": True}
        if action == "add":
            try:
                spec = runtime_fault(
                    request.get("fault") or {}, lambda route: self.fault_store.names(self.config, route)
                )
            except FaultError as exc:
                return {"ok": False, "error": exc.said, "usage": True}
            refused = self.fault_add(spec)
            if refused is not None:
                return {"ok": False, "error": refused}
            return {
                "ok": True,
                "fault": spec.as_json(),
                "message": f"fault {spec.name} on route {spec.route}: {spec.describe()}"
                + (f", for {format_span(spec.ttl_s)}" if spec.ttl_s else ""),
            }
        if action == "remove":
            route, name = str(request.get("route")), str(request.get("name"))
            refused = self.fault_remove(route, name)
            if refused is not None:
                return {"ok": False, "error": refused}
            return {"ok": True, "message": f"fault {name} removed from route {route}"}
        if action == "clear":
            only = request.get("route")
            removed = self.fault_clear(None if only is None else str(only))
            if isinstance(removed, str):
                return {"ok": False, "error": removed}
            where = f"route {only}" if only else "every route"
            return {"ok": True, "removed": removed, "message": f"{removed} fault(s) removed from {where}"}
        return {"ok": False, "error": f"action must be list, add, remove or clear, got {action!r}", "usage": True}

    def _gate_urls(self, name: Any) -> dict[str, Any]:
        """A gated route's URLs, token included: for the operator who asks
        over the control socket (its peer's uid is checked), never logged."""
        assert self.sockets is not None
        route = next((r for r in self.config.routes if r.name == name), None)
        if route is None:
            return {
                "ok": False,
                "error": f"no route {name!r} (routes: {', '.join(r.name for r in self.config.routes)})",
            }
        urls = gate_urls(route, self.sockets.routes)
        if not urls:
            return {"ok": False, "error": f"route {name} is not gated (no token to put in a URL)"}
        return {"ok": True, "route": route.name, "urls": urls}

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return self.status()
        if self.stopping and command == "stop":
            return {
                "ok": True,
                "stopping": True,
                "already": True,
                "drain_timeout_s": self.config.drain_timeout_s,
                "message": f"already stopping: open connections drain for up to {self.config.drain_timeout_s:g} s",
            }
        if self.stopping and command in ("restart", "reload"):
            return {
                "ok": False,
                "stopping": True,
                "error": f"stopping: the workers are draining (up to {self.config.drain_timeout_s:g} s); "
                f"{command} is not possible now",
            }
        if command == "restart":
            if request.get("reread") and not request.get("hard"):
                return await self.reload(cause=RestartCause.RESTART)
            return await self.restart(hard=bool(request.get("hard")))
        if command == "reload":
            return await self.reload()
        if command == "url":
            return self._gate_urls(request.get("route"))
        if command == "route":
            reply = self._route_command(request.get("route"), request.get("action"))
            await self.refresh_reports()  # (answered once every worker applies it)
            return reply
        if command == "fault":
            reply = self._fault_command(request)
            await self.refresh_reports()  # (answered once every worker applies it)
            if reply.get("ok") and request.get("action") == "list":
                reply.update(self.faults_view())
            return reply
        if command == "log-level":
            level = request.get("level")
            if level not in logs.LEVELS:
                return {"ok": False, "error": f"log level must be one of {', '.join(logs.LEVELS)}, got {level!r}"}
            self.set_log_level(str(level))
            await self.refresh_reports()
            return {"ok": True, "level": level, "message": f"log level {level} (the supervisor and every worker)"}
        if command == "stop":
            self.request_stop()
            return {
                "ok": True,
                "stopping": True,
                "drain_timeout_s": self.config.drain_timeout_s,
                "message": f"stopping: no new connections; open ones drain for up to {self.config.drain_timeout_s:g} s",
            }
        return {"ok": False, "error": f"unknown command {command!r}"}


def _pids(workers: list[Worker]) -> str:
    return ", ".join(str(w.pid) for w in workers)
