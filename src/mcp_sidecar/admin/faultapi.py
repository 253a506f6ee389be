"""The admin endpoint's fault handlers: ``GET/POST/DELETE /api/faults``
(``proxyctl fault``'s twins; the routes are declared in routes.py).

Rules this module keeps: the source decides (faults off, no such route, a
bad setting: its words, with the status that says whose mistake it is);
a change is answered once every worker applied it (``settle``).
"""

from __future__ import annotations

import json
import logging
import urllib.parse

from ..logs import log
from .replies import Ask, Reply, json_reply
from .source import AdminSource

logger = logging.getLogger("mcp_sidecar.admin.server")


class FaultHandlers:
    """Mixed into AdminServer: its ``source`` answers."""

    source: AdminSource

    def _faults(self, ask: Ask) -> Reply:
        return json_reply(200, self.source.faults())

    async def _fault_add(self, ask: Ask) -> Reply:
        try:
            table = json.loads(ask.body or b"null")
        except (ValueError, UnicodeDecodeError):
            return json_reply(400, {"error": "the body must be a JSON object: route, kind and the fault's settings"})
        if not isinstance(table, dict):
            return json_reply(400, {"error": "the body must be a JSON object: route, kind and the fault's settings"})
        status, answer = self.source.add_fault(table)
        if status == 201:
            await self.source.settle()  # (answered once every worker applies it)
            log(
                logger,
                logging.WARNING,
                "admin.fault_added",
                route=answer["fault"]["route"],
                fault=answer["fault"]["name"],
            )
        return json_reply(status, answer)

    async def _fault_clear(self, ask: Ask) -> Reply:
        route = urllib.parse.parse_qs(ask.query).get("route", [None])[0]
        removed = self.source.clear_faults(route)
        if isinstance(removed, str):
            return json_reply(409 if "is off" in removed else 404, {"error": removed})
        await self.source.settle()
        log(logger, logging.WARNING, "admin.faults_cleared", route=route, removed=removed)
        return json_reply(200, {"removed": removed})

    async def _fault_remove(self, ask: Ask) -> Reply:
        name = urllib.parse.unquote(ask.parameter or "")
        route = urllib.parse.parse_qs(ask.query).get("route", [None])[0]
        if route is None:
            matches = [f["route"] for f in self.source.faults()["faults"] if f["name"] == name]
            if len(matches) != 1:
                return json_reply(
                    400 if matches else 404,
                    {"error": f"fault {name!r} is on several routes: say which (?route=NAME)"}
                    if matches
                    else {"error": f"no fault {name!r}"},
                )
            route = matches[0]
        refused = self.source.remove_fault(route, name)
        if refused is not None:
            return json_reply(409 if "is off" in refused else 404, {"error": refused})
        await self.source.settle()
        log(logger, logging.WARNING, "admin.fault_removed", route=route, fault=name)
        return json_reply(200, {"removed": name, "route": route})
