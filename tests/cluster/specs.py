"""Small objects for the test node's tests: a pod or StatefulSet whose containers run `python -c CODE` (the
venv's python, so a pod starts in a fraction of a second), a headless Service; namespace `default`."""

from __future__ import annotations

import textwrap
from typing import Any

Obj = dict[str, Any]
NS = "default"


def py(code: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(code)]


def container(code: str, name: str = "c", **extra: Any) -> Obj:
    return {"name": name, "image": "a2c:test", "command": py(code), **extra}


def pod(name: str, *containers: Obj, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            "spec": {"containers": list(containers), **spec}}


def statefulset(name: str, replicas: int, *containers: Obj, **spec: Any) -> Obj:
    template: Obj = {"metadata": {"labels": {"app": name}}, "spec": {"containers": list(containers),
                                                                "terminationGracePeriodSeconds": 1}}
    for key in ("volumes",):
        if key in spec:
            template["spec"][key] = spec.pop(key)
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}}, "template": template, **spec}}


def headless(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"app": name},
                     "ports": [{"name": "grpc", "port": 50051}]}}
