"""The state directory: PID file lock, persistent counters, control socket.

Rules this module keeps:

* The PID file is held with ``fcntl.flock`` for the supervisor's whole life.
  Whether a supervisor runs is decided by the lock, never by the PID in the
  file: a file whose lock is free is stale (its process is gone, or the PID
  was reused by something else) and is replaced.
* Counters are written atomically (temporary file + ``rename``) so a crash
  mid-write never leaves a torn file; an unreadable file is kept aside as
  ``counters.json.corrupt`` and counting starts again.
* The directory is created mode 0700 and the control socket is 0600: only
  the owner (and root) may steer the proxy.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LocalError

STATE_DIR_ENV = "MCP_SIDECAR_STATE_DIR"
PID_FILE = "mcp-sidecar.pid"
COUNTERS_FILE = "counters.json"
CONTROL_SOCKET = "control.sock"
#: Events kept in the counters file (newest last).
MAX_EVENTS = 50


def default_state_dir() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    if os.geteuid() == 0:
        return Path("/run/mcp-sidecar")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "mcp-sidecar"
    return Path(tempfile.gettempdir()) / f"mcp-sidecar-{os.geteuid()}"


def ensure_state_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalError(f"cannot create state directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise LocalError(f"state directory {path} is not writable")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@dataclass
class PidFileState:
    """What the PID file says, judged by its lock."""

    running: bool
    pid: int | None
    #: Why a PID file without a lock holder is stale ("gone", "reused"), else None.
    stale: str | None = None

    def describe(self) -> str:
        if self.running:
            return f"running (pid {self.pid})"
        if self.pid is None:
            return "not running"
        return f"not running (stale PID file: pid {self.pid} {self.stale})"


def inspect_pid_file(state_dir: Path) -> PidFileState:
    """Is a supervisor running on this state directory?  Decided by the lock."""
    path = state_dir / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return PidFileState(False, None)
    except OSError:
        return PidFileState(False, None)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return PidFileState(True, _read_pid(path))
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    pid = _read_pid(path)
    if pid is None:
        return PidFileState(False, None)
    return PidFileState(False, pid, "reused by another process" if _pid_alive(pid) else "is gone")


class PidLock:
    """The supervisor's PID file, locked for as long as this object lives."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PID_FILE
        self.replaced_stale: PidFileState | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        previous = inspect_pid_file(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                pid = _read_pid(self.path)
                raise LocalError(
                    f"already running (pid {pid if pid is not None else '?'}, state directory "
                    f"{self.path.parent}); stop it with `proxyctl stop` or use another --state-dir"
                ) from None
            raise
        if previous.pid is not None and not previous.running:
            self.replaced_stale = previous
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


@dataclass
class Counters:
    """Failure counters that survive restarts of the whole process tree."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> "Counters":
        path = state_dir / COUNTERS_FILE
        data: dict[str, Any] = {}
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError):
            try:
                path.rename(path.with_suffix(".json.corrupt"))
            except OSError:
                pass
            data = {}
        counters = cls(path, data)
        counters._defaults()
        return counters

    def _defaults(self) -> None:
        d = self.data
        d.setdefault("version", 1)
        d.setdefault("supervisor_starts", 0)
        d.setdefault("worker_restarts", {})
        d.setdefault("upstream_connect_failures", {})
        d.setdefault("upstream_down", {})
        d.setdefault("last", {})
        d.setdefault("events", [])

    def bump(self, section: str, key: str, n: int = 1) -> None:
        table = self.data[section]
        table[key] = table.get(key, 0) + n
        self.data["last"][f"{section}.{key}"] = time.time()

    def event(self, name: str, **details: Any) -> None:
        events = self.data["events"]
        events.append({"ts": time.time(), "event": name, **details})
        del events[:-MAX_EVENTS]

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
