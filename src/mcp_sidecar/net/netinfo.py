"""Facts about this host's network, read from the kernel (Linux).

* ``nonloopback_addresses()`` -- what ``@nonloopback`` expands to: every
  IPv4 interface address (``SIOCGIFADDR``) and every global IPv6 address
  (``/proc/net/if_inet6``) that is not loopback.  Link-local IPv6 addresses
  are left out: they need a scope id and are not what users reach.
* ``listeners_on_port()`` -- who listens on a TCP port, from
  ``/proc/net/tcp{,6}`` and ``/proc/*/fd``, so a busy-port error can name the
  owner.  Processes of other users are reported without a name when their
  ``/proc/PID/fd`` is unreadable.

Everything here is best effort: on a host without /proc the functions return
what they can and never raise.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

_SIOCGIFADDR = 0x8915
_TCP_LISTEN = "0A"


def _ipv4_interface_addresses() -> list[str]:
    result: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return result
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            try:
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # interface without an IPv4 address
            result.append(socket.inet_ntoa(reply[20:24]))
    return result


def _ipv6_interface_addresses() -> list[str]:
    result: list[str] = []
    try:
        with open("/proc/net/if_inet6") as f:
            lines = f.read().splitlines()
    except OSError:
        return result
    for line in lines:
        parts = line.split()
        if len(parts) < 6:
            continue
        try:
            addr = ipaddress.IPv6Address(int(parts[0], 16))
        except ValueError:
            continue
        if not (addr.is_loopback or addr.is_link_local):
            result.append(str(addr))
    return result


def nonloopback_addresses() -> list[str]:
    """IPv4 first, then IPv6; no duplicates, no loopback, no link-local."""
    seen: list[str] = []
    for addr in _ipv4_interface_addresses() + _ipv6_interface_addresses():
        ip = ipaddress.ip_address(addr)
        if ip.is_loopback or ip.is_unspecified or addr in seen:
            continue
        seen.append(addr)
    return seen


@dataclass(frozen=True)
class PortListener:
    """A socket listening on a port, and the process holding it when it can be told."""

    address: str
    port: int
    pid: int | None
    command: str | None

    def describe(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        who = "an unknown process"
        if self.pid is not None:
            who = f"pid {self.pid}" + (f" ({self.command})" if self.command else "")
        return f"{who} listening on {host}:{self.port}"


def _decode_proc_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _listening_inodes(port: int) -> dict[int, str]:
    inodes: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10 or parts[3] != _TCP_LISTEN:
                        continue
                    hex_addr, hex_port = parts[1].split(":")
                    if int(hex_port, 16) == port:
                        inodes[int(parts[9])] = _decode_proc_address(hex_addr)
        except (OSError, ValueError):
            continue
    return inodes


def _owners(inodes: set[int]) -> dict[int, int]:
    """inode -> pid, for the sockets whose owner we may inspect."""
    owners: dict[int, int] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return owners
    targets = {f"socket:[{inode}]": inode for inode in inodes}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link in targets:
                owners.setdefault(targets[link], pid)
        if len(owners) == len(targets):
            break
    return owners


def _command(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() or None
    except OSError:
        return None


def listeners_on_port(port: int) -> list[PortListener]:
    inodes = _listening_inodes(port)
    owners = _owners(set(inodes))
    return [
        PortListener(address, port, owners.get(inode), _command(owners[inode]) if inode in owners else None)
        for inode, address in sorted(inodes.items(), key=lambda item: item[1])
    ]
