"""ports.py, and its use in distributed.py: a rank other than 0 waits for rank 0's rendezvous port before joining the
group; a stop ends the wait."""

from __future__ import annotations

import socket
import threading

import pytest

from a2c import ports
from a2c.learning import distributed


def test_await_listening_returns_once_the_port_listens() -> None:
    """The port is bound but refuses connections until `listen`: the wait ends when it accepts one."""
    with socket.socket() as master:
        master.bind(("127.0.0.1", 0))
        port = master.getsockname()[1]
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(ports.await_listening("127.0.0.1", port, 60.0)))
        waiter.start()
        master.listen()
        waiter.join(60)
        assert got == [True]


def test_await_listening_gives_up_after_its_timeout_and_setup_says_why() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        port = closed.getsockname()[1]
        assert ports.await_listening("127.0.0.1", port, 0.2) is False
        with pytest.raises(RuntimeError, match=f"rank 0's rendezvous 127.0.0.1:{port} accepted no connection"):
            distributed.setup(1, 2, "127.0.0.1", port, "gloo", "cpu", 0.2)


def test_await_listening_ends_when_stopped_and_splits_addresses() -> None:
    stop = threading.Event()
    stop.set()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        assert ports.await_listening("127.0.0.1", closed.getsockname()[1], 600.0, stop) is False
    assert ports.split("job-trainer-0.job-trainer:50051") == ("job-trainer-0.job-trainer", 50051)
    assert ports.split("[::1]:80") == ("::1", 80)
    for target in ("no-port", "dns:///job-trainer-0:50051", "unix:/run/a2c.sock", "::1:80"):
        with pytest.raises(ValueError, match="not host:port"):
            ports.split(target)


def test_free_port_never_hands_out_the_same_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binding port 0 and closing can give the port just released again: a trainer once got its gRPC port as
    its rendezvous port. A kernel that repeats itself is asked again; real ports in a row all differ and can
    be listened on."""
    got = [ports.free_port() for _ in range(50)]
    assert len(set(got)) == len(got)
    with socket.socket() as s:
        s.bind(("127.0.0.1", got[-1]))
        s.listen()

    offers = iter([got[0], got[0], 1, got[1], 2])  # what a repeating kernel answers to bind(port 0)

    class Repeating:
        def __enter__(self) -> Repeating:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def bind(self, _: object) -> None:
            self.port = next(offers)

        def getsockname(self) -> tuple[str, int]:
            return "127.0.0.1", self.port

    monkeypatch.setattr(ports.socket, "socket", Repeating)
    assert [ports.free_port(), ports.free_port()] == [1, 2]
