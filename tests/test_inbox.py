"""inbox.Inbox: refusals with the right status code, and rounds that wait for every active player."""

from __future__ import annotations

import threading

import pytest

from a2c.service import inbox, rollout
from tests.support.prometheus import refused as refused_count
from tests.support.rollouts import SPEC, cartpole_rollout


class Box:
    """Trainer 1 of 2 with players 1 and 3, lag 1, queue of 3; `version` is settable."""

    def __init__(self, lag: int = 1, max_queue: int = 3) -> None:
        self.version = 2
        self.box = inbox.Inbox(SPEC, rank=1, world_size=2, expected_players=2, max_policy_lag=lag,
                               max_queue=max_queue, version=lambda: self.version)


def refusal(box: inbox.Inbox, **kw: int) -> inbox.Refusal:
    with pytest.raises(inbox.Refusal) as info:
        box.submit(cartpole_rollout(**kw))
    return info.value


def test_expected_players_are_active_from_the_start() -> None:
    assert Box().box.active == {1, 3}


def test_accepts_and_returns_the_current_version() -> None:
    b = Box()
    assert b.box.submit(cartpole_rollout(player_id=3, version=2)) == 2
    assert b.box.submit(cartpole_rollout(player_id=1, version=1)) == 2  # 1 >= 2 - lag


def test_refuses_a_player_of_another_trainer() -> None:
    b = Box()
    before = refused_count("unknown_player")
    ref = refusal(b.box, player_id=2, version=2)
    assert (ref.code, ref.reason) == ("INVALID_ARGUMENT", "unknown_player")
    assert "player 2 does not belong to trainer 1" in ref.message and "j mod 2" in ref.message
    assert refusal(b.box, player_id=-1, version=2).reason == "unknown_player"
    assert refused_count("unknown_player") == before + 2


def test_refuses_a_future_version() -> None:
    ref = refusal(Box().box, player_id=1, version=3)
    assert (ref.code, ref.reason) == ("INVALID_ARGUMENT", "future_version")
    assert "policy_version 3 is newer than the trainer's 2" in ref.message


def test_refuses_a_stale_version() -> None:
    b = Box()
    b.version = 5
    ref = refusal(b.box, player_id=1, version=3)  # 3 < 5 - 1
    assert (ref.code, ref.reason) == ("FAILED_PRECONDITION", "stale_version")
    assert "older than 5 - max_policy_lag 1" in ref.message and "fetch newer weights" in ref.message


def test_refuses_an_invalid_rollout() -> None:
    r = cartpole_rollout(player_id=1, version=2)
    r.rewards[0, 0] = float("nan")
    with pytest.raises(inbox.Refusal) as info:
        Box().box.submit(r)
    assert (info.value.code, info.value.reason) == ("INVALID_ARGUMENT", "invalid_rollout")
    assert info.value.message == "invalid rollout: rewards holds NaN or infinite values"


def test_refuses_when_the_queue_is_full_and_accepts_after_a_round() -> None:
    b = Box(max_queue=3)
    for pid in (1, 3, 1):
        b.box.submit(cartpole_rollout(player_id=pid, version=2))
    ref = refusal(b.box, player_id=3, version=2)
    assert (ref.code, ref.reason) == ("RESOURCE_EXHAUSTED", "queue_full")
    assert "queue is full (3)" in ref.message
    assert len(b.box.take_round(2, timeout_s=30.0).rollouts) == 3
    b.box.submit(cartpole_rollout(player_id=3, version=2))


def test_refusals_do_not_mark_a_player_active() -> None:
    b = Box()
    b.box.active.clear()
    refusal(b.box, player_id=5, version=3)
    assert b.box.active == set()


def test_take_round_waits_for_every_active_player() -> None:
    """With player 1's rollout queued and player 3's missing, the round waits out its whole deadline (it does
    not return with what it has); once both delivered it returns at once, long before its deadline."""
    b = Box()
    r1 = cartpole_rollout(player_id=1, version=2)
    b.box.submit(r1)
    waited = b.box.take_round(2, timeout_s=0.3)
    assert waited.waited_s >= 0.3, "the round returned before player 3 delivered or its deadline passed"
    assert waited.rollouts == [r1] and waited.missing == {3}
    b.box.active.add(3)  # as if player 3 had delivered before (the deadline above dropped it)
    result: list[inbox.Round] = []
    th = threading.Thread(target=lambda: result.append(b.box.take_round(2, timeout_s=600.0)))
    th.start()
    b.box.submit(r1)
    r3 = cartpole_rollout(player_id=3, version=2)
    b.box.submit(r3)
    th.join(timeout=60)
    assert not th.is_alive(), "the round did not return once every active player delivered"
    (rnd,) = result
    assert {id(r) for r in rnd.rollouts} == {id(r1), id(r3)}
    assert rnd.missing == set() and b.box.active == {1, 3}


