"""The player's (and launcher's) side of the trainer's gRPC services, with retries and back-off.

Data flow: player -> `TrainerClient.exchange` (rollout up, next weights down: one call), or `upload`
(chunked stream) and `fetch` (long-poll) -> its trainer;
the launcher and controller call `status`.

The channel reads server streams (Exchange's and Fetch's weights) on the calling thread
(`SingleThreadedUnaryStream`) rather than through a helper thread that polls the channel and hands each
message over: the round trip a player makes every round is 0.1-0.5 ms shorter on loopback, and `a2c local`
at 256 envs ran 4-14% more env steps per second in five alternated pairs (bench/throughput.py, README). A
blocked call still checks for signals every 200 ms, as with the helper thread.

A channel whose calls have failed UNAVAILABLE for RENEW_AFTER_S is replaced by a new one (`_renew`). gRPC's
DNS resolver backs off after a failed lookup, 1 s growing 1.6-fold to 120 s (hard-coded: no channel option),
and only a successful lookup resets it. A trainer pod's name does not resolve at all from the pod's deletion
until its successor has an IP (a gang restart: 20-65 s), so a player's channel looked the name up again 5-47 s
after it was back (its first round with the new group came 6.4-6.8 s, once 43 s, after the group was Ready).
A new channel looks the name up at its first call.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

import grpc
import grpc.experimental

from a2c.model import weights
from a2c.service import codec, rollout, server, shared_weights
from a2c.service import tls as tls_mod
from a2c.v1 import rollout_pb2, rollout_pb2_grpc, trainer_pb2, trainer_pb2_grpc, weights_pb2, weights_pb2_grpc

log = logging.getLogger(__name__)
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
RENEW_AFTER_S = 1.0  # a channel whose calls have failed UNAVAILABLE this long (and is this old) is replaced


@dataclass
class UploadResult:
    accepted: bool
    trainer_version: int
    done: bool
    bytes: int


class Refused(Exception):
    """The trainer refused a rollout for good (not retryable)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class Stopped(Exception):
    """The client's `stop` event was set while a call was being retried."""


