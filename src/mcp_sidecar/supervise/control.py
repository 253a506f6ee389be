"""The control socket: ``proxyctl`` talking to a running supervisor.

Rules this module keeps:

* One JSON object per line each way, on a unix socket (mode 0600) in the
  state directory; the supervisor also checks the caller's uid
  (``SO_PEERCRED``) and refuses others.
* A request must arrive within ``REQUEST_TIMEOUT_S`` and be at most
  ``MAX_REQUEST_BYTES``; anything malformed closes the connection.
* The client side (``send_command``) is blocking and synchronous: the CLI
  does nothing else meanwhile.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import EXIT_NOT_RUNNING, LocalError
from .statedir import CONTROL_SOCKET

#: Graceful restart and reload start a worker (cold Python start, ~0.3 s)
#: and wait for it to serve: allow for a loaded host.
CONTROL_TIMEOUT_S = 60.0


#: The server side's bounds on one request.
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 65536


class NotRunning(LocalError):
    """No supervisor answers on this state directory."""

    exit_code = EXIT_NOT_RUNNING


def send_command(state_dir: Path, command: str, timeout_s: float = CONTROL_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
    path = state_dir / CONTROL_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(str(path)) from exc
        sock.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotRunning(f"{path}: no answer")
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError(f"{path}: not a reply")
    return reply


def status_if_running(state_dir: Path, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The running supervisor's status, or None when none answers (for
    commands that use the running instance when there is one)."""
    try:
        return send_command(state_dir, "status", timeout_s=timeout_s)
    except (NotRunning, OSError, ValueError):
        return None


# --- the supervisor's side -------------------------------------------------------------


def peer_allowed(sock: trio.socket.SocketType) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    return uid in (0, os.geteuid())


async def open_control_socket(path: Path) -> trio.SocketListener:
    try:
        os.unlink(path)  # (a stale socket from a supervisor that died: the PID lock says it is ours)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    return trio.SocketListener(sock)


async def serve_control(
    listener: trio.SocketListener, handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
) -> None:
    """Answer control requests with ``handle`` until cancelled."""

    async def connection(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                if not peer_allowed(stream.socket):
                    await stream.send_all(b'{"ok": false, "error": "permission denied"}\n')
                    return
                with trio.fail_after(REQUEST_TIMEOUT_S):
                    data = b""
                    while not data.endswith(b"\n") and len(data) < MAX_REQUEST_BYTES:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            return
                        data += chunk
                request = json.loads(data)
                if not isinstance(request, dict):
                    return
                reply = await handle(request)
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (ValueError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async with listener:
        await trio.serve_listeners(connection, [listener])
