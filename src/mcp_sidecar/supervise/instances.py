"""Finding the instances this user runs: ``proxyctl ls``, and ``top``/``tap``
without ``--admin``.

Rules this module keeps:

* A supervised instance is its state directory (the PID file's lock says
  whether it runs; its control socket answers ``status``).  An instance
  without a supervisor (``proxyctl demo``) registers in a directory of its
  own (``mcp-sidecar-demo`` beside the default state directory) with an
  ``instance.json`` it removes at exit; a file whose process is gone is
  ignored.
* Only directories this user may read are looked at: the runtime
  directories (``$XDG_RUNTIME_DIR``, ``/run`` for root, the temporary
  directory), names starting ``mcp-sidecar``, and the one ``--state-dir``
  or ``MCP_SIDECAR_STATE_DIR`` names.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .control import status_if_running
from .statedir import default_state_dir, inspect_pid_file

INSTANCE_FILE = "instance.json"
DEMO_DIR = "mcp-sidecar-demo"


def demo_dir() -> Path:
    return default_state_dir().parent / DEMO_DIR


def register(directory: Path, document: dict[str, Any]) -> None:
    """Say that this process (not supervised) serves: its pid, admin address, routes."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{INSTANCE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({**document, "pid": os.getpid()}))
    tmp.replace(directory / INSTANCE_FILE)


def unregister(directory: Path) -> None:
    try:
        registered = json.loads((directory / INSTANCE_FILE).read_text())
        if registered.get("pid") == os.getpid():
            (directory / INSTANCE_FILE).unlink()
    except (OSError, ValueError):
        pass


def registered(directory: Path) -> dict[str, Any] | None:
    """The live unsupervised instance registered in ``directory``, if any."""
    try:
        document = json.loads((directory / INSTANCE_FILE).read_text())
        os.kill(int(document["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return document if isinstance(document, dict) else None


def _roots() -> list[Path]:
    roots = [default_state_dir().parent]
    if os.environ.get("XDG_RUNTIME_DIR"):
        roots.append(Path(os.environ["XDG_RUNTIME_DIR"]))
    if os.geteuid() == 0:
        roots.append(Path("/run"))
    roots.append(Path(tempfile.gettempdir()))
    return list(dict.fromkeys(roots))


def discover() -> list[dict[str, Any]]:
    """Every instance this user can see: state directory, pid, kind, admin, routes."""
    candidates = [default_state_dir()]
    for root in _roots():
        try:
            candidates += sorted(p for p in root.iterdir() if p.name.startswith("mcp-sidecar") and p.is_dir())
        except OSError:
            continue
    found = []
    for directory in dict.fromkeys(candidates):
        demo = registered(directory)
        if demo is not None:
            found.append({"state_dir": str(directory), "kind": demo.get("kind", "demo"), **demo})
            continue
        pid_state = inspect_pid_file(directory)
        if not pid_state.running:
            continue
        status = status_if_running(directory, timeout_s=2.0) or {}
        found.append(
            {
                "state_dir": str(directory),
                "kind": "supervised",
                "pid": pid_state.pid,
                "admin": status.get("admin"),
                "routes": [r["name"] for r in status.get("routes", [])],
                "healthy": status.get("healthy"),
            }
        )
    return found
