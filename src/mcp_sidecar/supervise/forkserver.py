"""Workers forked from a pre-imported parent: the fork server.

A worker started with ``exec`` is a new interpreter that imports everything
again: ~24 MiB of private memory each, twice (the active worker and the
standby).  Forked from a parent that has already imported it all, a worker
shares those pages copy-on-write and pays only for what it writes.

Rules this module keeps:

* ``ForkServer.start()`` runs before trio does and before the supervisor
  takes its PID lock or binds a socket: the server inherits nothing it could
  keep open.  It has imported everything a worker runs and frozen the GC
  (``gc.freeze``: those objects are never scanned again, so collecting does
  not dirty their pages), and waits for requests on a Unix socket.
* A request carries the worker's descriptors (SCM_RIGHTS) and the numbers the
  supervisor knows them by.  The server forks; the child becomes the worker
  under a fresh ``trio.run`` and never returns into the server's loop.  The
  reply carries the child's pid and a pidfd: the supervisor signals the
  worker through it (no pid-reuse race) and sees it exit by it.
* The server reaps its children and reports each exit status (the
  ``subprocess`` convention: negative for a signal).
* It ignores SIGINT, SIGTERM and SIGHUP (the supervisor decides what a signal
  means); when its socket closes it forks no more, reaps what is left and
  exits.  A server that died is not restarted: workers are exec'd from then on.
* Forked workers run the code imported when the server started: a restart
  does not pick up a new version installed meanwhile (``worker_spawn =
  "exec"`` does).
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from ..errors import LocalError
from . import worker

#: Largest message either way (requests and replies are a few dozen bytes).
MAX_MESSAGE_BYTES = 4096
#: Descriptors per request: the listeners, the admin socket and the channel.
MAX_FDS = 253  # SCM_MAX_FD
_INT_SIZE = array.array("i").itemsize


class WorkerProcess(Protocol):
    """What the supervisor asks of a worker's process handle (``trio.Process``
    or ``ForkedWorker``)."""

    @property
    def pid(self) -> int: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


class ForkServerGone(LocalError):
    """The fork server is not there any more (it died, or never started)."""


def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def _decode(data: bytes, ancillary: list[tuple[int, int, bytes]]) -> tuple[dict[str, Any] | None, list[int]]:
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % _INT_SIZE)])
    return (json.loads(data) if data else None), list(fds)


# --- the server's side (a plain blocking process, no trio) -----------------------------------


def _serve(sock: socket.socket) -> None:
    """The fork server's loop; returns when its socket closed and its children are reaped."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # (the wakeup fd does the work)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    children: set[int] = set()
    listening = True
    while listening or children:
        for fd, _ in poller.poll():
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            try:
                data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE_BYTES, socket.CMSG_SPACE(MAX_FDS * _INT_SIZE))
            except OSError:  # the supervisor closed with a reply unread (ECONNRESET): it is gone
                data, ancillary = b"", []
            request, fds = _decode(data, ancillary)
            if request is None:  # the supervisor is gone
                listening = False
                poller.unregister(sock)
                continue
            pid = _fork_worker(sock, (wake_r, wake_w), dict(zip(request["fds"], fds, strict=True)))
            for fd_ in fds:
                os.close(fd_)
            if pid is None:
                continue
            children.add(pid)
            pidfd = os.pidfd_open(pid)
            try:
                _send(sock, {"pid": pid}, [pidfd])
            except OSError:
                pass
            finally:
                os.close(pidfd)
        while children:  # reap (SIGCHLD may have merged several exits into one wakeup)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
            if listening:
                try:
                    _send(sock, {"exit": pid, "returncode": os.waitstatus_to_exitcode(status)})
                except OSError:
                    pass


def _fork_worker(sock: socket.socket, wake: tuple[int, int], fd_map: dict[int, int]) -> int | None:
    try:
        pid = os.fork()
    except OSError as exc:
        try:
            _send(sock, {"error": f"fork: {exc.strerror or exc}"})
        except OSError:
            pass
        return None
    if pid:
        return pid
    code = 1
    try:  # the worker, from here on; never back into the server's loop
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        channel_fd = fd_map.pop(-1)
        code = worker.run_forked(channel_fd, fd_map)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# --- the supervisor's side ------------------------------------------------------------------


