"""distributed.py: a rank other than 0 waits for rank 0's rendezvous port before joining the group."""

from __future__ import annotations

import socket
import threading

import pytest

from a2c import distributed


def test_await_master_returns_once_the_port_listens() -> None:
    """The port is bound but refuses connections until `listen`: the wait ends when it accepts one."""
    with socket.socket() as master:
        master.bind(("127.0.0.1", 0))
        port = master.getsockname()[1]
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(distributed.await_master("127.0.0.1", port, 60.0)))
        waiter.start()
        master.listen()
        waiter.join(60)
        assert got == [True]


def test_await_master_gives_up_after_its_timeout_and_setup_says_why() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        port = closed.getsockname()[1]
        assert distributed.await_master("127.0.0.1", port, 0.2) is False
        with pytest.raises(RuntimeError, match=f"rank 0's rendezvous 127.0.0.1:{port} accepted no connection"):
            distributed.setup(1, 2, "127.0.0.1", port, "gloo", "cpu", 0.2)
