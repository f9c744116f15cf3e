"""Ports: a free one to listen on (`free_port`), and waiting for a peer's to accept connections before the first
call to it (`await_listening`).

A client library that finds a port closed waits out its own backoff before it tries again: torch's store
client ~0.4 s, a gRPC channel ~0.1 s whatever its reconnect arguments say. In `a2c local` every process
starts at once, so a player's or rank 1's first try usually comes a few milliseconds before its trainer or
rank 0 listens. `await_listening` probes with plain TCP connects instead: 5 ms apart at first, doubling to
1 s (a pod that waits for a pod still starting floods neither it nor the DNS while its name does not resolve).
"""

from __future__ import annotations

import socket
import threading
import time

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on as of now, and that this process has not handed out
    before: the kernel may give a port it just released to the next bind, and a trainer's rendezvous port
    once came out equal to its gRPC port (each taken by binding port 0 and closing again)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def split(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; ValueError for anything else (a gRPC target such as
    "dns:///name:port" or "unix:path" included)."""
    host, _, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not host or not port.isdigit() or "/" in host or (":" in host and not bracketed):
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def await_listening(host: str, port: int, timeout_s: float, stop: threading.Event | None = None) -> bool:
    """True once host:port accepts a TCP connection; False after timeout_s, or at once when `stop` is set."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    waiter = stop or threading.Event()  # never set: a plain sleep
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.01, min(1.0, deadline - time.monotonic()))):
                return True
        except OSError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if waiter.wait(min(delay, left)):
                return False
            delay = min(delay * 2, 1.0)