class TrainerClient:
    def __init__(self, address: str, max_message_bytes: int = 64 << 20, retry_for_s: float = 300.0,
                 tls: grpc.ChannelCredentials | None = None, server_name: str = "",
                 stop: threading.Event | None = None, weights_dir: str = "") -> None:
        """`tls` (see `tls.channel_credentials`) makes the channel TLS; `server_name` overrides the name
        the trainer's certificate is checked against (default: the host of `address`). Setting `stop`
        ends a call's retries at once with `Stopped` (a SIGTERM must not wait out `retry_for_s`). With
        `weights_dir` (the trainer's --weights-dir, same machine) the weights may come as a file of it."""
        self.address = address
        self.weights_dir = weights_dir
        self.shared_reads = 0  # weight replies read from a file of weights_dir
        self.shared_gone = 0   # ... that named a file already replaced, so asked again over gRPC
        self.stop = stop or threading.Event()
        options = [*server.channel_options(max_message_bytes),
                   (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]
        self._options = options if tls is None else [*options, *tls_mod.name_override(server_name)]
        self._tls = tls
        self._lock = threading.Lock()
        self._failing_since: float | None = None  # the first UNAVAILABLE since a call last got an answer
        self.renewals = 0  # channels replaced by `_renew`
        self._open()
        self.max_message_bytes = max_message_bytes
        self.max_bytes = max_message_bytes * server.ROLLOUT_MESSAGES  # a reply's weights: the trainer's limit
        self.retry_for_s = retry_for_s

    def _open(self) -> None:
        if self._tls is None:
            self.channel = grpc.insecure_channel(self.address, options=self._options)
        else:
            self.channel = grpc.secure_channel(self.address, self._tls, options=self._options)
        self.opened_at = time.monotonic()
        self.rollouts = rollout_pb2_grpc.RolloutServiceStub(self.channel)
        self.weights = weights_pb2_grpc.WeightServiceStub(self.channel)
        # Exchange's and Fetch's replies as the bytes that came (no deserializer): the codec takes each data
        # chunk where it lies in them, rather than protobuf copying megabytes of weights into a message and out
        self.rollouts.Exchange = self.channel.unary_stream(  # type: ignore[method-assign]
            "/a2c.v1.RolloutService/Exchange", request_serializer=rollout_pb2.ExchangeRequest.SerializeToString,
            _registered_method=True)
        self.weights.Fetch = self.channel.unary_stream(  # type: ignore[method-assign]
            "/a2c.v1.WeightService/Fetch", request_serializer=weights_pb2.FetchRequest.SerializeToString,
            _registered_method=True)
        self.trainer = trainer_pb2_grpc.TrainerServiceStub(self.channel)

    def _renew(self) -> None:
        """Replace the channel: its resolver may be backing off after failed lookups (up to 120 s), while a
        new channel looks the name up at its first call."""
        with self._lock:
            old = self.channel
            self._open()
            self.renewals += 1
        old.close()
        log.debug("channel to %s renewed after %.1fs of failures", self.address,
                  time.monotonic() - (self._failing_since or time.monotonic()))

    def _failed(self, code: grpc.StatusCode) -> None:
        """Count a failed call: one that could not reach the trainer (UNAVAILABLE) for RENEW_AFTER_S on a
        channel at least that old renews the channel; any answer from the trainer ends the count."""
        if code != grpc.StatusCode.UNAVAILABLE:
            self._failing_since = None
            return
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if min(now - self._failing_since, now - self.opened_at) >= RENEW_AFTER_S:
            self._renew()

    def close(self) -> None:
        with self._lock:
            self.channel.close()

    def _retry(self, what: str, call):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.05
        while True:
            try:
                reply = call()
                self._failing_since = None
                return reply
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                self._failed(code)
                if code not in RETRYABLE or time.monotonic() > deadline:
                    raise
                log.debug("%s to %s: %s; retrying in %.2fs", what, self.address, code.name, delay)
                if self._back_off(code, delay * (0.5 + random.random())):
                    raise Stopped(f"{what} to {self.address}: stopped while retrying ({code.name})") from None
                delay = min(delay * 2, 0.5)

    def _back_off(self, code: grpc.StatusCode, wait_s: float) -> bool:
        """Wait before the next try; True if stopped meanwhile. A channel that could not connect (a trainer not
        listening yet, or restarting) is retried the moment it connects, within wait_s: a player of `a2c local`
        starts beside its trainer, and sleeping out the backoff delayed the first round by up to 0.17 s. A
        refusal from a connected trainer (it is stopping, its queue is full) waits all of wait_s."""
        started = time.monotonic()
        if code == grpc.StatusCode.UNAVAILABLE:
            seen: list[grpc.ChannelConnectivity] = []  # the first is the state at subscription
            changed = threading.Condition()

            def watch(state: grpc.ChannelConnectivity) -> None:
                with changed:
                    seen.append(state)
                    changed.notify_all()

            # A failed channel reconnects by itself (after gRPC's reconnect backoff). Not grpc.channel_ready_future:
            # it subscribes with try_to_connect, and grpc's polling thread, asked to connect, checks the channel
            # once more even after close(), raising "Channel closed!" in that thread.
            self.channel.subscribe(watch, try_to_connect=False)
            try:
                with changed:
                    changed.wait_for(lambda: grpc.ChannelConnectivity.READY in seen, timeout=wait_s)
            finally:
                self.channel.unsubscribe(watch)
            if seen and seen[0] is not grpc.ChannelConnectivity.READY and grpc.ChannelConnectivity.READY in seen:
                return self.stop.is_set()  # it was not connected when the call failed, and now is: go now
        return self.stop.wait(max(0.0, wait_s - (time.monotonic() - started)))

    def _refusing(self, what: str, call):  # type: ignore[no-untyped-def]
        """`_retry`, with a permanent refusal (invalid, stale) raised as Refused."""
        try:
            return self._retry(what, call)
        except grpc.RpcError as err:
            if err.code() in RETRYABLE:  # type: ignore[attr-defined]
                raise
            raise Refused(err.code(), err.details()) from None  # type: ignore[attr-defined]

    def upload(self, r: rollout.Rollout, timeout_s: float = 60.0) -> UploadResult:
        """Upload one rollout; raises Refused for a permanent refusal (invalid, stale)."""
        chunks = list(codec.rollout_chunks(r))
        size = sum(c.ByteSize() for c in chunks)
        reply = self._refusing("upload", lambda: self.rollouts.Upload(iter(chunks), timeout=timeout_s))
        return UploadResult(reply.accepted, reply.trainer_version, reply.done, size)

    def exchange(self, r: rollout.Rollout, wait_s: float) -> tuple[codec.WeightReply, int]:
        """A round's one round trip: upload the rollout, get the weights to act with next (newer than the
        rollout's version, waiting up to wait_s for them; else the trainer's version). Returns the reply
        and the bytes sent. A rollout too large for one message goes as Upload (chunks) then Fetch.
        Raises Refused for a permanent refusal (invalid, stale), as `upload`."""
        request = codec.exchange_request(r, wait_s, shared_ok=bool(self.weights_dir))
        size = request.ByteSize()
        if size > self.max_message_bytes // 2:  # headroom below the message limit
            result = self.upload(r)
            if result.done or not result.accepted:
                return codec.WeightReply(None, result.trainer_version, result.done, 0.0), result.bytes
            return self._fetch(r.policy_version, wait_s, r.player_id, r.generation), result.bytes
        try:
            reply = self._refusing("exchange", lambda: codec.weight_reply_from_chunks(
                self.rollouts.Exchange(request, timeout=wait_s + 60.0), self.max_bytes, self._shared))
        except shared_weights.Gone:  # the rollout is queued: only the weights are asked for again
            self.shared_gone += 1
            return self._fetch(r.policy_version, 0.0, r.player_id, r.generation, shared_ok=False), size
        return reply, size

    def fetch(self, since_version: int, wait_s: float, player_id: int = -1,
              since_generation: int = 0) -> tuple[weights.WeightSnapshot | None, bool]:
        """(another snapshot or None, training done); waits up to wait_s for weights other than since_version's
        (of since_generation: the trainers' weights of another generation come at once, whatever their version)."""
        reply = self._fetch(since_version, wait_s, player_id, since_generation)
        return reply.snapshot, reply.done

    def _fetch(self, since_version: int, wait_s: float, player_id: int, since_generation: int = 0,
               shared_ok: bool = True) -> codec.WeightReply:
        shared_ok = shared_ok and bool(self.weights_dir)
        request = weights_pb2.FetchRequest(since_version=since_version, wait_s=wait_s, player_id=player_id,
                                           since_generation=since_generation, shared_ok=shared_ok)
        try:
            return self._retry("fetch", lambda: codec.weight_reply_from_chunks(  # type: ignore[no-any-return]
                self.weights.Fetch(request, timeout=wait_s + 30.0), self.max_bytes, self._shared))
        except shared_weights.Gone:
            self.shared_gone += 1
            return self._fetch(since_version, 0.0, player_id, since_generation, shared_ok=False)

    def _shared(self, header: weights_pb2.WeightHeader) -> bytearray:
        """The payload of a reply that names a file of the trainer's --weights-dir (asked for with shared_ok)."""
        if not self.weights_dir:
            raise ValueError(f"the weights came as file {header.shared_file!r}, which this client did not ask for")
        payload = shared_weights.read_payload(self.weights_dir, header.shared_file, header.payload_bytes,
                                              header.version, header.generation)
        self.shared_reads += 1
        return payload

    def status(self, timeout_s: float = 5.0) -> trainer_pb2.TrainerStatus:
        return self.trainer.Status(trainer_pb2.StatusRequest(), timeout=timeout_s)  # type: ignore[no-any-return]
