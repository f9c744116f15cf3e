"""Container probes of the test node: startup, liveness, readiness, as the kubelet's prober runs them.

Data flow: `node_pod.Container` starts one `Prober` per container instance; it runs each probe every
`periodSeconds` x `Settings.probe_scale` after `initialDelaySeconds` x the same scale (timeouts are not
scaled), counts consecutive successes and failures against the thresholds, and sets the container's
`ready` / `started` (then wakes the node, which writes the pod's status) or kills it (liveness or startup
failure: SIGTERM, SIGKILL after the grace period; the restart policy decides what follows). It ends with
the instance. grpc probes call grpc.health.v1 Check on podIP:port in plaintext, as the kubelet does;
httpGet accepts 200-399 (https unverified); tcpSocket connects; exec runs in the container's namespaces.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from tests.cluster.node_pod import Container

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Prober:
    """Startup, liveness and readiness probes of one container instance (ends when that instance does)."""

    def __init__(self, container: Container, instance: int) -> None:
        self.c, self.instance = container, instance
        self.scale = container.pod.host.settings.probe_scale
        self.probes = {kind: container.spec[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
                       if kind in container.spec}
        self.counts = {kind: [0, 0] for kind in self.probes}  # consecutive successes, failures

    def start(self) -> None:
        if self.probes:
            threading.Thread(target=self._run, name=f"probe-{self.c.name}", daemon=True).start()

    def _alive(self) -> bool:
        return self.c.instance == self.instance and not self.c.exited.is_set() and not self.c.pod.stopping.is_set()

    def _run(self) -> None:
        began = time.monotonic()
        due = {k: began + float(p.get("initialDelaySeconds", 0)) * self.scale for k, p in self.probes.items()}
        while self._alive():
            kind = min((k for k in due if k != "startupProbe" or not self.c.started), key=lambda k: due[k],
                       default=None)
            if kind is None:
                return
            if self.c.exited.wait(max(0.0, due[kind] - time.monotonic())) or not self._alive():
                return
            probe = self.probes[kind]
            due[kind] = time.monotonic() + max(0.05, float(probe.get("periodSeconds", 10)) * self.scale)
            if kind != "startupProbe" and not self.c.started:
                continue
            ok = self._check(probe)
            if not self._alive():
                return
            counts = self.counts[kind]
            counts[0], counts[1] = (counts[0] + 1, 0) if ok else (0, counts[1] + 1)
            success, failure = int(probe.get("successThreshold", 1)), int(probe.get("failureThreshold", 3))
            if kind == "readinessProbe":
                ready = self.c.ready
                if counts[0] >= success:
                    ready = True
                elif counts[1] >= failure:
                    ready = False
                if ready != self.c.ready:
                    self.c.ready = ready
                    self.c.pod.host.wake()
            elif kind == "startupProbe" and counts[0] >= success:
                self.c.started = True
                self.c.ready = "readinessProbe" not in self.probes
                self.c.pod.host.wake()
            elif counts[1] >= failure:  # liveness or startup failed: the kubelet kills; restartPolicy decides
                log.info("%s/%s: %s failed %d times: killing", self.c.pod.name, self.c.name, kind, counts[1])
                self._kill()
                return

    def _kill(self) -> None:
        self.c.signal(signal.SIGTERM)
        if not self.c.exited.wait(self.c.pod.grace_s()):
            self.c.signal(signal.SIGKILL)

    def _port(self, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"no port named {port}")

    def _check(self, probe: Obj) -> bool:
        net = self.c.pod.net
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "grpc" in probe:
                target = f"{net.ip}:{self._port(probe['grpc']['port'])}" if net else ""
                with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            if "httpGet" in probe:
                get = probe["httpGet"]
                host = get.get("host") or (net.ip if net else "")
                url = f"{get.get('scheme', 'HTTP').lower()}://{host}:{self._port(get['port'])}{get.get('path', '/')}"
                request = urllib.request.Request(url, headers={h["name"]: h["value"]
                                                               for h in get.get("httpHeaders") or []})
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                     urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
                with opener.open(request, timeout=timeout) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in probe:
                with socket.create_connection((net.ip if net else "", self._port(probe["tcpSocket"]["port"])),
                                              timeout=timeout):
                    return True
            if "exec" in probe:
                how = self.c.exec_argv(list(probe["exec"]["command"]))
                if how is None:
                    return False
                done = subprocess.run(how[0], capture_output=True, timeout=timeout + 5, env=how[1])
                return done.returncode == 0
        except Exception as exc:
            log.debug("%s/%s probe: %s", self.c.pod.name, self.c.name, exc)
            return False
        return False
