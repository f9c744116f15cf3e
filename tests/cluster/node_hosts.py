"""Each pod's /etc/hosts: the test node's stand-in for cluster DNS (there is no DNS server, no ClusterIP).

Data flow: `node.Node` calls `render(...)` for every pod with a sandbox whenever pods, their readiness or
Services change, and `netns.PodNet.write_hosts` rewrites the file in place (running processes see it
through a bind mount of that inode). Records, as CoreDNS would answer them:

    the pod itself           <hostname>[.<subdomain>.<ns>.svc[.cluster.local]]
    the API server           kubernetes.default.svc[.cluster.local], kubernetes.default (the bridge address)
    headless Service pods    <hostname>.<svc>.<ns>.svc[.cluster.local], <hostname>.<svc>.<ns>, and
                             <hostname>.<svc> in the same namespace; only pods whose subdomain is the Service
    Service names            <svc>.<ns>.svc[.cluster.local], <svc>.<ns>, and <svc> in the same namespace ->
                             the first backing pod's own address (no ClusterIP, no port mapping)

A Service's pods are those its selector matches, ready ones only unless publishNotReadyAddresses.
"""

from __future__ import annotations

from typing import Any

from tests.cluster import node_api, node_pod

Obj = dict[str, Any]


def _matches(selector: dict[str, str], pod: Obj) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def render(me: node_pod.PodRuntime, pods: list[tuple[node_pod.PodRuntime, str]], gateway: str,
           services: list[Obj] | None = None) -> str:
    """The pod's /etc/hosts: itself, the API server, headless Services' pods, Service names -> a backing pod."""
    assert me.net is not None
    sub = me.pod["spec"].get("subdomain")
    own = [f"{me.hostname}.{sub}.{me.namespace}.svc.cluster.local", f"{me.hostname}.{sub}.{me.namespace}.svc",
           f"{me.hostname}.{sub}"] if sub else []
    lines = ["# Kubernetes-managed hosts file (a2c test node).", "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback", f"{me.net.ip}\t{' '.join([*own, me.hostname])}",
             f"{gateway}\tkubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default"
             + (" kubernetes" if me.namespace == "default" else "")]
    for svc in sorted(services or [], key=node_api.key):
        ns, name = node_api.key(svc)
        spec = svc.get("spec") or {}
        publish = bool(spec.get("publishNotReadyAddresses"))
        backing = sorted(((rt, ip) for rt, ip in pods if rt.namespace == ns and _matches(spec.get("selector") or {},
                                                                                            rt.pod)
                          and (publish or rt.ready())), key=lambda e: e[0].name)
        short = ns == me.namespace
        for rt, ip in backing:
            if spec.get("clusterIP") == "None" and rt.pod["spec"].get("subdomain") == name:
                fq = f"{rt.hostname}.{name}.{ns}"
                alias = f" {rt.hostname}.{name}" if short else ""
                lines.append(f"{ip}\t{fq}.svc.cluster.local {fq}.svc {fq}{alias}")
        for _, ip in backing[:1]:
            alias = f" {name}" if short else ""
            lines.append(f"{ip}\t{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}{alias}")
    return "\n".join(lines) + "\n"
