"""A one-machine Kubernetes node for tests: workload controllers + kubelet, over the API server's REST API.

Data flow: `Node(api_url, ...)` lists and watches pods, StatefulSets, Deployments, Services and PVCs with its
own token (`node_api`), expands StatefulSets and Deployments into pods (`node_workloads`), runs every pod as
local processes in its own network namespace on a bridge of its own (`node_pod`, `netns`, `node_launch`),
writes pod status through `/status`, and keeps each pod's /etc/hosts current with every pod and Service
(there is no DNS server, no ClusterIP: a Service name maps to its backing pods' own addresses).

    with node.Node(server.url, ca_pem=server.ca_pem, add_token=server.add_token) as n:
        ...create a StatefulSet through the API...
        n.wait(lambda: n.pod_ip("default", "web-0"))
        n.kill("default", "web-0", signal.SIGKILL); n.logs("default", "web-0", previous=True)

Pods reach the API server at `kubernetes.default.svc:<port>` (the bridge address; a relay forwards to the
server when it listens on loopback only). Everything the node made (processes, namespaces, links, files)
goes at `stop()`, at interpreter exit, and at the next start of any node if a run died without stopping.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster import netns, node_api, node_container, node_hosts, node_pod, node_workloads

log = logging.getLogger(__name__)
Obj = dict[str, Any]
RESOLV = ("# a2c test node: no DNS server; names come from /etc/hosts\n"
          "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")


def require_root() -> None:
    """Skip the calling test unless this process can make namespaces (root with `ip`, `unshare`, `nsenter`)."""
    if os.geteuid() != 0:
        pytest.skip("the test node needs root (network and mount namespaces)")
    missing = [tool for tool in ("ip", "unshare", "nsenter", "umount") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the test node needs {', '.join(missing)} on PATH")


def sweep() -> list[str]:
    """Remove what earlier runs left behind (a run killed before it could stop); returns what went."""
    gone = netns.sweep()
    if shutil.which("podman"):
        gone += [f"container {name}" for name in node_container.sweep(lambda run: not netns.alive(run))]
    return gone


class Node:
    def __init__(self, api_url: str, token: str | None = None, ca_pem: str | bytes | None = None, *,
                 user: str = "system:node:local", add_token: Callable[[str, str], None] | None = None,
                 name: str = "local", backoff_s: tuple[float, float] = (0.2, 2.0), backoff_reset_s: float = 10.0,
                 probe_scale: float = 0.1, grace_cap_s: float = 3.0, resync_s: float = 0.5,
                 api_host: str = "kubernetes.default.svc", runtime: str | None = None) -> None:
        """`add_token(token, user)` registers bearer tokens with the server (the node's own, and one per pod
        that mounts a service account); without it pods ask TokenRequest and the node's token must be known.
        `runtime`: "process" (each container a host process) or "container" (a podman container of the pod's
        image, node_container); unset, A2C_TEST_RUNTIME says, and "process" when that is unset too."""
        self.ca_pem = ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem
        self.api_url, self.user, self.add_token = api_url, user, add_token
        self.token = token or secrets.token_urlsafe(24)
        self.name, self.api_host, self.resync_s = name, api_host, resync_s
        self.tuning = dict(backoff_s=backoff_s, backoff_reset_s=backoff_reset_s, probe_scale=probe_scale,
                           grace_cap_s=grace_cap_s)
        self.runtime_kind = runtime or node_container.runtime_from_env()
        if self.runtime_kind not in node_container.RUNTIMES:
            raise ValueError(f"runtime {self.runtime_kind!r}: expected one of {', '.join(node_container.RUNTIMES)}")
        self.engine: node_container.Engine | None = None
        self.net: netns.Network | None = None
        self.relay: netns.Relay | None = None
        self.pods: dict[str, node_pod.PodRuntime] = {}
        self._mutex = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.informers: dict[str, node_api.Informer] = {}
        self.errors: list[str] = []
        self.retired: list[node_pod.PodRuntime] = []  # deleted pods, kept for their logs
        self._hosts_lock = threading.Lock()
        self._unbindable: set[str | None] = set()
        self._binding_subresource = True

    @classmethod
    def for_apiserver(cls, server: Any, **kwargs: Any) -> Node:
        """A node of `tests.cluster.apiserver.APIServer` (its URL, its CA when TLS, tokens registered with it)."""
        ca = server.ca_pem if getattr(server, "tls", False) else None
        return cls(server.url, ca_pem=ca, add_token=server.add_token, **kwargs)

    # lifecycle

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        sweep()
        self.net = netns.Network()
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        assert self.net is not None
        state = self.net.state_dir
        if self.runtime_kind == "container":
            self.engine = node_container.Engine(state, self.net.run)
        self.settings = node_pod.Settings(node_name=self.name, pods_dir=f"{state}/pods", runtime=self.runtime_kind,
                                          engine=self.engine, **self.tuning)  # type: ignore[arg-type]
        ca_file = None
        if self.ca_pem:
            ca_file = f"{state}/ca.crt"
            with open(ca_file, "w") as f:
                f.write(self.ca_pem)
        if self.add_token:
            self.add_token(self.token, self.user)
        self.api = node_api.Api(self.api_url, self.token, ca_file)
        url = urllib.parse.urlsplit(self.api_url)
        self.api_port = url.port or (443 if url.scheme == "https" else 80)
        self.relay = netns.Relay(self.net.gateway, self.api_port, url.hostname or "127.0.0.1", self.api_port)
        for api_version, plural in (("v1", "pods"), ("apps/v1", "statefulsets"), ("apps/v1", "deployments"),
                                    ("v1", "services"), ("v1", "persistentvolumeclaims")):
            self.informers[plural] = node_api.Informer(self.api, api_version, plural, self.wake, self._stop)
        for informer in self.informers.values():
            informer.start()
        for plural, informer in self.informers.items():
            if not informer.synced.wait(10):
                raise RuntimeError(f"the node could not list {plural} from {self.api_url}")
        self.workloads = node_workloads.Workloads(self.api, self.informers["pods"],
                                                  self.informers["persistentvolumeclaims"], self.terminating)
        loop = threading.Thread(target=self._loop, name="node-loop", daemon=True)
        self._threads.append(loop)
        loop.start()

    def stop(self) -> None:
        """Stop every pod (SIGTERM, SIGKILL after 1 s), then remove every namespace, link and file made."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(10)
        for informer in self.informers.values():
            informer.close()
        with self._mutex:
            runtimes = list(self.pods.values())
        stoppers = [threading.Thread(target=rt.terminate, args=(min(1.0, rt.grace_s()),), daemon=True)
                    for rt in runtimes]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(15)
        if self.engine:
            self.engine.remove_all()
        if self.relay:
            self.relay.close()
        if self.net:
            self.net.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def wake(self) -> None:
        self._wake.set()

    # test-facing

    def runtime(self, namespace: str, pod: str) -> node_pod.PodRuntime | None:
        """The live (not terminating) runtime of a pod, else the latest one of that name."""
        with self._mutex:
            found = [rt for rt in [*self.retired, *self.pods.values()] if (rt.namespace, rt.name) == (namespace, pod)]
        live = [rt for rt in found if not rt.stopping.is_set()]
        return (live or found)[-1] if found else None

    def _container(self, namespace: str, pod: str, container: str | None) -> node_pod.Container:
        rt = self.runtime(namespace, pod)
        if rt is None:
            raise KeyError(f"no pod {namespace}/{pod} on this node")
        for c in rt.containers + rt.init_containers:
            if container is None or c.name == container:
                return c
        raise KeyError(f"no container {container} in {namespace}/{pod}")

    def pod_ip(self, namespace: str, pod: str) -> str | None:
        rt = self.runtime(namespace, pod)
        return rt.net.ip if rt and rt.net and not rt.stopping.is_set() else None

    def pid(self, namespace: str, pod: str, container: str | None = None) -> int | None:
        """The host pid of a container's first process (in the container runtime: the container's own, not
        its `podman run`'s)."""
        c = self._container(namespace, pod, container)
        if c.proc is None:
            return None
        return node_container.container_pid(c.conmon_pidfile) if c.engine is not None else c.proc.pid

    def kill(self, namespace: str, pod: str, sig: int = signal.SIGKILL, container: str | None = None) -> None:
        """Send `sig` to a container's process group (its first container unless named)."""
        self._container(namespace, pod, container).signal(sig)

    def logs(self, namespace: str, pod: str, container: str | None = None, previous: bool = False) -> str:
        """A container's log (current or previous instance); "" while the pod is not (yet) on this node."""
        if self.runtime(namespace, pod) is None:
            return ""
        c = self._container(namespace, pod, container)
        with contextlib.suppress(FileNotFoundError), open(c.previous_log if previous else c.log_file,
                                                          errors="replace") as f:
            return f.read()
        return ""

    def exec_in(self, namespace: str, pod: str, argv: list[str], timeout_s: float = 30.0,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the pod's network namespace (its /etc/hosts and resolv.conf), as `ip netns exec` does."""
        rt = self.runtime(namespace, pod)
        if rt is None or rt.net is None:
            raise KeyError(f"no sandbox for {namespace}/{pod}")
        return subprocess.run(["ip", "netns", "exec", rt.net.netns, *argv], capture_output=True, text=True,
                              timeout=timeout_s, env=env)

    def wait(self, predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
        """Poll `predicate` (woken by the node's own events, at least every 0.1 s) until it is truthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s}s waiting for {what or predicate}")
            self._stop.wait(0.1)

    def terminating(self, namespace: str) -> set[str]:
        with self._mutex:
            return {rt.name for rt in self.pods.values() if rt.namespace == namespace and rt.stopping.is_set()}

    # what pods ask of their node (node_pod.Host)

    def fetch(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.api.get(node_api.path("v1", kind, namespace, name))

    def sandbox(self, rt: node_pod.PodRuntime) -> netns.PodNet:
        assert self.net is not None
        net = self.net.add_pod(rt.uid, "", RESOLV)
        rt.net = net
        self._write_hosts()
        return net

    def claim_dir(self, namespace: str, claim: str) -> str | None:
        if self.informers["persistentvolumeclaims"].get(namespace, claim) is None:
            return None
        assert self.net is not None
        path = f"{self.net.state_dir}/pvc/{namespace}/{claim}"
        if not os.path.isdir(path):
            os.makedirs(path)
            # a fresh volume is root's: only the pod's fsGroup opens it to a non-root container (as processes run
            # as root, they need nothing)
            os.chmod(path, 0o755 if self.engine else 0o777)
        return path

    def service_account(self, rt: node_pod.PodRuntime) -> tuple[str, dict[str, str]]:
        """A dir with token, ca.crt, namespace (and a kubeconfig when the server is plain HTTP) + env."""
        sa = rt.pod["spec"].get("serviceAccountName") or "default"
        directory = os.path.join(rt.dir, "serviceaccount")
        os.makedirs(directory, exist_ok=True)
        token = self._token(rt.namespace, sa)
        files = {"token": token, "namespace": rt.namespace}
        env = {"KUBERNETES_SERVICE_HOST": self.api_host, "KUBERNETES_SERVICE_PORT": str(self.api_port),
               "KUBERNETES_SERVICE_PORT_HTTPS": str(self.api_port),
               "KUBERNETES_PORT": f"tcp://{self.api_host}:{self.api_port}"}
        if self.ca_pem:
            files["ca.crt"] = self.ca_pem
        else:  # in-cluster config speaks https only: a kubeconfig for the same server
            scheme = urllib.parse.urlsplit(self.api_url).scheme
            files["kubeconfig"] = json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "pod",
                "clusters": [{"name": "c", "cluster": {"server": f"{scheme}://{self.api_host}:{self.api_port}"}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "pod", "context": {"cluster": "c", "user": "u", "namespace": rt.namespace}}]})
            env = {"KUBECONFIG": f"{node_pod.SA_PATH}/kubeconfig"}
        for name, text in files.items():
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        return directory, env

    def _token(self, namespace: str, sa: str) -> str:
        user = f"system:serviceaccount:{namespace}:{sa}"
        if self.add_token:
            token = secrets.token_urlsafe(24)
            self.add_token(token, user)
            return token
        url = node_api.path("v1", "serviceaccounts", namespace, sa) + "/token"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": []}}
        try:
            return str(self.api.request("POST", url, body=body)["status"]["token"])
        except Exception as exc:
            log.warning("no token for %s: %s", user, exc)
            return ""

    # the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.resync_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            for step in (self._workloads, self._sync_pods, self._write_hosts, self._write_statuses,
                         self._release_claims):
                try:
                    step()
                except Exception as exc:
                    if not self._stop.is_set():
                        log.warning("node %s: %s", step.__name__, exc, exc_info=True)
                        self.errors.append(f"{step.__name__}: {exc}")

    def _workloads(self) -> None:
        for sts in self.informers["statefulsets"].list():
            self.workloads.statefulset(sts)
        for dep in self.informers["deployments"].list():
            self.workloads.deployment(dep)

    def _mine(self, pod: Obj) -> bool:
        return pod["spec"].get("nodeName") in (None, "", self.name)

    def _sync_pods(self) -> None:
        listed = {}
        for pod in self.informers["pods"].list():
            if not self._mine(pod):
                continue
            if pod["spec"].get("schedulingGates") and not pod["spec"].get("nodeName"):
                self._gated(pod)  # not for scheduling yet: no node, no containers (until the gates are removed)
                continue
            if not pod["spec"].get("nodeName") and not pod["metadata"].get("deletionTimestamp") \
                    and pod["metadata"].get("uid") not in self._unbindable:
                pod = self._bind(pod)
            listed[pod["metadata"].get("uid") or "{namespace}.{name}".format(**pod["metadata"])] = pod
        with self._mutex:
            for uid, pod in listed.items():
                rt = self.pods.get(uid)
                if rt is None:
                    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        continue  # finished before this node started: nothing to run again
                    rt = node_pod.PodRuntime(self, pod)
                    self.pods[uid] = rt
                    rt.start()
                else:
                    rt.pod = pod
                if pod["metadata"].get("deletionTimestamp") and not rt.stopping.is_set():
                    self._terminate(rt, confirm=True)
            for uid, rt in list(self.pods.items()):
                if uid not in listed and not rt.stopping.is_set():
                    self._terminate(rt, confirm=False)

    def _gated(self, pod: Obj) -> None:
        """The scheduler's word on a pod with scheduling gates: Pending, PodScheduled False, SchedulingGated
        (what `kubectl get pod` shows as SchedulingGated). Written once per pod."""
        conditions = (pod.get("status") or {}).get("conditions") or []
        if pod["metadata"].get("deletionTimestamp") or any(
                c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions):
            return
        status = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated", "lastProbeTime": None,
             "lastTransitionTime": node_pod.now(),
             "message": "Scheduling is blocked due to non-empty scheduling gates"}]}
        url = node_api.path("v1", "pods", *node_api.key(pod)) + "/status"
        with contextlib.suppress(node_api.NotFound):  # deleted meanwhile
            self.informers["pods"].put(self.api.merge_patch(url, {"status": status}))

    def _bind(self, pod: Obj) -> Obj:
        """The scheduler's part: this is the only node, so every unbound pod goes here.

        POST pods/<name>/binding as kube-scheduler does; a server without that subresource gets a patch of
        spec.nodeName instead; one that refuses both has the pod run unbound.
        """
        url = node_api.path("v1", "pods", *node_api.key(pod))
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod["metadata"]["name"]},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": self.name}}
        try:
            if self._binding_subresource:
                try:
                    self.api.request("POST", url + "/binding", body=binding)
                    return {**pod, "spec": {**pod["spec"], "nodeName": self.name}}
                except (node_api.NotFound, node_api.client.ApiException) as exc:
                    if getattr(exc, "status", 404) not in (404, 405):
                        raise
                    self._binding_subresource = False
            bound = self.api.merge_patch(url, {"spec": {"nodeName": self.name}})
        except Exception as exc:
            log.debug("binding %s: %s", url, exc)
            self._unbindable.add(pod["metadata"].get("uid"))
            return pod
        self.informers["pods"].put(bound)
        return bound

    def _terminate(self, rt: node_pod.PodRuntime, confirm: bool) -> None:
        rt.stopping.set()
        grace = rt.pod["metadata"].get("deletionGracePeriodSeconds")  # `delete --grace-period` overrides the spec

        def run() -> None:
            rt.terminate(None if grace is None else min(float(grace), self.settings.grace_cap_s))
            if self.net:
                self.net.remove_pod(rt.uid)
            node_pod.remove_dir(os.path.join(rt.dir, "volumes"))
            rt.finished.set()
            if confirm:  # the API server waits for the kubelet: say the pod is gone now
                url = node_api.path("v1", "pods", rt.namespace, rt.name)
                try:
                    self.api.delete(url, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                          "preconditions": {"uid": rt.uid}})
                except Exception as exc:
                    log.warning("confirming the deletion of %s: %s", url, exc)
                    self.errors.append(f"delete {url}: {exc}")
            with self._mutex:
                if self.pods.get(rt.uid) is rt and not self._stop.is_set():
                    del self.pods[rt.uid]
                    self.retired.append(rt)
            self.wake()

        t = threading.Thread(target=run, name=f"stop-{rt.name}", daemon=True)
        t.start()

    def _write_statuses(self) -> None:
        with self._mutex:
            runtimes = [rt for rt in self.pods.values() if not rt.stopping.is_set()]
        for rt in runtimes:
            status = json.loads(json.dumps(rt.status()))
            if status == rt.written:
                continue
            url = node_api.path("v1", "pods", rt.namespace, rt.name) + "/status"
            try:
                rt.pod = self.api.merge_patch(url, {"status": status})
                self.informers["pods"].put(rt.pod)
                rt.written = status
            except node_api.NotFound:
                rt.written = status

    def _release_claims(self) -> None:
        """A PVC's directory goes once the claim is deleted and no pod here mounts it."""
        if self.net is None:
            return
        root = f"{self.net.state_dir}/pvc"
        if not os.path.isdir(root):
            return
        with self._mutex:
            used = {d for rt in self.pods.values() for d in rt.mount_dirs.values()}
        for ns in os.listdir(root):
            for claim in os.listdir(f"{root}/{ns}"):
                path = f"{root}/{ns}/{claim}"
                if self.informers["persistentvolumeclaims"].get(ns, claim) is None and path not in used:
                    shutil.rmtree(path, ignore_errors=True)

    def _entries(self) -> list[tuple[node_pod.PodRuntime, str]]:
        with self._mutex:
            return [(rt, rt.net.ip) for rt in self.pods.values() if rt.net and not rt.stopping.is_set()]

    def _write_hosts(self) -> None:
        if self.net is None:
            return
        services = self.informers["services"].list() if "services" in self.informers else []
        with self._hosts_lock:
            entries = self._entries()
            for rt, _ in entries:
                assert rt.net is not None
                with contextlib.suppress(FileNotFoundError):
                    rt.net.write_hosts(node_hosts.render(rt, entries, self.net.gateway, services))
