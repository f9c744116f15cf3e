"""The trainer's gRPC services over a REAL server on port 0: TrainerClient and raw generated stubs; and the
fuzz, most of it in-process (servicers called directly: the codec and the inbox behind them), a few hundred
cases over the wire.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2c.model import agent, weights
from a2c.service import client, codec, rollout, server, servicers
from a2c.v1 import rollout_pb2, rollout_pb2_grpc, tensor_pb2, trainer_pb2, weights_pb2, weights_pb2_grpc
from tests.support import server as live
from tests.support.procs import free_port, wait_for
from tests.support.prometheus import refused as refused_count
from tests.support.rollouts import cartpole_rollout
from tests.support.server import Served as Trainer

# Codes a trainer may answer an upload with; anything else (UNKNOWN, INTERNAL) means a servicer crashed.
REFUSAL_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture
def channel(trainer: Trainer) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(trainer.address, options=server.channel_options(16 << 20))
    yield ch
    ch.close()


@pytest.fixture
def upload_stub(channel: grpc.Channel) -> rollout_pb2_grpc.RolloutServiceStub:
    return rollout_pb2_grpc.RolloutServiceStub(channel)


def raw_upload(stub: rollout_pb2_grpc.RolloutServiceStub,
               chunks: list[rollout_pb2.RolloutChunk]) -> rollout_pb2.UploadReply | grpc.RpcError:
    try:
        return stub.Upload(iter(chunks), timeout=20)
    except grpc.RpcError as err:
        return err


def assert_serves_a_good_upload(trainer: Trainer, player_id: int = 0) -> None:
    trainer.box.take_round(trainer.version[0], timeout_s=0.0)  # drain the queue
    result = trainer.client.upload(cartpole_rollout(player_id=player_id, version=trainer.version[0]))
    assert result.accepted


def _start_on(trainer: Trainer, port: int) -> Trainer:
    """Another server over the fixture's inbox and board."""
    return live.start(port=port, workers=1, over=trainer)


# --- upload ------------------------------------------------------------------------------------------------


def test_upload_is_accepted_and_queued_intact(trainer: Trainer) -> None:
    trainer.version[0] = 3
    sent = cartpole_rollout(player_id=2, version=3)
    result = trainer.client.upload(sent)
    assert (result.accepted, result.trainer_version, result.done) == (True, 3, False)
    assert result.bytes > sent.nbytes()
    rnd = trainer.box.take_round(3, timeout_s=0.0)
    (got,) = rnd.rollouts
    assert (got.player_id, got.policy_version, got.episode_returns) == (2, 3, sent.episode_returns)
    for name in rollout.ARRAY_FIELDS:
        assert np.array_equal(getattr(got, name), getattr(sent, name)), name


@pytest.mark.parametrize(("kwargs", "setup_version", "code", "details"), [
    ({"player_id": 1}, 0, grpc.StatusCode.INVALID_ARGUMENT, "player 1 does not belong to trainer 0"),
    ({"version": 4}, 2, grpc.StatusCode.INVALID_ARGUMENT, "policy_version 4 is newer than the trainer's 2"),
    ({"version": 1}, 5, grpc.StatusCode.FAILED_PRECONDITION, "fetch newer weights"),
])
def test_refused_uploads_get_a_status_and_the_server_keeps_serving(
        trainer: Trainer, kwargs: dict[str, int], setup_version: int, code: grpc.StatusCode, details: str) -> None:
    trainer.version[0] = setup_version
    with pytest.raises(client.Refused) as info:
        trainer.client.upload(cartpole_rollout(**{"version": setup_version, **kwargs}))
    assert info.value.code == code and details in info.value.details
    assert_serves_a_good_upload(trainer)


def test_invalid_rollout_is_refused_with_the_reason(trainer: Trainer) -> None:
    r = cartpole_rollout()
    r.obs = r.obs[:, :, :3].copy()
    with pytest.raises(client.Refused) as info:
        trainer.client.upload(r)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details == "invalid rollout: obs has shape (6, 3, 3), expected (6, 3, 4)"
    assert_serves_a_good_upload(trainer)


def test_full_queue_is_resource_exhausted(trainer: Trainer, upload_stub: rollout_pb2_grpc.RolloutServiceStub) -> None:
    chunks = list(codec.rollout_chunks(cartpole_rollout()))
    for _ in range(4):
        assert raw_upload(upload_stub, chunks).accepted
    err = raw_upload(upload_stub, chunks)
    assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full (4)" in err.details()
    assert_serves_a_good_upload(trainer)


def test_chunked_upload_above_one_mib_goes_through(trainer: Trainer) -> None:
    """5 MiB of pixels against a 4 MiB message limit: chunking carries it; the trainer then refuses the shape."""
    r = cartpole_rollout()
    r.obs = np.zeros((6, 3, 4, 84, 84 * 4), np.float32)  # ~5.8 MiB
    with pytest.raises(client.Refused) as info:
        trainer.client.upload(r)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "obs has shape (6, 3, 4, 84, 336)" in info.value.details


def test_client_gives_up_on_a_full_queue_with_resource_exhausted(trainer: Trainer) -> None:
    impatient = client.TrainerClient(trainer.address, max_message_bytes=4 << 20, retry_for_s=0.2)
    try:
        for _ in range(4):
            assert impatient.upload(cartpole_rollout()).accepted
        with pytest.raises(grpc.RpcError) as info:
            impatient.upload(cartpole_rollout())
        assert not isinstance(info.value, client.Refused), "a full queue is retryable, not a refusal"
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        impatient.close()


