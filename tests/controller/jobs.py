"""Helpers of the controller tests that play users, the StatefulSet controller and the kubelet against the
stand-in API server (tests/controller/conftest.py has its fixtures)."""

from __future__ import annotations

from typing import Any

from a2c.controller import kube, resources
from a2c.controller import spec as jobspec
from a2c.v1 import trainer_pb2
from tests.cluster.apiserver import APIServer
from tests.controller.conftest import CONTROLLER, NS

API, KIND = "a2c.dev/v1alpha1", "A2CJob"
Phase = trainer_pb2.TrainerStatus


def create_job(admin: kube.Kube, name: str = "cp", **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": API, "kind": KIND, "metadata": {"name": name, "namespace": NS},
            "spec": {"trainers": {"replicas": 2}, **spec}}
    return dict(admin.request("POST", kube.path(API, KIND, NS), body=body))


def change_spec(admin: kube.Kube, name: str, spec: dict[str, Any]) -> None:
    """What `kubectl patch` does; the API server bumps metadata.generation."""
    admin.request("PATCH", kube.path(API, KIND, NS, name), content_type="application/merge-patch+json",
                  body={"spec": spec})


def get_job(api: kube.Kube, name: str = "cp") -> dict[str, Any]:
    return api.get(API, KIND, NS, name)


def sts(api: kube.Kube, name: str) -> dict[str, Any]:
    return api.get("apps/v1", "StatefulSet", NS, name)


def set_pod_status(admin: kube.Kube, name: str, ready: bool = True, restarts: int = 0,
                   terminated: dict[str, Any] | None = None) -> None:
    """The kubelet's report, through the /status subresource (a write to the pod itself ignores status)."""
    container: dict[str, Any] = {"name": "trainer", "restartCount": restarts, "ready": ready, "image": "a2c",
                                 "imageID": "", "state": {"running": {}} if terminated is None else
                                 {"waiting": {"reason": "CrashLoopBackOff"}}}
    if terminated is not None:
        container["lastState"] = {"terminated": terminated}
    admin.request("PATCH", kube.path("v1", "Pod", NS, name) + "/status", content_type="application/merge-patch+json",
                  body={"status": {"phase": "Running",
                                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                                   "containerStatuses": [container]}})


def start_trainer_pods(admin: kube.Kube, n: int, job: str = "cp", ready: bool = True) -> list[str]:
    """What the StatefulSet controller and the kubelet would do: trainer pods, running (and ready)."""
    uids = []
    for i in range(n):
        labels = {**resources.labels(job, "trainer"), "apps.kubernetes.io/pod-index": str(i)}
        pod = admin.request("POST", kube.path("v1", "Pod", NS), body={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{job}-trainer-{i}", "namespace": NS,
                                                            "labels": labels},
            "spec": {"containers": [{"name": "trainer", "image": "a2c:0.1.0"}]},
        })
        uids.append(pod["metadata"]["uid"])
        set_pod_status(admin, f"{job}-trainer-{i}", ready=ready)
    return uids


def pod_names(api: kube.Kube) -> list[str]:
    return sorted(p["metadata"]["name"] for p in api.list("v1", "Pod", NS, {}))


def events(server: APIServer) -> list[tuple[str, str]]:
    """The job's Events, read from the store (the controller may create Events, not list them)."""
    return [(e["type"], e["reason"]) for e in server.objects("v1", "Event", NS)]


def cond(job: dict[str, Any], type_: str) -> str:
    return next(c["status"] for c in job["status"]["conditions"] if c["type"] == type_)


def writes(server: APIServer) -> int:
    counts = server.counts(CONTROLLER)
    return sum(counts[v] for v in ("create", "update", "patch", "delete"))


def job(name: str = "cp", namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    """An A2CJob object as the API server would hand it over (a fixed uid), for rendering without a server."""
    return {"apiVersion": jobspec.API_VERSION, "kind": jobspec.KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": "0c0ffee0-0000-4000-8000-000000000001"},
            "spec": spec}


def by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}
