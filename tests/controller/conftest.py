"""Fixtures of the controller tests: a strict stand-in for kube-apiserver and a fake trainer 0 over gRPC.

The API server (tests/cluster/apiserver.py) is as strict as the real one where it matters: strict JSON (no
NaN), the A2CJob CRD's schema, defaults and CEL rules, status subresource separation, generation,
resourceVersion conflicts, garbage collection, and RBAC: the controller talks to it as the chart's
ServiceAccount, bound to the Role the chart renders, so a call that Role does not grant fails the test.
The fake trainer is a real grpc server on port 0 implementing the generated TrainerService servicer.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client

from a2c.controller import handlers, kube
from a2c.v1 import trainer_pb2, trainer_pb2_grpc
from tests.cluster.apiserver import APIServer
from tests.deploy import chartlib

NS = "ml"
CONTROLLER = f"system:serviceaccount:{NS}:a2c-controller"
CONTROLLER_TOKEN, ADMIN_TOKEN = "controller-token", "admin-token"


@pytest.fixture(scope="session")
def controller_rbac() -> list[dict[str, Any]]:
    """The chart's Role and RoleBinding for the controller, rendered by Helm for namespace `ml`."""
    rendered = chartlib.render({"job": {"enabled": False}}, namespace=NS)
    out = [o for o in chartlib.objects(rendered) if o["kind"] in ("Role", "RoleBinding")]
    for obj in out:
        if obj["kind"] == "RoleBinding":
            obj["subjects"] = [{"kind": "ServiceAccount", "name": "a2c-controller", "namespace": NS}]
    assert {o["kind"] for o in out} == {"Role", "RoleBinding"}
    return out


@pytest.fixture
def apiserver(controller_rbac: list[dict[str, Any]]) -> Iterator[APIServer]:
    crd = yaml.safe_load((chartlib.CHART / "files" / "a2cjob-crd.yaml").read_text())
    with APIServer(anonymous=False, rbac=True, namespaces=("default", NS)) as server:
        server.add_token(CONTROLLER_TOKEN, CONTROLLER)
        server.add_token(ADMIN_TOKEN, "admin")
        server.create(crd)
        for obj in controller_rbac:
            server.create(obj)
        yield server


def _kube(server: APIServer, token: str, tmp: Path) -> Iterator[kube.Kube]:
    with client.ApiClient(server.client_configuration(token, tmp)) as api_client:
        yield kube.Kube(api_client, timeout_s=5.0)


@pytest.fixture
def api(apiserver: APIServer, tmp_path: Path) -> Iterator[kube.Kube]:
    """The controller's own client: the chart's ServiceAccount, held to the chart's Role."""
    yield from _kube(apiserver, CONTROLLER_TOKEN, tmp_path)


@pytest.fixture
def admin(apiserver: APIServer, tmp_path: Path) -> Iterator[kube.Kube]:
    """What the tests use to play users, the StatefulSet controller and the kubelet."""
    yield from _kube(apiserver, ADMIN_TOKEN, tmp_path)


class FakeTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    """Trainer 0 as the controller sees it: whatever `reply` says, over a real socket; `up` False is a trainer
    whose process is gone (the RPC fails as it would against a dead pod)."""

    def __init__(self) -> None:
        self.reply = trainer_pb2.TrainerStatus(phase=trainer_pb2.TrainerStatus.STARTING, world_size=1)
        self.calls = 0
        self.up = True

    def Status(  # noqa: N802 (the generated servicer names it)
        self, request: trainer_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TrainerStatus:
        self.calls += 1
        if not self.up:
            context.abort(grpc.StatusCode.UNAVAILABLE, "trainer 0 is not running")
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
