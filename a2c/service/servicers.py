"""gRPC servicers: thin adapters from the wire to the trainer's inbox, weight board and status.

Data flow: Upload -> codec -> `inbox.Inbox.submit`; Fetch -> `weights.WeightBoard.wait_newer` -> codec;
Exchange -> both, in one call; every answer's `done` is `weights.WeightBoard.tell_done`'s (the board
counts who heard it); Status -> the trainer's status callback (already in its wire form,
`codec.status_message`). Every refusal becomes a gRPC status with a clear message and
is counted; nothing a client sends can stop the server.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from a2c.model import weights
from a2c.observe import metrics
from a2c.service import codec, inbox, rollout, shared_weights
from a2c.v1 import rollout_pb2, rollout_pb2_grpc, trainer_pb2, trainer_pb2_grpc, weights_pb2, weights_pb2_grpc

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
MAX_WAIT_S = 30.0


def _observed(method: str) -> Callable[[F], F]:
    """Count requests by status code and time them (unary results; streams are timed to their start)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                return fn(self, request, context)
            except Exception:
                code = context.code().name if context.code() is not None else "UNKNOWN"  # type: ignore[union-attr]
                raise
            finally:
                metrics.labels(metrics.GRPC_REQUESTS, method=method, code=code).inc()
                metrics.labels(metrics.GRPC_REQUEST_SECONDS, method=method).observe(time.perf_counter() - start)

        return inner  # type: ignore[return-value]

    return wrap


class RolloutServicer(rollout_pb2_grpc.RolloutServiceServicer):
    def __init__(self, box: inbox.Inbox, board: weights.WeightBoard, max_bytes: int,
                 shared: shared_weights.Writer | None = None) -> None:
        self.box, self.board, self.max_bytes, self.shared = box, board, max_bytes, shared

    def _queue(self, decode: Callable[[], rollout.Rollout],
               context: grpc.ServicerContext) -> tuple[rollout.Rollout, int]:
        """Decode a rollout and queue it (returns it and the trainer's version), or end the call with the
        reason: a malformed one is counted here, the inbox counts its own refusals."""
        try:
            r = decode()
        except codec.CodecError as exc:
            metrics.labels(metrics.TRAINER_ROLLOUTS_REFUSED, reason="malformed").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed rollout: {exc}")
            raise  # abort raises; never reached
        try:
            return r, self.box.submit(r)
        except inbox.Refusal as ref:
            context.abort(grpc.StatusCode[ref.code], ref.message)
            raise

    @_observed("Upload")
    def Upload(self, request_iterator: Iterator[rollout_pb2.RolloutChunk],  # noqa: N802 - gRPC's name
               context: grpc.ServicerContext) -> rollout_pb2.UploadReply:
        if self.board.done:  # refused unread; the header, if it comes first, names the player told so
            first = next(iter(request_iterator), None)
            if first is not None and first.WhichOneof("part") == "header":
                self.board.tell_done(first.header.player_id)
            return rollout_pb2.UploadReply(accepted=False, trainer_version=self.board.version, done=True)
        r, version = self._queue(lambda: codec.rollout_from_chunks(request_iterator, self.max_bytes), context)
        # training may have ended while this rollout was queued
        return rollout_pb2.UploadReply(accepted=True, trainer_version=version, done=self.board.tell_done(r.player_id))

    @_observed("Exchange")
    def Exchange(self, request: rollout_pb2.ExchangeRequest,  # noqa: N802 - gRPC's name
                 context: grpc.ServicerContext) -> Iterator[weights_pb2.WeightChunk | bytes]:
        if self.board.tell_done(request.header.player_id):
            return iter([codec.unchanged_chunk(self.board.version, True)])
        r, _ = self._queue(lambda: codec.rollout_from_request(request, self.max_bytes), context)
        return _newer_weights(self.board, r.policy_version, request.wait_s, r.player_id, context, r.generation,
                              self.shared if request.shared_ok else None)


def _newer_weights(board: weights.WeightBoard, since_version: int, wait_s: float, player_id: int,
                   context: grpc.ServicerContext, since_generation: int = 0,
                   shared: shared_weights.Writer | None = None) -> Iterator[weights_pb2.WeightChunk | bytes]:
    """Fetch's answer (and Exchange's): weights other than since_version's (of since_generation), waiting up to
    wait_s (capped, and within the call's deadline) for them; else the unchanged header with the current version
    and done. With `shared` (the trainer has a --weights-dir and the caller asked with shared_ok) the weights
    are a header naming the file that holds them."""
    wait = min(max(wait_s, 0.0), MAX_WAIT_S)
    remaining = context.time_remaining()
    if remaining is not None:
        wait = min(wait, max(0.0, remaining - 0.5))
    start = time.perf_counter()
    snap = board.wait_newer(since_version, wait, since_generation)
    waited = time.perf_counter() - start
    done = board.tell_done(player_id)
    if snap is None or done:
        return iter([codec.unchanged_chunk(board.version, done, waited)])
    return iter(codec.weight_reply(snap, waited) if shared is None else shared.reply(snap, waited))


class WeightServicer(weights_pb2_grpc.WeightServiceServicer):
    def __init__(self, board: weights.WeightBoard, shared: shared_weights.Writer | None = None) -> None:
        self.board, self.shared = board, shared

    @_observed("Fetch")
    def Fetch(self, request: weights_pb2.FetchRequest,  # noqa: N802 - gRPC's name
              context: grpc.ServicerContext) -> Iterator[weights_pb2.WeightChunk | bytes]:
        return _newer_weights(self.board, request.since_version, request.wait_s, request.player_id, context,
                              request.since_generation, self.shared if request.shared_ok else None)


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, status: Callable[[], trainer_pb2.TrainerStatus]) -> None:
        self.status = status

    @_observed("Status")
    def Status(self, request: trainer_pb2.StatusRequest,  # noqa: N802 - gRPC's name
               context: grpc.ServicerContext) -> trainer_pb2.TrainerStatus:
        return self.status()
