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
  the owner (and root) may steer the proxy.  An existing directory is used
  only if it belongs to this user and nobody else may write into it, and a
  symbolic link in its place only if this user (or root) made it: another
  local user could otherwise pre-create ``/tmp/mcp-sidecar-UID`` with links
  in it and have our files truncated or overwritten (OpenSSH's and
  systemd's rule for runtime directories).
* Files are opened with ``O_NOFOLLOW``; temporaries with ``O_EXCL`` under a
  name nobody can guess, so a planted link is never followed.
* Writing may fail once running (a full or read-only ``/run``): this module
  raises ``OSError`` as it comes; keeping the supervisor serving is the
  ``Ledger``'s business (best effort, counted, retried).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import stat
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
    """Create the state directory (0700) or check the one that is there:
    refused, in one line, unless it is this user's and only this user's."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise LocalError(f"state directory {path} exists and is not a directory") from None
    except OSError as exc:
        raise LocalError(f"cannot create state directory {path}: {exc.strerror}") from None
    check_state_dir(path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise LocalError(f"state directory {path} is not writable")
    return path


def check_state_dir(path: Path) -> None:
    """Raise ``LocalError`` unless ``path`` is a directory this user owns that
    no other user may write into (a link to one only if this user or root
    made the link)."""
    uid = os.geteuid()
    try:
        link = os.lstat(path)
        target = os.stat(path)
    except OSError as exc:
        raise LocalError(f"state directory {path}: {exc.strerror}") from None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (uid, 0):
        raise LocalError(
            f"state directory {path} is a symbolic link made by uid {link.st_uid}, not by this user "
            f"(uid {uid}): refusing it; remove it or choose another --state-dir"
        )
    if not stat.S_ISDIR(target.st_mode):
        raise LocalError(f"state directory {path} exists and is not a directory")
    if target.st_uid != uid:
        raise LocalError(
            f"state directory {path} belongs to uid {target.st_uid}, not to this user (uid {uid}): "
            "refusing it (another user could read or replace its files); remove it or choose "
            "another --state-dir"
        )
    if target.st_mode & 0o022:
        raise LocalError(
            f"state directory {path} is writable by other users (mode {stat.S_IMODE(target.st_mode):04o}):"
            f" refusing it; chmod 700 {path} or choose another --state-dir"
        )


def write_private_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically: a new temporary (``O_EXCL``, a random
    name, never a link) written, synced and renamed over it.  Raises
    ``OSError`` (nothing half-written is left behind)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_private_file(path: Path, limit: int = 1 << 20) -> bytes:
    """Read a state file without following a link in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


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
        text = read_private_file(path, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def admin_token_path(state_dir: Path, port: int) -> Path:
    """Where the admin token generated by the instance whose admin endpoint
    listens on ``port`` is kept for ``proxyctl`` (one file per port: two
    instances never share one)."""
    return state_dir / f"admin-{port}.token"


def write_admin_token(state_dir: Path, port: int, token: str) -> Path:
    """Keep a generated admin token for this user's ``proxyctl`` (0600, in the
    0700 state directory); raises ``OSError``."""
    path = admin_token_path(state_dir, port)
    write_private_file(path, token.encode() + b"\n", 0o600)
    return path


def read_admin_token(state_dir: Path, port: int) -> str | None:
    try:
        text = read_private_file(admin_token_path(state_dir, port), 4096).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text or None


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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
        #: Why the PID could not be written into the (locked) file, if it could not.
        self.write_error: OSError | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        previous = inspect_pid_file(self.path.parent)
        # The lock is held on a read-only descriptor: a running supervisor keeps
        # no file of the state directory open for writing (it could not be
        # remounted read-only, and nothing is written through it anyway).
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise LocalError(f"cannot open the PID file {self.path}: {exc.strerror}") from None
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
        self._fd = fd
        # The lock is what says "running"; the number in the file is for
        # people and is best effort (a full /run must not stop a start).
        try:
            out = os.open(self.path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                os.write(out, f"{os.getpid()}\n".encode())
                os.fsync(out)
            finally:
                os.close(out)
        except OSError as exc:
            self.write_error = exc

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
    def load(cls, state_dir: Path) -> Counters:
        path = state_dir / COUNTERS_FILE
        data: dict[str, Any] = {}
        try:
            data = json.loads(read_private_file(path))
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
        """Write the file atomically; raises ``OSError`` (ENOSPC, EIO, EROFS)."""
        write_private_file(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode(), 0o644)
