"""Fixtures of the controller tests: kmock (a real HTTP server in memory) and a fake trainer 0 over gRPC.

kmock serves on 127.0.0.1 from its own event loop in a background thread, so the controller's synchronous
official client talks to it over real sockets, exactly as it would to a kube-apiserver. The fake trainer
is a real grpc server on port 0 implementing the generated TrainerService servicer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import kmock
import pytest
from kubernetes import client

from a2c.controller import handlers, kube
from a2c.v1 import trainer_pb2, trainer_pb2_grpc

RESOURCES = ["a2c.dev/v1alpha1/a2cjobs", "v1/pods", "v1/services", "v1/configmaps", "v1/events",
             "v1/persistentvolumeclaims", "apps/v1/statefulsets"]


class KMockServer:
    """kmock's Kubernetes emulator on a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.url = ""
        self.handler: Any = None
        self._stop: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = self.loop.create_future()
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            for res in RESOURCES:
                handler.resources[res] = kmock.ResourceInfo()
            self.handler, self.url = handler, str(server.url).rstrip("/")
            self.ready.set()
            await self._stop

    def __enter__(self) -> KMockServer:
        self.thread.start()
        assert self.ready.wait(10), "kmock did not start"
        return self

    def writes(self) -> int:
        """POST/PATCH/DELETE requests served so far (kmock logs every request)."""
        return sum(len(self.handler[method]) for method in ("post", "patch", "delete"))

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(lambda: self._stop.set_result(None) if self._stop else None)
        self.thread.join(10)


@pytest.fixture
def kmock_server() -> Iterator[KMockServer]:
    with KMockServer() as server:
        yield server


@pytest.fixture
def api(kmock_server: KMockServer) -> Iterator[kube.Kube]:
    cfg = client.Configuration(host=kmock_server.url)
    with client.ApiClient(cfg) as api_client:
        yield kube.Kube(api_client, timeout_s=5.0)


class FakeTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    """Trainer 0 as the controller sees it: whatever `reply` says, over a real socket."""

    def __init__(self) -> None:
        self.reply = trainer_pb2.TrainerStatus(phase=trainer_pb2.TrainerStatus.STARTING, world_size=1)
        self.calls = 0

    def Status(  # noqa: N802 (the generated servicer names it)
        self, request: trainer_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TrainerStatus:
        self.calls += 1
        return self.reply

    def set(self, **fields: Any) -> None:
        self.reply = trainer_pb2.TrainerStatus(**{**{f.name: v for f, v in self.reply.ListFields()}, **fields})


@pytest.fixture
def trainer() -> Iterator[tuple[FakeTrainer, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fake = FakeTrainer()
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def reconciler(api: kube.Kube, trainer: tuple[FakeTrainer, str]) -> handlers.Reconciler:
    return handlers.Reconciler(api, address=lambda job: trainer[1], probe_timeout_s=1.0)