def test_client_retries_until_the_trainer_is_up(trainer: Trainer) -> None:
    """A player may start before its trainer: upload keeps retrying UNAVAILABLE until the server answers."""
    port = free_port()
    early = client.TrainerClient(f"127.0.0.1:{port}", max_message_bytes=4 << 20, retry_for_s=60.0)
    result: list[object] = []
    th = threading.Thread(target=lambda: result.append(early.upload(cartpole_rollout(), timeout_s=5.0)))
    th.start()
    late = _start_on(trainer, port)
    try:
        th.join(timeout=60)
        assert not th.is_alive()
        (reply,) = result
        assert isinstance(reply, client.UploadResult) and reply.accepted
    finally:
        early.close()
        late.stop()


def test_a_client_renews_a_channel_that_keeps_failing_and_keeps_one_that_works(trainer: Trainer) -> None:
    """A channel whose calls fail UNAVAILABLE for client.RENEW_AFTER_S is replaced (its resolver may be backing
    off after failed lookups, tests/test_client_reresolve.py), at most once per RENEW_AFTER_S; the new one
    reaches the trainer once it listens, and is kept while calls get through."""
    port = free_port()
    c = client.TrainerClient(f"127.0.0.1:{port}", max_message_bytes=4 << 20, retry_for_s=2.5)
    try:
        first = c.channel
        with pytest.raises(grpc.RpcError) as info:  # nothing listens for 2.5 s of retries
            c.fetch(-1, wait_s=0.0)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert c.channel is not first and 1 <= c.renewals <= int(2.5 / client.RENEW_AFTER_S) + 1, c.renewals
        late = _start_on(trainer, port)
        try:
            renewed = c.renewals
            c.retry_for_s = 30.0
            for _ in range(3):
                c.fetch(-1, wait_s=0.0)
            assert c.renewals <= renewed + 1, "a channel that reaches the trainer is kept"
            kept = c.channel
            c.fetch(-1, wait_s=0.0)
            assert c.channel is kept
        finally:
            late.stop()
    finally:
        c.close()


def test_a_client_retries_the_moment_its_trainer_listens_but_backs_off_from_one_that_refuses(
        trainer: Trainer) -> None:
    """Between tries of an UNAVAILABLE call, a channel that could not connect is tried again as soon as it
    connects (a player starts beside its trainer), not after the whole backoff; a connected trainer that
    refuses (UNAVAILABLE while it stops) is waited out in full, never retried in a tight loop."""
    port = free_port()
    early = client.TrainerClient(f"127.0.0.1:{port}", max_message_bytes=4 << 20, retry_for_s=60.0)
    try:
        with pytest.raises(grpc.RpcError):  # nothing listens: the channel fails to connect
            early.status(timeout_s=5.0)
        late = _start_on(trainer, port)
        try:
            started = time.monotonic()
            assert early._back_off(grpc.StatusCode.UNAVAILABLE, 30.0) is False
            assert time.monotonic() - started < 20.0, "slept out the backoff instead of trying once connected"
            early.status(timeout_s=5.0)  # connected: now a refusal must be waited out
            started = time.monotonic()
            assert early._back_off(grpc.StatusCode.UNAVAILABLE, 0.3) is False
            assert time.monotonic() - started >= 0.3
            early.stop.set()
            assert early._back_off(grpc.StatusCode.UNAVAILABLE, 30.0) is True, "a stop ends the wait"
        finally:
            late.stop()
    finally:
        early.close()


def _running(function: str) -> bool:
    """Whether some thread is inside a function of that name now."""
    for frame in sys._current_frames().values():
        f: Any = frame
        while f is not None:
            if f.f_code.co_name == function:
                return True
            f = f.f_back
    return False


def test_closing_a_client_just_after_its_back_off_leaves_no_error_in_grpcs_threads(trainer: Trainer) -> None:
    """A back-off watches the channel's connectivity through grpc's polling thread. Closed within that
    thread's 0.2 s tick, the channel must not make it raise ("Cannot invoke RPC: Channel closed!", seen in
    CI as an unhandled thread exception after a test's client was closed)."""
    errors: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        for _ in range(3):
            c = client.TrainerClient(trainer.address, max_message_bytes=4 << 20, retry_for_s=5.0)
            c.status(timeout_s=5.0)  # connected
            for _ in range(2):  # the second subscribes while the first one's poller still runs
                assert c._back_off(grpc.StatusCode.UNAVAILABLE, 0.02) is False
            c.close()
            wait_for(lambda: not _running("_poll_connectivity"), 5.0, "grpc's polling thread to end")
    finally:
        threading.excepthook = hook
    assert errors == []


MALFORMED = [
    ("garbage bytes only", [rollout_pb2.RolloutChunk(seq=0, data=b"\x00garbage")], "must start with a header"),
    ("empty stream", [], "empty rollout stream"),
    ("out of order", "swap", "chunk 3 arrived where chunk 2 was expected"),
    ("truncated", "truncate", "payload is truncated"),
    ("over the byte limit", "huge", "exceeds the limit"),
    ("unknown dtype", "dtype", "unsupported dtype 'complex64'"),
]


