"""A client reaches a trainer that came back under a new address within a second or so, not gRPC's default 30 s.

A restarted trainer pod gets a new IP under the same DNS name. gRPC re-resolves a name at most every
`grpc.dns_min_time_between_resolutions_ms` (30 s by default), so with the default a player retried the old
address for 30 s (measured 30.0 s here). The test gives the name an address through /etc/hosts, which gRPC's
resolver reads: a client in a private mount namespace (its own /etc/hosts, bind-mounted; nothing else on the
machine sees it) fetches weights by that name from a server on 127.0.0.2, the server goes, the name moves to
127.0.0.3 where another server answers; the client's fetch, retried as a player's is, must reach it.
Both addresses are loopback (127.0.0.0/8), so no traffic leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from a2c.model import weights
from a2c.service import inbox, server
from a2c.v1 import trainer_pb2
from tests.support.procs import free_port
from tests.support.rollouts import SPEC

ROOT = Path(__file__).resolve().parents[1]
NAME = "trainer-0.a2c-reresolve.test"
LIMIT_S = 5.0  # 1 s with the option at 1000 ms, plus the reconnect back-off; the default took 30 s
ABSENT_S = 20.0  # how long the name does not resolve (a gang restart: 20-65 s)
RENEWED_LIMIT_S = 3.0  # a renewed channel (every RENEW_AFTER_S = 1 s while failing) plus the client's retry delay
# The client: fetch (the player's call, retried by the client's own back-off) in a loop, printing each version.
CLIENT = """
import sys, time
from a2c.service import client
c = client.TrainerClient(sys.argv[1], max_message_bytes=4 << 20, retry_for_s=60.0)
while True:
    snap, _ = c.fetch(-1, wait_s=0.0)
    print(time.monotonic(), snap.version, flush=True)
    time.sleep(0.02)
"""


def _serve(ip: str, port: int, version: int) -> server.Running:
    board = weights.WeightBoard()
    board.publish(weights.WeightSnapshot(version, {"w": np.zeros(1, np.float32)}))
    box = inbox.Inbox(SPEC, 0, 1, 1, 0, 4, lambda: version)
    return server.start(box, board, trainer_pb2.TrainerStatus, ip, port, 4 << 20, workers=4)


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs root with unshare and mount (a private /etc/hosts in a mount namespace)")
    return tmp_path / "hosts"


def _point(hosts: Path, ip: str) -> None:
    """Rewrite the file in place (a bind mount shows the inode it was made from, not a renamed-over file)."""
    with open(hosts, "a+") as f:
        f.seek(0)
        f.truncate()
        f.write(f"127.0.0.1\tlocalhost\n{ip}\t{NAME}\n")


@pytest.fixture
def client_in_namespace(hosts: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    _point(hosts, "127.0.0.2")
    first = _serve("127.0.0.2", port, 1)
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$0" /etc/hosts && exec "$1" -c "$2" "$3"', str(hosts), sys.executable, CLIENT,
         f"{NAME}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the test's timeout: the first server is up
        assert line.split()[1:] == ["1"], f"the client did not reach the first server: {line!r}"
        first.stop(0)
        yield proc, port
    finally:
        proc.kill()
        proc.wait()
        first.stop(0)


@pytest.mark.timeout(60)
def test_a_client_reaches_a_trainer_that_came_back_under_a_new_address(
        hosts: Path, client_in_namespace: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = client_in_namespace
    _point(hosts, "127.0.0.3")
    second = _serve("127.0.0.3", port, 2)
    started = time.monotonic()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the client prints a line per fetch; a fetch retries up to 60 s
            at, version = line.split()
            if version == "2":
                took = float(at) - started
                print(f"reached the new address {took:.2f} s after it served")
                assert took <= LIMIT_S, f"the client reached the new address after {took:.1f} s"
                return
            if time.monotonic() - started > LIMIT_S:
                break
            assert version == "1", line
        pytest.fail(f"the client did not reach the new address within {LIMIT_S} s (gRPC's DNS re-resolution)")
    finally:
        second.stop(0)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_client_reaches_a_trainer_whose_name_did_not_resolve_for_a_while(
        hosts: Path, client_in_namespace: tuple[subprocess.Popen[str], int]) -> None:
    """A gang restart: the trainer pod's name resolves to nothing from the pod's deletion until its successor has
    an IP. gRPC's resolver backs off after each failed lookup (1 s, x1.6 each time, up to 120 s, jitter 20%):
    after ABSENT_S without the name, the client reached the new address 8.7 and 9.0 s after it served (two runs)
    when it kept its channel; it replaces a channel that keeps failing (`client.RENEW_AFTER_S`): 0.1 s."""
    proc, port = client_in_namespace
    with open(hosts, "w") as f:  # in place, as `_point`: the name is gone
        f.write("127.0.0.1\tlocalhost\n")
    until = time.monotonic() + ABSENT_S
    while time.monotonic() < until:  # the client retries its fetch meanwhile (up to 60 s)
        assert proc.poll() is None, "the client gave up while the name did not resolve"
        time.sleep(0.1)
    _point(hosts, "127.0.0.3")
    second = _serve("127.0.0.3", port, 2)
    started = time.monotonic()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # nothing is printed until a fetch succeeds
            at, version = line.split()
            if version == "2":
                took = float(at) - started
                print(f"reached the name's new address {took:.2f} s after it served ({ABSENT_S:.0f} s without it)")
                assert took <= RENEWED_LIMIT_S, f"the client reached the new address after {took:.1f} s"
                return
            assert version == "1", line
        pytest.fail("the client ended without reaching the new address")
    finally:
        second.stop(0)