def test_deadline_drops_missing_players_until_they_deliver_again() -> None:
    b = Box()
    b.box.submit(cartpole_rollout(player_id=1, version=2))
    rnd = b.box.take_round(2, timeout_s=0.05)
    assert [r.player_id for r in rnd.rollouts] == [1]
    assert rnd.missing == {3} and b.box.active == {1}
    # the next round no longer waits for player 3: it returns as soon as player 1 delivered
    b.box.submit(cartpole_rollout(player_id=1, version=2))
    rnd = b.box.take_round(2, timeout_s=60.0)
    assert rnd.missing == set() and rnd.waited_s < 60.0
    # player 3 comes back: active again, and waited for
    b.box.submit(cartpole_rollout(player_id=3, version=2))
    assert b.box.active == {1, 3}
    rnd = b.box.take_round(2, timeout_s=0.05)
    assert rnd.missing == {1} and [r.player_id for r in rnd.rollouts] == [3]


def test_an_unexpected_player_of_this_trainer_becomes_active() -> None:
    b = Box()
    b.box.submit(cartpole_rollout(player_id=7, version=2))  # 7 mod 2 == 1
    assert b.box.active == {1, 3, 7}


def test_stale_rollouts_in_the_queue_are_dropped() -> None:
    b = Box(lag=1)
    old = cartpole_rollout(player_id=1, version=1)   # fine for version 2 (lag 1) ...
    new = cartpole_rollout(player_id=3, version=2)
    b.box.submit(old)
    b.box.submit(new)
    before = refused_count("stale_in_queue")
    rnd = b.box.take_round(3, timeout_s=0.05)        # ... stale for version 3: 1 < 3 - 1
    assert rnd.rollouts == [new]
    assert rnd.missing == {1} and b.box.active == {3}
    assert refused_count("stale_in_queue") == before + 1


def test_several_rollouts_of_one_player_within_the_lag_are_all_used() -> None:
    b = Box(lag=1)
    b.box.active = {1}
    rs = [cartpole_rollout(player_id=1, version=v) for v in (1, 2)]
    for r in rs:
        b.box.submit(r)
    assert b.box.take_round(2, timeout_s=60.0).rollouts == rs


def test_close_wakes_a_waiting_round() -> None:
    b = Box()
    result: list[inbox.Round] = []
    th = threading.Thread(target=lambda: result.append(b.box.take_round(2, timeout_s=60.0)))
    th.start()
    b.box.close()
    th.join(timeout=30)
    assert not th.is_alive()
    assert result[0].rollouts == [] and b.box.active == {1, 3}, "a shutdown does not drop players"


def generation_rollout(generation: int, player_id: int = 1, version: int = 2) -> rollout.Rollout:
    r = cartpole_rollout(player_id=player_id, version=version)
    r.generation = generation
    return r


def test_refuses_a_rollout_acted_with_weights_of_another_run_under_the_same_version() -> None:
    """A group restarted from an older checkpoint reached version 2 again: version 2 of the run before the
    restart was other weights, and a late rollout acted with them is refused, not taken as on-policy."""
    b = Box()
    b.box.generation = 0xB
    before = refused_count("other_generation")
    with pytest.raises(inbox.Refusal) as info:
        b.box.submit(generation_rollout(0xA))
    ref = info.value
    assert (ref.code, ref.reason) == ("FAILED_PRECONDITION", "other_generation")
    assert "generation a, this run's is b" in ref.message and "fetch the current weights" in ref.message
    assert refused_count("other_generation") == before + 1
    assert b.box.submit(generation_rollout(0xB)) == 2  # this run's
    assert b.box.submit(generation_rollout(0, player_id=3)) == 2  # a client that does not say: versions only


def test_before_its_group_forms_a_trainer_refuses_rollouts_of_any_run() -> None:
    b = Box()  # generation 0: the group has not formed, so every generation is another run's
    with pytest.raises(inbox.Refusal) as info:
        b.box.submit(generation_rollout(0xA))
    assert info.value.reason == "other_generation" and "group has not formed yet" in info.value.message
