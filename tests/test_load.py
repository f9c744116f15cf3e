"""Load: 64 concurrent players against one trainer server, with a bounded rollout queue.

The queue's limit pushes back with RESOURCE_EXHAUSTED; clients back off and retry; every rollout is
delivered exactly once and memory stays bounded. Bounded in count (64 x 5 uploads) and time.
"""

from __future__ import annotations

import resource
import threading
import time

import pytest

from a2c import inbox, metrics, weights
from a2c.service import client, server, servicers
from a2c.v1 import trainer_pb2
from tests.conftest import SPEC, cartpole_rollout

PLAYERS, UPLOADS, MAX_QUEUE = 64, 5, 16


def _refused_queue_full() -> float:
    series = metrics.labels(metrics.TRAINER_ROLLOUTS_REFUSED, reason="queue_full")
    return float(series._value.get())


@pytest.mark.slow
def test_64_players_against_one_trainer_with_a_bounded_queue() -> None:
    box = inbox.Inbox(SPEC, rank=0, world_size=1, expected_players=PLAYERS, max_policy_lag=0,
                      max_queue=MAX_QUEUE, version=lambda: 0)
    board = weights.WeightBoard()
    running = server.start(servicers.RolloutServicer(box, board, 64 << 20), servicers.WeightServicer(board),
                           servicers.TrainerServicer(trainer_pb2.TrainerStatus), "127.0.0.1", 0, 4 << 20,
                           workers=16 + 4 * PLAYERS)
    refused_before = _refused_queue_full()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    received: list[tuple[int, float]] = []
    largest_round = 0
    done = threading.Event()

    def consume() -> None:  # a slow trainer: the queue fills and pushes back
        nonlocal largest_round
        while len(received) < PLAYERS * UPLOADS and not done.is_set():
            rnd = box.take_round(0, 0.05)
            largest_round = max(largest_round, len(rnd.rollouts))
            received.extend((r.player_id, float(r.rewards[0, 0])) for r in rnd.rollouts)
            time.sleep(0.02)

    errors: list[BaseException] = []

    def play(j: int) -> None:
        c = client.TrainerClient(f"127.0.0.1:{running.port}", retry_for_s=120)
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
    running.stop(1.0)
    assert not errors, errors[:3]
    assert sorted(received) == sorted((j, float(k)) for j in range(PLAYERS) for k in range(UPLOADS))
    assert largest_round <= MAX_QUEUE, "the queue never held more than its limit"
    assert _refused_queue_full() > refused_before, "the limit pushed back with RESOURCE_EXHAUSTED"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"
    print(f"64 players x {UPLOADS} uploads in {took:.1f} s; peak RSS growth {grown_mb:.0f} MB; "
          f"queue_full refusals {_refused_queue_full() - refused_before:.0f}")