@pytest.mark.parametrize(("chunks", "details"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_streams_are_invalid_argument(trainer: Trainer, upload_stub: rollout_pb2_grpc.RolloutServiceStub,
                                                chunks: object, details: str) -> None:
    good = list(codec.rollout_chunks(cartpole_rollout(), chunk_bytes=32))
    if chunks == "swap":
        good[2], good[3] = good[3], good[2]
        chunks = good
    elif chunks == "truncate":
        chunks = good[:-2]
    elif chunks == "huge":
        good[0].header.payload_bytes = 1 << 40
        chunks = good
    elif chunks == "dtype":
        good[0].header.tensors[0].dtype = "complex64"
        chunks = good
    err = raw_upload(upload_stub, chunks)  # type: ignore[arg-type]
    assert isinstance(err, grpc.RpcError), err
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("malformed rollout: ") and details in err.details()
    assert_serves_a_good_upload(trainer)


def test_overflowing_shape_is_invalid_argument(upload_stub: rollout_pb2_grpc.RolloutServiceStub) -> None:
    chunks = list(codec.rollout_chunks(cartpole_rollout()))
    spec = chunks[0].header.tensors[0]
    del spec.shape[:]
    spec.shape.extend([2**62, 16])
    spec.nbytes = 0
    err = raw_upload(upload_stub, chunks)
    assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- fetch -------------------------------------------------------------------------------------------------


def snapshot(version: int, done: bool = False) -> weights.WeightSnapshot:
    rng = np.random.default_rng(version)
    return weights.WeightSnapshot(version=version, done=done, tensors={
        "w": rng.normal(size=(64, 4)).astype(np.float32), "b": np.arange(3, dtype=np.int64)})


def test_fetch_returns_the_current_snapshot_bit_exact(trainer: Trainer) -> None:
    sent = snapshot(4)
    trainer.board.publish(sent)
    got, done = trainer.client.fetch(-1, wait_s=5.0)
    assert got is not None and got.version == 4 and not done
    assert set(got.tensors) == {"w", "b"}
    assert all(np.array_equal(got.tensors[k], sent.tensors[k]) and got.tensors[k].dtype == sent.tensors[k].dtype
               for k in sent.tensors)


def test_fetch_of_real_agent_weights_over_one_mib(trainer: Trainer) -> None:
    import gymnasium as gym

    from a2c import config

    model = agent.Agent(gym.spaces.Box(-1, 1, (8,), np.float32), gym.spaces.Discrete(4),
                        config.AlgoConfig(hidden_sizes="400,400"))
    snap = agent.snapshot(model, 1)
    assert snap.nbytes() > codec.CHUNK_BYTES
    trainer.board.publish(snap)
    got, _ = trainer.client.fetch(0, wait_s=5.0)
    assert got is not None
    other = agent.Agent(gym.spaces.Box(-1, 1, (8,), np.float32), gym.spaces.Discrete(4),
                        config.AlgoConfig(hidden_sizes="400,400"))
    agent.load_snapshot(other, got)
    obs = np.ones((2, 8), np.float32)
    assert all(np.array_equal(x, y) for x, y in zip(model.act(obs, True), other.act(obs, True), strict=True))


def test_fetch_long_poll_returns_when_a_newer_version_is_published(trainer: Trainer) -> None:
    trainer.board.publish(snapshot(0))

    def publish_when_waited_on() -> None:
        assert trainer.board.waiting.wait(timeout=30)
        trainer.board.publish(snapshot(1))

    th = threading.Thread(target=publish_when_waited_on)
    trainer.board.waiting.clear()
    th.start()
    got, done = trainer.client.fetch(0, wait_s=25.0)
    th.join()
    assert got is not None and got.version == 1 and not done


def test_fetch_returns_unchanged_after_wait_s(trainer: Trainer, channel: grpc.Channel) -> None:
    trainer.board.publish(snapshot(2))
    assert trainer.client.fetch(2, wait_s=0.1) == (None, False)
    # on the wire: one header chunk, unchanged, carrying the trainer's version
    reply = list(weights_pb2_grpc.WeightServiceStub(channel).Fetch(
        weights_pb2.FetchRequest(since_version=2, wait_s=0.05), timeout=10))
    assert len(reply) == 1 and reply[0].header.unchanged and reply[0].header.version == 2


def test_fetch_before_any_weights_is_unchanged_with_version_minus_one(channel: grpc.Channel) -> None:
    reply = list(weights_pb2_grpc.WeightServiceStub(channel).Fetch(
        weights_pb2.FetchRequest(since_version=-1, wait_s=0.0), timeout=10))
    assert len(reply) == 1 and reply[0].header.unchanged and reply[0].header.version == -1


def test_done_propagates_to_fetch_and_upload(trainer: Trainer) -> None:
    trainer.board.publish(snapshot(3))
    trainer.version[0] = 3
    trainer.board.finish()
    assert trainer.client.fetch(3, wait_s=20.0) == (None, True)
    result = trainer.client.upload(cartpole_rollout(version=3))
    assert (result.accepted, result.done, result.trainer_version) == (False, True, 3)
    assert trainer.box.take_round(3, timeout_s=0.0).rollouts == [], "nothing is queued after the end"


def test_an_upload_answered_done_counts_its_player_as_told(trainer: Trainer) -> None:
    """Training can end while an accepted rollout is being queued: the reply then says done, and the
    trainer, which waits (up to linger_s) until every player has heard, must count that player as told."""
    submit = trainer.box.submit

    def submit_then_finish(r: rollout.Rollout) -> int:
        version = submit(r)
        trainer.board.finish()  # the round this rollout completes was the last one
        return version

    trainer.box.submit = submit_then_finish  # type: ignore[method-assign]
    result = trainer.client.upload(cartpole_rollout(player_id=2, version=0))
    assert (result.accepted, result.done) == (True, True)
    assert trainer.board.wait_told({2}, timeout_s=0.0), "the player that heard `done` is not counted as told"


def test_done_wakes_a_waiting_fetch(trainer: Trainer) -> None:
    trainer.board.publish(snapshot(0))
    trainer.board.waiting.clear()
    def finish_when_waited_on() -> None:
        assert trainer.board.waiting.wait(timeout=30)
        trainer.board.finish()

    th = threading.Thread(target=finish_when_waited_on)
    th.start()
    assert trainer.client.fetch(0, wait_s=25.0) == (None, True)
    th.join()


# --- exchange: a round's one round trip ----------------------------------------------------------------


def test_exchange_queues_the_rollout_and_answers_with_the_next_weights(trainer: Trainer) -> None:
    trainer.board.publish(snapshot(3))
    trainer.version[0] = 3
    trainer.board.waiting.clear()

    def step_when_waited_on() -> None:  # the trainers finish the round while the call waits
        assert trainer.board.waiting.wait(timeout=30)
        trainer.version[0] = 4
        trainer.board.publish(snapshot(4))

    th = threading.Thread(target=step_when_waited_on)
    th.start()
    sent = cartpole_rollout(player_id=2, version=3)
    reply, size = trainer.client.exchange(sent, wait_s=25.0)
    th.join()
    assert reply.snapshot is not None and (reply.version, reply.done) == (4, False)
    assert all(np.array_equal(reply.snapshot.tensors[k], v) for k, v in snapshot(4).tensors.items())
    assert reply.waited_s > 0 and size > sent.nbytes()
    (got,) = trainer.box.take_round(3, timeout_s=0.0).rollouts
    assert (got.player_id, got.policy_version, got.episode_returns) == (2, 3, sent.episode_returns)
    for name in rollout.ARRAY_FIELDS:
        assert np.array_equal(getattr(got, name), getattr(sent, name)), name


def test_a_rollout_acted_before_a_restart_from_an_older_checkpoint_is_refused_and_the_player_catches_up(
        trainer: Trainer) -> None:
    """The trainer group ran to version 3, lost a trainer and restarted from an older checkpoint, and is at 3
    again with other weights (another generation). A player's late rollout acted with the version 3 it
    fetched before the restart is refused (and counted); its fetch gets the new version 3 at once."""
    before = refused_count("other_generation")
    trainer.version[0] = 3
    trainer.board.publish(dataclasses.replace(snapshot(3), generation=0xA))
    trainer.box.generation = 0xA
    held, _ = trainer.client.fetch(-1, wait_s=0.0)
    assert held is not None and (held.version, held.generation) == (3, 0xA)
    trainer.board.publish(dataclasses.replace(snapshot(4), version=3, generation=0xB))  # the restarted group's 3
    trainer.box.generation = 0xB
    late = cartpole_rollout(player_id=2, version=held.version)
    late.generation = held.generation  # as the player labels it (player.Collector.collect)
    with pytest.raises(client.Refused) as info:
        trainer.client.exchange(late, wait_s=0.0)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and "another run" in info.value.details
    assert refused_count("other_generation") == before + 1
    assert not trainer.box.take_round(3, timeout_s=0.0).rollouts
    snap, _ = trainer.client.fetch(held.version, wait_s=25.0, since_generation=held.generation)
    assert snap is not None and (snap.version, snap.generation) == (3, 0xB)  # at once, not at version 4
    assert np.array_equal(snap.tensors["w"], snapshot(4).tensors["w"])
    late.generation = snap.generation
    reply, _ = trainer.client.exchange(late, wait_s=0.0)
    assert reply.version == 3 and len(trainer.box.take_round(3, timeout_s=0.0).rollouts) == 1


def test_the_client_reads_weight_streams_on_the_calling_thread(trainer: Trainer) -> None:
    """Exchange's and Fetch's replies are read without a helper thread polling the channel (grpc's
    `channel_spin`, alive while a call is in flight): the round trip a player makes every round is
    shorter (client.py's docstring has the figures)."""
    trainer.board.publish(snapshot(3))
    trainer.version[0] = 3
    c = client.TrainerClient(trainer.address, retry_for_s=20.0)
    during: set[threading.Thread] = set()

    def step_when_waited_on() -> None:  # look at this process's threads while the call waits
        assert trainer.board.waiting.wait(timeout=30)
        during.update(threading.enumerate())
        trainer.version[0] += 1
        trainer.board.publish(snapshot(trainer.version[0]))

    try:
        c.fetch(-1, wait_s=0.0)  # the server's worker threads exist from here on
        before = set(threading.enumerate())
        for call in (lambda: c.exchange(cartpole_rollout(version=3), wait_s=25.0)[0].snapshot,
                     lambda: c.fetch(4, wait_s=25.0, player_id=0)[0]):
            trainer.board.waiting.clear()
            during.clear()
            th = threading.Thread(target=step_when_waited_on)
            th.start()
            got = call()
            th.join()
            assert got is not None and during
            # the server's own pool (threads grpc_N, this process too) may add a worker for the call: not the client's
            assert [t.name for t in during - before - {th} if not t.name.startswith("grpc_")] == []
    finally:
        c.close()


def test_exchange_without_a_wait_answers_at_once_with_the_trainer_version(trainer: Trainer) -> None:
    """max_policy_lag > 0: a player that may act on does not wait; a newer version, if any, comes at once."""
    trainer.board.publish(snapshot(3))
    trainer.version[0] = 3
    reply, _ = trainer.client.exchange(cartpole_rollout(version=3), wait_s=0.0)
    assert reply.snapshot is None and (reply.version, reply.done) == (3, False)
    trainer.version[0] = 4
    trainer.board.publish(snapshot(4))
    reply, _ = trainer.client.exchange(cartpole_rollout(version=3), wait_s=0.0)
    assert reply.snapshot is not None and reply.version == 4
    assert len(trainer.box.take_round(3, timeout_s=0.0).rollouts) == 2


@pytest.mark.parametrize(("kwargs", "setup_version", "code", "details"), [
    ({"player_id": 1}, 0, grpc.StatusCode.INVALID_ARGUMENT, "player 1 does not belong to trainer 0"),
    ({"version": 4}, 2, grpc.StatusCode.INVALID_ARGUMENT, "policy_version 4 is newer than the trainer's 2"),
    ({"version": 1}, 5, grpc.StatusCode.FAILED_PRECONDITION, "fetch newer weights"),
])
def test_exchange_refuses_what_upload_refuses(trainer: Trainer, kwargs: dict[str, int], setup_version: int,
                                             code: grpc.StatusCode, details: str) -> None:
    trainer.version[0] = setup_version
    with pytest.raises(client.Refused) as info:
        trainer.client.exchange(cartpole_rollout(**{"version": setup_version, **kwargs}), wait_s=5.0)
    assert info.value.code == code and details in info.value.details
    assert trainer.box.take_round(setup_version, timeout_s=0.0).rollouts == [], "nothing refused is queued"
    assert_serves_a_good_upload(trainer)


@pytest.mark.parametrize("when", ["before", "during"])
def test_exchange_at_the_end_says_done_and_the_player_counts_as_told(trainer: Trainer, when: str) -> None:
    trainer.board.publish(snapshot(3))
    trainer.version[0] = 3
    trainer.board.waiting.clear()
    if when == "before":
        trainer.board.finish()
        th = None
    else:
        th = threading.Thread(target=lambda: trainer.board.waiting.wait(timeout=30) and trainer.board.finish())
        th.start()
    reply, _ = trainer.client.exchange(cartpole_rollout(player_id=2, version=3), wait_s=25.0)
    if th is not None:
        th.join()
    assert reply.snapshot is None and reply.done
    assert trainer.board.wait_told({2}, timeout_s=0.0)


def test_exchange_of_a_rollout_too_large_for_one_message_goes_as_upload_then_fetch(trainer: Trainer) -> None:
    """The client's limit is 4 MiB: a 5.8 MiB rollout goes in chunks (the trainer then refuses its shape)."""
    called: list[str] = []

    class Spy:
        def __init__(self, stub: Any) -> None:
            self.stub = stub

        def __getattr__(self, name: str) -> Any:
            called.append(name)
            return getattr(self.stub, name)

    trainer.client.rollouts = Spy(trainer.client.rollouts)  # type: ignore[assignment]
    r = cartpole_rollout()
    r.obs = np.zeros((6, 3, 4, 84, 84 * 4), np.float32)
    with pytest.raises(client.Refused) as info:
        trainer.client.exchange(r, wait_s=1.0)
    assert "obs has shape (6, 3, 4, 84, 336)" in info.value.details
    assert called == ["Upload"]
    trainer.board.publish(snapshot(0))
    reply, _ = trainer.client.exchange(cartpole_rollout(), wait_s=0.0)  # a small one: one message
    assert called == ["Upload", "Exchange"] and reply.version == 0


@pytest.mark.parametrize(("mangle", "details"), [
    (lambda req: req.ClearField("header"), "without a rollout header"),
    (lambda req: setattr(req, "payload", req.payload[:-4]), "its header announced"),
    (lambda req: setattr(req.header, "payload_bytes", -1), "its header announced"),
    (lambda req: req.header.tensors.pop(), "missing tensors"),
])
def test_malformed_exchange_is_invalid_argument(trainer: Trainer, channel: grpc.Channel,
                                                mangle: Callable[[rollout_pb2.ExchangeRequest], Any],
                                                details: str) -> None:
    request = codec.exchange_request(cartpole_rollout(), wait_s=0.0)
    mangle(request)
    with pytest.raises(grpc.RpcError) as info:
        list(rollout_pb2_grpc.RolloutServiceStub(channel).Exchange(request, timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "malformed rollout" in info.value.details() and details in info.value.details()  # type: ignore[attr-defined]
    assert_serves_a_good_upload(trainer)


# --- status and health -------------------------------------------------------------------------------------


def test_status_comes_from_the_callback(trainer: Trainer) -> None:
    trainer.version[0] = 9
    status = trainer.client.status()
    assert trainer.status_calls.is_set()
    assert (status.iteration, status.world_size, status.phase) == (9, 2, trainer_pb2.TrainerStatus.TRAINING)


def test_health_is_not_serving_until_set_serving(trainer: Trainer, channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    names = ("", *server.SERVICES)
    for name in names:
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING, name
    trainer.running.set_serving(True)
    for name in names:
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="a2c.v1.Nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_stop_refuses_new_calls(trainer: Trainer) -> None:
    trainer.running.stop(0)
    with pytest.raises(grpc.RpcError) as info:
        trainer.client.status(timeout_s=2.0)
    assert info.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def test_binding_a_port_in_use_raises_oserror(trainer: Trainer) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind the gRPC server to 127.0.0.1:{port}"):
            _start_on(trainer, port)


def test_a_second_server_cannot_take_a_port_in_use(trainer: Trainer) -> None:
    try:
        second = _start_on(trainer, trainer.running.port)
    except OSError:
        return
    second.stop()
    pytest.fail(f"a second server bound port {trainer.running.port}, which the trainer's server holds")


# --- fuzz: nothing a client sends may crash a servicer -------------------------------------------------------
# The bulk of the cases in-process: the servicers called directly, as gRPC calls them, so the codec and the
# inbox behind them see every case at the cost of a function call. A few hundred over the wire (100 of each
# generated kind, 300 garbage byte strings), for what only a real server adds: (de)serialisation, streaming,
# status codes. In all: 600 chunk streams, 500 random rollouts, 1,000 fetch requests, 3,000 garbage requests.


class Aborted(Exception):
    """What grpc.ServicerContext.abort raises, with code() and details() as an RpcError has them."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Context:
    """What the servicers use of grpc.ServicerContext, for calls without a server."""

    def __init__(self, time_remaining: float = 20.0) -> None:  # as a call with timeout=20 s
        self._code: grpc.StatusCode | None = None
        self._remaining = time_remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        raise Aborted(code, details)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def time_remaining(self) -> float:
        return self._remaining


class InProcess:
    """The servicers `server.start` serves, over the fixture's inbox and board, called directly."""

    def __init__(self, trainer: Trainer) -> None:
        limit = live.MAX_MESSAGE * server.ROLLOUT_MESSAGES
        self.rollouts = servicers.RolloutServicer(trainer.box, trainer.board, limit)
        self.weights = servicers.WeightServicer(trainer.board)
        self.trainer = servicers.TrainerServicer(trainer_pb2.TrainerStatus)

    def upload(self, chunks: list[rollout_pb2.RolloutChunk]) -> rollout_pb2.UploadReply | Aborted:
        try:
            return self.rollouts.Upload(iter(chunks), Context())  # type: ignore[arg-type]
        except Aborted as exc:
            return exc

    def fetch(self, request: weights_pb2.FetchRequest) -> list[weights_pb2.WeightChunk]:
        return list(self.weights.Fetch(request, Context()))  # type: ignore[arg-type]

    def exchange(self, request: rollout_pb2.ExchangeRequest) -> list[weights_pb2.WeightChunk] | Aborted:
        try:
            return list(self.rollouts.Exchange(request, Context(time_remaining=0.6)))  # type: ignore[arg-type]
        except Aborted as exc:
            return exc

    def call(self, method: str, payload: bytes) -> None:
        """`payload` as the serialized request of `method`: DecodeError where gRPC would answer INTERNAL."""
        context: Any = Context(time_remaining=0.6)  # a decoded wait_s may be long: 0.1 s at most
        if method.endswith("/Status"):
            self.trainer.Status(trainer_pb2.StatusRequest.FromString(payload), context)
        elif method.endswith("/Fetch"):
            list(self.weights.Fetch(weights_pb2.FetchRequest.FromString(payload), context))
        elif method.endswith("/Exchange"):
            list(self.rollouts.Exchange(rollout_pb2.ExchangeRequest.FromString(payload), context))
        else:
            self.rollouts.Upload(iter([rollout_pb2.RolloutChunk.FromString(payload)]), context)


def assert_serves_in_process(trainer: Trainer, calls: InProcess) -> None:
    trainer.box.take_round(trainer.version[0], timeout_s=0.0)  # drain the queue
    reply = calls.upload(list(codec.rollout_chunks(cartpole_rollout(version=trainer.version[0]))))
    assert isinstance(reply, rollout_pb2.UploadReply) and reply.accepted, reply


def _mangle(chunks: list[rollout_pb2.RolloutChunk], data: st.DataObject) -> list[rollout_pb2.RolloutChunk]:
    for _ in range(data.draw(st.integers(0, 3))):
        if not chunks:
            break
        i = data.draw(st.integers(0, len(chunks) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "seq", "data", "spec", "size", "header"]))
        c = chunks[i]
        if action == "drop":
            del chunks[i]
        elif action == "dup":
            chunks.insert(i, c)
        elif action == "seq":
            c.seq = data.draw(st.integers(-2**63, 2**63 - 1))
        elif action == "data":
            chunks[i] = rollout_pb2.RolloutChunk(seq=c.seq, data=data.draw(st.binary(max_size=64)))
        elif action == "header":
            chunks[i] = rollout_pb2.RolloutChunk(seq=c.seq, header=rollout_pb2.RolloutHeader(
                player_id=data.draw(st.integers(-2**63, 2**63 - 1)),
                policy_version=data.draw(st.integers(-2**63, 2**63 - 1)),
                payload_bytes=data.draw(st.integers(-1, 100)),
                episode_returns=data.draw(st.lists(st.floats(), max_size=3)),
                episode_lengths=data.draw(st.lists(st.integers(-2**63, 2**63 - 1), max_size=3))))
        elif action == "size" and c.WhichOneof("part") == "header":
            c.header.payload_bytes = data.draw(st.integers(-2**63, 2**63 - 1))
        elif action == "spec" and c.WhichOneof("part") == "header" and c.header.tensors:
            s = c.header.tensors[data.draw(st.integers(0, len(c.header.tensors) - 1))]
            s.CopyFrom(tensor_pb2.TensorSpec(
                name=data.draw(st.sampled_from([*rollout.ARRAY_FIELDS, "zzz"])),
                dtype=data.draw(st.sampled_from([*codec.DTYPES, "complex64", "object", "V8", "U3", "f"])),
                shape=data.draw(st.lists(st.integers(-1, 64), max_size=9)),
                offset=data.draw(st.integers(-8, 2048)), nbytes=data.draw(st.integers(-8, 2048))))
    return chunks


def _check_reply(reply: rollout_pb2.UploadReply | grpc.RpcError | Aborted) -> None:
    if isinstance(reply, grpc.RpcError | Aborted):
        assert reply.code() in REFUSAL_CODES, (reply.code(), reply.details())
        assert reply.details()
    else:
        assert reply.accepted


def _mangled_stream(data: st.DataObject) -> list[rollout_pb2.RolloutChunk]:
    good = list(codec.rollout_chunks(cartpole_rollout(), chunk_bytes=data.draw(st.integers(16, 512))))
    return _mangle(good, data)


FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_fuzz_chunk_streams_in_process(trainer: Trainer, data: st.DataObject) -> None:
    calls = InProcess(trainer)
    trainer.box.take_round(0, timeout_s=0.0)
    _check_reply(calls.upload(_mangled_stream(data)))
    assert_serves_in_process(trainer, calls)


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_fuzz_chunk_streams(trainer: Trainer, upload_stub: rollout_pb2_grpc.RolloutServiceStub,
                            data: st.DataObject) -> None:
    trainer.box.take_round(0, timeout_s=0.0)
    _check_reply(raw_upload(upload_stub, _mangled_stream(data)))
    assert_serves_a_good_upload(trainer)


ARRAY_DTYPES = ["float32", "float64", "int64", "int32", "uint8", "bool"]


@st.composite
def random_rollouts(draw: st.DrawFn) -> rollout.Rollout:
    """Rollouts of random (often wrong) shapes, dtypes and values; numpy fills them from a drawn seed (fast)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t, e, k = draw(st.integers(0, 6)), draw(st.integers(0, 3)), draw(st.integers(0, 2))

    def arr(shape: tuple[int, ...], dtype: str) -> np.ndarray:
        how = draw(st.sampled_from(["ok", "ok", "ok", "shape", "dtype", "poison"]))
        if how == "shape":
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
        elif how == "dtype":
            dtype = draw(st.sampled_from(ARRAY_DTYPES))
        a = (rng.normal(size=shape) * 3).astype(dtype)
        if how == "poison" and a.size and a.dtype.kind in "fi":
            bad = [np.nan, np.inf, -np.inf] if a.dtype.kind == "f" else [-1, np.iinfo(a.dtype).max]
            a.flat[rng.integers(a.size)] = draw(st.sampled_from(bad))
        return a

    return rollout.Rollout(
        player_id=draw(st.integers(-2, 5)), policy_version=draw(st.integers(-1, 2)),
        obs=arr((t + 1, e, 4), "float32"), actions=arr((t, e), "int64"), rewards=arr((t, e), "float32"),
        terminated=arr((t, e), "bool"), truncated=arr((t, e), "bool"), valid=arr((t, e), "bool"),
        logprobs=arr((t, e), "float32"), values=arr((t, e), "float32"), final_obs=arr((k, 4), "float32"),
        final_index=arr((k,), "int64"),
        episode_returns=draw(st.lists(st.floats(), max_size=3)),
        episode_lengths=draw(st.lists(st.integers(-5, 500), max_size=3)),
    )


def encode(r: rollout.Rollout) -> list[rollout_pb2.RolloutChunk]:
    """A well-formed stream for ANY arrays (codec.rollout_chunks needs [T, E] rewards for num_steps/num_envs)."""
    specs, payload = [], b""
    for name, a in r.arrays().items():
        data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        specs.append(tensor_pb2.TensorSpec(name=name, dtype=a.dtype.name, shape=list(a.shape), offset=len(payload),
                                           nbytes=len(data)))
        payload += data
    header = rollout_pb2.RolloutHeader(player_id=r.player_id, policy_version=r.policy_version, tensors=specs,
                                       episode_returns=r.episode_returns, episode_lengths=r.episode_lengths,
                                       payload_bytes=len(payload))
    return [rollout_pb2.RolloutChunk(seq=0, header=header),
            *(rollout_pb2.RolloutChunk(seq=i + 1, data=payload[o:o + 4096])
              for i, o in enumerate(range(0, len(payload), 4096)))]


@settings(FUZZ, max_examples=400)
@given(r=random_rollouts())
def test_fuzz_random_rollouts_in_process(trainer: Trainer, r: rollout.Rollout) -> None:
    calls = InProcess(trainer)
    trainer.box.take_round(0, timeout_s=0.0)
    trainer.version[0] = 1
    _check_reply(calls.upload(encode(r)))
    assert_serves_in_process(trainer, calls)


@settings(FUZZ, max_examples=300)
@given(r=random_rollouts())
def test_fuzz_random_rollouts_exchanged_in_process(trainer: Trainer, r: rollout.Rollout) -> None:
    """The same rollouts in one Exchange message: refused with a status, or accepted and answered."""
    calls = InProcess(trainer)
    trainer.box.take_round(0, timeout_s=0.0)
    trainer.version[0] = 1
    trainer.board.publish(snapshot(1))
    chunks = encode(r)
    request = rollout_pb2.ExchangeRequest(header=chunks[0].header, payload=b"".join(c.data for c in chunks[1:]))
    reply = calls.exchange(request)
    if isinstance(reply, Aborted):
        assert reply.code() in REFUSAL_CODES and reply.details(), (reply.code(), reply.details())
    else:
        assert reply[0].header.version == 1
    assert_serves_in_process(trainer, calls)


@settings(FUZZ, max_examples=100)
@given(r=random_rollouts())
def test_fuzz_random_rollouts(trainer: Trainer, upload_stub: rollout_pb2_grpc.RolloutServiceStub,
                              r: rollout.Rollout) -> None:
    trainer.box.take_round(0, timeout_s=0.0)
    trainer.version[0] = 1
    _check_reply(raw_upload(upload_stub, encode(r)))
    assert_serves_a_good_upload(trainer)


FETCH_REQUESTS = st.builds(
    weights_pb2.FetchRequest, since_version=st.integers(-2**63, 2**63 - 1),
    wait_s=st.one_of(st.floats(-1e9, 0.02), st.just(float("nan"))), player_id=st.integers(-2**63, 2**63 - 1))


def _check_fetch(trainer: Trainer, request: weights_pb2.FetchRequest,
                 fetch: Callable[[weights_pb2.FetchRequest], list[weights_pb2.WeightChunk]]) -> None:
    if trainer.board.version < 0:
        trainer.board.publish(snapshot(5))
    reply = fetch(request)
    decoded = codec.weight_reply_from_chunks(iter(reply), 1 << 30)
    snap, done = decoded.snapshot, decoded.done
    assert not done
    if request.since_version != 5:  # any other version is news: a restarted trainer group can be behind its players
        assert snap is not None and snap.version == 5
    else:
        assert snap is None and reply[0].header.version == 5


@settings(FUZZ, max_examples=900)
@given(request=FETCH_REQUESTS)
def test_fuzz_fetch_requests_in_process(trainer: Trainer, request: weights_pb2.FetchRequest) -> None:
    _check_fetch(trainer, request, InProcess(trainer).fetch)


@settings(FUZZ, max_examples=100)
@given(request=FETCH_REQUESTS)
def test_fuzz_fetch_requests(trainer: Trainer, channel: grpc.Channel, request: weights_pb2.FetchRequest) -> None:
    stub = weights_pb2_grpc.WeightServiceStub(channel)
    _check_fetch(trainer, request, lambda req: list(stub.Fetch(req, timeout=20)))


_METHODS = {
    "/a2c.v1.TrainerService/Status": "unary_unary",
    "/a2c.v1.WeightService/Fetch": "unary_stream",
    "/a2c.v1.RolloutService/Upload": "stream_unary",
    "/a2c.v1.RolloutService/Exchange": "unary_stream",
}
GARBAGE = {"method": st.sampled_from(sorted(_METHODS)), "payload": st.binary(max_size=256)}


@settings(FUZZ, max_examples=2700)
@given(**GARBAGE)
def test_fuzz_garbage_bytes_on_every_rpc_in_process(trainer: Trainer, method: str, payload: bytes) -> None:
    """Undecodable bytes are the decoder's to refuse (gRPC answers INTERNAL); what decodes is answered or refused
    with a status, never a crash."""
    try:
        InProcess(trainer).call(method, payload)
    except DecodeError:
        pass
    except Aborted as exc:
        assert exc.code() in REFUSAL_CODES and exc.details()


@settings(FUZZ, max_examples=300)
@given(**GARBAGE)
def test_fuzz_garbage_bytes_on_every_rpc(trainer: Trainer, channel: grpc.Channel, method: str, payload: bytes) -> None:
    """Undecodable bytes get a gRPC status (never a crash); bytes that happen to decode are answered."""
    kind = _METHODS[method]
    call = getattr(channel, kind)(method, request_serializer=None, response_deserializer=None)
    request = iter([payload]) if kind.startswith("stream") else payload
    try:
        reply = call(request, timeout=10)
        if kind == "unary_stream":
            list(reply)
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INTERNAL, *REFUSAL_CODES)  # type: ignore[attr-defined]
        assert err.details()  # type: ignore[attr-defined]


def test_server_serves_after_garbage(trainer: Trainer, channel: grpc.Channel) -> None:
    call = channel.unary_unary("/a2c.v1.TrainerService/Status", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError):
        call(b"\xff\xff\xff", timeout=10)
    assert_serves_a_good_upload(trainer)
