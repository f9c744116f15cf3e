"""The trainer's gRPC server: the one place for message limits, keepalive, health and graceful stop.

Data flow: trainer -> `start` with its inbox, weight board and status callback (and, optionally, TLS
credentials from `tls`): the servicers over them, served -> players and the launcher/controller connect.
The trainer and every test that needs a live server start it here, the same way.
The standard grpc.health.v1 service says NOT_SERVING until the trainer has joined its group and
published its first weights (`set_serving`), which is what Kubernetes' grpc readinessProbe asks.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from a2c.model import weights
from a2c.service import codec, inbox, servicers, shared_weights
from a2c.v1 import rollout_pb2_grpc, trainer_pb2, trainer_pb2_grpc, weights_pb2_grpc

SERVICES = ("a2c.v1.RolloutService", "a2c.v1.WeightService", "a2c.v1.TrainerService")
DNS_RERESOLVE_MS = 1000
# A chunked payload (a rollout; the weights, as the client reads them) may be this many messages long, in chunks
# far below the message limit: the one multiple of it that both ends use.
ROLLOUT_MESSAGES = 64


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Limits and keepalive shared by server and client (client pings no faster than the server allows)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # reconnect quickly to a trainer that is starting or restarting (20 ms measured no faster: the channel
        # came back ~0.1 s after a refusal either way; a starting player waits for the port first, ports.py)
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # re-resolve a trainer's name at most every DNS_RERESOLVE_MS, not gRPC's default 30 s: a restarted trainer
        # pod comes back under a new IP, and with the default its players reached it 30.0 s later (1.0 s here)
        ("grpc.dns_min_time_between_resolutions_ms", DNS_RERESOLVE_MS),
    ]


class _Captured:
    """Stands for the server in a generated `add_*Servicer_to_server`: keeps the handlers it registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers come to add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.service, self.handlers = service, dict(handlers)


def _add_sending_serialized(add: Callable[[Any, Any], None], servicer: object, server: grpc.Server,
                            *methods: str) -> None:
    """The generated registration of a service, with `codec.serialize` as the response serializer of `methods`:
    their replies may hold messages serialized once per weight version (bytes), sent as they are."""
    captured = _Captured()
    add(servicer, captured)
    if not captured.service or not set(methods) <= set(captured.handlers):
        raise RuntimeError(f"the generated {add.__name__} registered {sorted(captured.handlers)}, not {methods}")
    handlers = {name: h._replace(response_serializer=codec.serialize) if name in methods else h  # type: ignore
                for name, h in captured.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(captured.service, handlers),))
    server.add_registered_method_handlers(captured.service, handlers)


@dataclass
class Running:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICES):
            self.health.set(name, status)

    def stop(self, grace_s: float) -> None:
        self.set_serving(False)
        self.server.stop(grace_s).wait()


def start(box: inbox.Inbox, board: weights.WeightBoard, status: Callable[[], trainer_pb2.TrainerStatus],
          host: str, port: int, max_message_bytes: int, workers: int,
          tls: grpc.ServerCredentials | None = None, shared: shared_weights.Writer | None = None) -> Running:
    """A trainer's services over its inbox, weight board and status, on host:port (0 picks a free port);
    with `tls` (see `tls.server_credentials`) only over TLS; with `shared` (--weights-dir) players that ask get
    the weights as a file of it. Health says NOT_SERVING until `set_serving`."""
    # No SO_REUSEPORT: a second trainer on a port in use must fail, not share its connections.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                         options=[*channel_options(max_message_bytes), ("grpc.so_reuseport", 0)])
    rollouts = servicers.RolloutServicer(box, board, max_message_bytes * ROLLOUT_MESSAGES, shared)
    _add_sending_serialized(rollout_pb2_grpc.add_RolloutServiceServicer_to_server, rollouts, server, "Exchange")
    _add_sending_serialized(weights_pb2_grpc.add_WeightServiceServicer_to_server,
                            servicers.WeightServicer(board, shared), server, "Fetch")
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicers.TrainerServicer(status), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        bound = server.add_insecure_port(address) if tls is None else server.add_secure_port(address, tls)
    except RuntimeError as exc:
        bound = 0
        cause: Exception | None = exc
    else:
        cause = None
    if bound == 0:
        server.stop(None)
        raise OSError(f"cannot bind the gRPC server to {address} (in use?)") from cause
    server.start()
    running = Running(server, bound, health_servicer)
    running.set_serving(False)
    return running
