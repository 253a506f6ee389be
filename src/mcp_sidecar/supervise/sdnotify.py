"""systemd integration without a library: sd_notify and socket activation.

* ``notify("READY=1", "STATUS=...")`` sends one datagram to
  ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); it
  does nothing outside systemd and never raises.
* ``watchdog_interval_s()`` is half of ``$WATCHDOG_USEC`` (systemd's advice)
  when the watchdog is meant for this process (``$WATCHDOG_PID``).
* ``listen_fds()`` adopts socket-activated descriptors: ``$LISTEN_FDS``
  starting at fd 3, named by ``$LISTEN_FDNAMES``, when ``$LISTEN_PID`` is us.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def notify(*lines: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def listen_fds(*, unset: bool = True) -> list[tuple[str, socket.socket]]:
    """(name, socket) for each descriptor systemd passed us; [] otherwise."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    names = os.environ.get("LISTEN_FDNAMES", "").split(":") if os.environ.get("LISTEN_FDNAMES") else []
    result = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        result.append((names[i] if i < len(names) else f"fd{fd}", sock))
    if unset:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
    return result
