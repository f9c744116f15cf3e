"""Load: 64 concurrent players against one trainer server, with a bounded rollout queue.

The queue's limit pushes back with RESOURCE_EXHAUSTED; clients back off and retry; every rollout is
delivered exactly once and memory stays bounded. Bounded in count (64 x 5 uploads) and time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from a2c.service import client
from tests.support import server
from tests.support.prometheus import refused
from tests.support.rollouts import cartpole_rollout

PLAYERS, UPLOADS, MAX_QUEUE = 64, 5, 16


def _rss_mb() -> float:
    """This process's resident memory now (not its lifetime peak, which earlier tests may have set)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_64_players_against_one_trainer_with_a_bounded_queue() -> None:
    served = server.start(world_size=1, expected_players=PLAYERS, max_policy_lag=0, max_queue=MAX_QUEUE,
                          workers=16 + 4 * PLAYERS)
    box = served.box
    refused_before = refused("queue_full")
    rss_before = peak_rss = _rss_mb()
    received: list[tuple[int, float]] = []
    largest_round = 0
    done = threading.Event()

    def consume() -> None:  # a slow trainer: the queue fills and pushes back
        nonlocal largest_round, peak_rss
        while len(received) < PLAYERS * UPLOADS and not done.is_set():
            rnd = box.take_round(0, 0.05)
            largest_round = max(largest_round, len(rnd.rollouts))
            received.extend((r.player_id, float(r.rewards[0, 0])) for r in rnd.rollouts)
            peak_rss = max(peak_rss, _rss_mb())
            done.wait(0.02)  # slow on purpose

    errors: list[BaseException] = []

    def play(j: int) -> None:
        c = client.TrainerClient(served.address, retry_for_s=120)
        try:
            for k in range(UPLOADS):
                r = cartpole_rollout(seed=j, player_id=j)
                r.rewards[0, 0] = k  # tags each upload, to check exactly-once delivery
                assert c.upload(r, timeout_s=30).accepted
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            c.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    start = time.monotonic()
    players = [threading.Thread(target=play, args=(j,)) for j in range(PLAYERS)]
    for t in players:
        t.start()
    for t in players:
        t.join(180)
    took = time.monotonic() - start
    consumer.join(30)  # drains what is still queued
    done.set()
    served.stop()
    assert not errors, errors[:3]
    assert sorted(received) == sorted((j, float(k)) for j in range(PLAYERS) for k in range(UPLOADS))
    assert largest_round <= MAX_QUEUE, "the queue never held more than its limit"
    assert refused("queue_full") > refused_before, "the limit pushed back with RESOURCE_EXHAUSTED"
    grown_mb = peak_rss - rss_before
    assert grown_mb < 300, f"memory grew by {grown_mb:.0f} MB"
    print(f"64 players x {UPLOADS} uploads in {took:.1f} s; RSS growth {grown_mb:.0f} MB at most; "
          f"queue_full refusals {refused('queue_full') - refused_before:.0f}")