class ForkedWorker:
    """A worker process forked by the server, with the calls the supervisor
    makes of a ``trio.Process``: ``pid``, ``kill()``, ``await wait()``."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self.returncode: int | None = None
        self._reported = trio.Event()

    def kill(self) -> None:
        if self.returncode is None and self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def send_signal(self, signum: int) -> None:
        if self.returncode is None and self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, signum)
            except ProcessLookupError:
                pass

    def _exited(self, returncode: int | None) -> None:
        if self.returncode is None:
            self.returncode = returncode
        self._reported.set()

    async def wait(self) -> int:
        """Its exit status once it exited (as the server reported it; if the
        server is gone, by the pidfd alone and with status -SIGKILL unknown:
        reported as 1)."""
        await trio.lowlevel.wait_readable(self._pidfd)  # readable once the process has exited
        with trio.move_on_after(5):
            await self._reported.wait()  # the status, from the server (normally right behind)
        os.close(self._pidfd)
        self._pidfd = -1
        if self.returncode is None:
            self.returncode = 1
        return self.returncode


class ForkServer:
    """The supervisor's handle on the fork server."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid
        self._workers: dict[int, ForkedWorker] = {}
        self._lock = trio.Lock()
        #: The server's answers to spawn requests: the worker, or why not.
        self._replies: trio.MemorySendChannel[ForkedWorker | str]
        self._replies, self._reply_queue = trio.open_memory_channel(1)
        self.alive = True

    @classmethod
    def start(cls) -> ForkServer | None:
        """Fork the server now (before trio runs); None where it cannot work."""
        if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
            return None
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:
            return None  # a kernel before 5.3, or a sandbox that forbids it
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.collect()
        gc.freeze()  # everything imported so far: never scanned, so shared pages stay clean
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                parent.close()
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.close(devnull)
                _serve(child)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        child.close()
        parent.setblocking(False)
        return cls(parent, pid)

    async def run(self) -> None:
        """Read the server's replies and exit reports (a task of the supervisor)."""
        sock = trio.socket.from_stdlib_socket(self._sock)
        try:
            while True:
                try:
                    data, ancillary, _, _ = await sock.recvmsg(MAX_MESSAGE_BYTES, socket.CMSG_SPACE(4 * _INT_SIZE))
                except OSError:
                    data, ancillary = b"", []
                message, fds = _decode(data, ancillary)
                if message is None:
                    break
                if "exit" in message:
                    forked = self._workers.pop(message["exit"], None)
                    if forked is not None:
                        forked._exited(message["returncode"])
                    continue
                if "pid" in message and fds:
                    # Registered now: its exit report may be the very next message.
                    forked = self._workers[message["pid"]] = ForkedWorker(message["pid"], fds[0])
                    for extra in fds[1:]:
                        os.close(extra)
                    await self._replies.send(forked)
                else:
                    for fd in fds:
                        os.close(fd)
                    await self._replies.send(str(message.get("error", "the fork server did not fork")))
        finally:
            self.alive = False
            for forked in self._workers.values():
                forked._exited(None)
            self._workers.clear()
            await self._replies.aclose()

    async def spawn(self, fds: list[int], channel_fd: int) -> ForkedWorker:
        """A new worker holding ``fds`` (known to it by the same numbers) and
        the channel; raises ForkServerGone if the server is not there."""
        async with self._lock:
            if not self.alive:
                raise ForkServerGone("the fork server is not running")
            try:
                _send(self._sock, {"fds": [*fds, -1]}, [*fds, channel_fd])
                message = await self._reply_queue.receive()
            except (OSError, trio.EndOfChannel, trio.ClosedResourceError):
                self.alive = False
                raise ForkServerGone("the fork server is not running") from None
            if isinstance(message, str):
                raise ForkServerGone(message)
            assert isinstance(message, ForkedWorker)
            return message

    def close(self) -> None:
        """Tell the server to exit once its children have (it reaps them)."""
        self.alive = False
        try:
            self._sock.close()
        except OSError:
            pass
