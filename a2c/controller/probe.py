"""Trainer 0's progress, asked over gRPC: the source of a job's iteration, env steps and mean return.

Data flow: `handlers.reconcile` calls `trainer_status(address)` once per reconcile; the reply becomes a
plain dict that `status.decide` reads, so the decision logic never sees gRPC. Only grpc and the generated
stubs are imported here (never torch). A trainer that does not answer within the timeout yields None.
"""

from __future__ import annotations

from typing import Any

import grpc

from a2c.v1 import trainer_pb2, trainer_pb2_grpc


def address(name: str, namespace: str, port: int) -> str:
    """Trainer 0's stable DNS name behind the job's headless Service."""
    return f"{name}-trainer-0.{name}-trainer.{namespace}.svc:{port}"


def trainer_status(target: str, timeout_s: float = 2.0,
                   tls: grpc.ChannelCredentials | None = None) -> dict[str, Any] | None:
    """Trainer 0's TrainerService.Status as a dict (phase as its enum name), or None if unreachable.

    `tls`: the controller's own credentials (`a2c controller --tls-ca ...`) for a job with spec.tls.
    """
    try:
        # a channel per probe resolves afresh; the option matters if one is ever kept (a2c/service/server.py)
        options = [("grpc.dns_min_time_between_resolutions_ms", 1000)]
        with (grpc.insecure_channel(target, options) if tls is None
              else grpc.secure_channel(target, tls, options)) as channel:
            reply = trainer_pb2_grpc.TrainerServiceStub(channel).Status(trainer_pb2.StatusRequest(), timeout=timeout_s)
    except grpc.RpcError:
        return None
    return {
        "phase": trainer_pb2.TrainerStatus.Phase.Name(reply.phase),
        "iteration": reply.iteration,
        "env_steps": reply.env_steps,
        "mean_return": reply.mean_return,
        "episodes": reply.episodes,
        "world_size": reply.world_size,
        "message": reply.message,
    }
