"""A naive threaded TCP forwarder, for comparison in scripts/bench: the kind
of ``tcp_proxy.py`` this project replaces -- a thread per direction per
connection, blocking ``recv(4096)`` and ``sendall``.

Usage: python benchmarks/threaded_forwarder.py LISTEN_PORT:UP_HOST:UP_PORT [...]
"""

from __future__ import annotations

import socket
import sys
import threading


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(4096):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _serve(port: int, up_host: str, up_port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection((up_host, up_port))
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run(a: socket.socket = client, b: socket.socket = upstream) -> None:
            t = threading.Thread(target=_pipe, args=(b, a), daemon=True)
            t.start()
            _pipe(a, b)
            t.join()
            a.close()
            b.close()

        threading.Thread(target=run, daemon=True).start()


if __name__ == "__main__":
    for spec in sys.argv[1:]:
        port, host, up_port = spec.split(":")
        threading.Thread(target=_serve, args=(int(port), host, int(up_port)), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
