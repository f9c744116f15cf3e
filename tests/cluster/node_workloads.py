"""The workload controllers of the test node: StatefulSets and Deployments into pods, and their status.

Data flow: the node's loop calls `statefulset(...)` / `deployment(...)` for every object of those kinds in its
caches; each compares the pods it owns (ownerReference with controller: true and its uid) with the spec,
creates, deletes and patches through `node_api.Api`, and writes `.status` through the `/status` subresource
only when it changed (its own writes come back as watch events and wake the loop again).

StatefulSets: pods `<name>-<i>` with the pod-index, pod-name and controller-revision-hash labels, hostname and
subdomain (= serviceName), PVCs `<template>-<name>-<i>` from volumeClaimTemplates, retention policy by
ownerReferences (the API server's garbage collector deletes), OrderedReady treated as Parallel. A name whose
previous pod is still terminating on this node is not reused until that pod is gone (the real API server keeps
the old pod until the kubelet confirms, so the name is taken). RollingUpdate replaces one outdated pod at a
time, highest ordinal first, once every pod is ready; `partition` is honoured, `maxUnavailable` is not.
Deployments: pods `<name>-<pod-template-hash>-<5 chars>` owned by the Deployment itself (no ReplicaSet);
RollingUpdate creates the new pods then deletes the old ones once the new are ready; Recreate deletes first.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import random
import string
from collections.abc import Callable
from typing import Any

from tests.cluster import node_api

Obj = dict[str, Any]
INDEX = "apps.kubernetes.io/pod-index"
POD_NAME = "statefulset.kubernetes.io/pod-name"
REVISION = "controller-revision-hash"
TEMPLATE_HASH = "pod-template-hash"


def template_hash(template: Obj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(owner: Obj, kind: str, api_version: str = "apps/v1", controller: bool = True) -> Obj:
    meta = owner["metadata"]
    return {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta["uid"],
            "controller": controller, "blockOwnerDeletion": True}


def ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _pod(template: Obj, name: str, ns: str, labels: dict[str, str], owner: Obj) -> Obj:
    tmeta = template.get("metadata") or {}
    meta: Obj = {"name": name, "namespace": ns, "labels": {**(tmeta.get("labels") or {}), **labels},
                 "ownerReferences": [owner]}
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template["spec"])}


def _zero(value: Any) -> Any:
    return None if value in (0, None, "") else value


def _write_status(api: node_api.Api, url: str, obj: Obj, desired: Obj) -> None:
    """Patch `/status` to `desired` if it differs (zero values count as absent, as the API's omitempty has it)."""
    status = obj.get("status") or {}
    if all(_zero(status.get(k)) == _zero(v) for k, v in desired.items()) and "replicas" in status:
        return
    patch = {k: (v if _zero(v) is not None or k == "replicas" else None) for k, v in desired.items()}
    api.merge_patch(url + "/status", {"status": patch})


class Workloads:
    """StatefulSet and Deployment controllers over the node's caches."""

    def __init__(self, api: node_api.Api, pods: node_api.Informer, pvcs: node_api.Informer,
                 terminating: Callable[[str], set[str]]) -> None:
        """`terminating(namespace)`: names of pods deleted from the API whose processes are still stopping."""
        self.api, self.pods, self.pvcs, self.terminating = api, pods, pvcs, terminating

    def _owned(self, owner: Obj) -> list[Obj]:
        uid = owner["metadata"].get("uid")
        return [p for p in self.pods.list(owner["metadata"]["namespace"]) if controller_uid(p) == uid]

    def _create_pod(self, pod: Obj) -> None:
        with contextlib.suppress(node_api.Conflict):  # an earlier pass's, whose watch event is not back yet
            self.pods.put(self.api.create(node_api.path("v1", "pods", pod["metadata"]["namespace"]), pod))

    def _delete_pod(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return  # asked already; the kubelet is stopping it
        ns, name = node_api.key(pod)
        reply = self.api.delete(node_api.path("v1", "pods", ns, name))
        if reply is not None and reply.get("kind") == "Pod" and reply["metadata"].get("deletionTimestamp"):
            self.pods.put(reply)  # graceful: it stays until the kubelet confirms; its watch event may be back already
        else:
            self.pods.drop(ns, name)

    # StatefulSets

    def statefulset(self, sts: Obj) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        if meta.get("deletionTimestamp") or not meta.get("uid"):
            return
        ns, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        revision = f"{name}-{template_hash(spec['template'])}"
        owned = {p["metadata"]["name"]: p for p in self._owned(sts)}
        policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}

        def ordinal(pod_name: str) -> int:
            tail = pod_name[len(name) + 1:]
            return int(tail) if pod_name.startswith(name + "-") and tail.isdigit() else -1

        for pod_name in sorted(owned, key=ordinal, reverse=True):
            i = ordinal(pod_name)
            if i >= replicas or i < 0:
                if policy.get("whenScaled") == "Delete":
                    self._own_claims(sts, i, owned[pod_name])
                self._delete_pod(owned.pop(pod_name))
        for i in range(replicas):
            pod_name = f"{name}-{i}"
            if pod_name in owned or pod_name in self.terminating(ns):
                continue
            self._claims(sts, i, policy)
            labels = {REVISION: revision, POD_NAME: pod_name, INDEX: str(i)}
            pod = _pod(spec["template"], pod_name, ns, labels, owner_ref(sts, "StatefulSet"))
            pod["spec"]["hostname"] = pod_name
            if spec.get("serviceName"):
                pod["spec"]["subdomain"] = spec["serviceName"]
            claims = [{"name": t["metadata"]["name"], "persistentVolumeClaim": {
                "claimName": f"{t['metadata']['name']}-{name}-{i}"}} for t in spec.get("volumeClaimTemplates") or []]
            if claims:  # a claim replaces the template's volume of the same name, as in the real controller
                names = {c["name"] for c in claims}
                kept = [v for v in pod["spec"].get("volumes") or [] if v["name"] not in names]
                pod["spec"]["volumes"] = claims + kept
            self._create_pod(pod)
            owned[pod_name] = pod
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            self._roll(owned, replicas, revision, int((strategy.get("rollingUpdate") or {}).get("partition", 0)))
        self._sts_status(sts, list(owned.values()), revision)

    def _roll(self, owned: dict[str, Obj], replicas: int, revision: str, partition: int) -> None:
        pods = list(owned.values())
        if len(pods) < replicas or not all(ready(p) for p in pods):
            return
        outdated = [p for p in pods if p["metadata"]["labels"].get(REVISION) != revision
                    and int(p["metadata"]["labels"].get(INDEX, -1)) >= partition]
        if outdated:
            self._delete_pod(max(outdated, key=lambda p: int(p["metadata"]["labels"].get(INDEX, -1))))

    def _sts_status(self, sts: Obj, pods: list[Obj], revision: str) -> None:
        old = sts.get("status") or {}
        current_rev = old.get("currentRevision") or revision
        updated = sum(p["metadata"]["labels"].get(REVISION) == revision for p in pods)
        n_ready = sum(ready(p) for p in pods)
        strategy = (sts["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "RollingUpdate" and updated == len(pods) == n_ready:
            current_rev = revision
        status = {"observedGeneration": sts["metadata"].get("generation"), "replicas": len(pods),
                  "readyReplicas": n_ready, "availableReplicas": n_ready, "updatedReplicas": updated,
                  "currentReplicas": sum(p["metadata"]["labels"].get(REVISION) == current_rev for p in pods),
                  "currentRevision": current_rev, "updateRevision": revision}
        meta = sts["metadata"]
        _write_status(self.api, node_api.path("apps/v1", "statefulsets", meta["namespace"], meta["name"]), sts,
                      status)

    def _claims(self, sts: Obj, i: int, policy: Obj) -> None:
        """Create the ordinal's claims that do not exist (an existing one is reused, whatever its labels)."""
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        selector = (sts["spec"].get("selector") or {}).get("matchLabels") or {}
        for tpl in sts["spec"].get("volumeClaimTemplates") or []:
            claim = f"{tpl['metadata']['name']}-{name}-{i}"
            if self.pvcs.get(ns, claim) is not None:
                continue
            tmeta = tpl.get("metadata") or {}
            meta: Obj = {"name": claim, "namespace": ns, "labels": {**(tmeta.get("labels") or {}), **selector}}
            if tmeta.get("annotations"):
                meta["annotations"] = dict(tmeta["annotations"])
            if policy.get("whenDeleted") == "Delete":
                meta["ownerReferences"] = [owner_ref(sts, "StatefulSet", controller=True)]
            pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                   "spec": copy.deepcopy(tpl.get("spec") or {})}
            with contextlib.suppress(node_api.Conflict):
                self.pvcs.put(self.api.create(node_api.path("v1", "persistentvolumeclaims", ns), pvc))

    def _own_claims(self, sts: Obj, i: int, pod: Obj) -> None:
        """whenScaled: Delete: the condemned pod becomes the claims' only owner, so they go with it."""
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        if not pod["metadata"].get("uid"):
            return
        for tpl in sts["spec"].get("volumeClaimTemplates") or []:
            claim = f"{tpl['metadata']['name']}-{name}-{i}"
            if self.pvcs.get(ns, claim) is not None:
                url = node_api.path("v1", "persistentvolumeclaims", ns, claim)
                self.api.merge_patch(url, {"metadata": {"ownerReferences": [owner_ref(pod, "Pod", "v1", False)]}})

    # Deployments

    def deployment(self, dep: Obj) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        if meta.get("deletionTimestamp") or not meta.get("uid"):
            return
        ns, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        digest = template_hash(spec["template"])
        owned = self._owned(dep)
        new = [p for p in owned if p["metadata"]["labels"].get(TEMPLATE_HASH) == digest]
        old = [p for p in owned if p not in new]
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        if recreate:
            for pod in old:
                self._delete_pod(pod)
        for pod in sorted(new, key=lambda p: p["metadata"]["name"])[replicas:]:
            self._delete_pod(pod)
        new = sorted(new, key=lambda p: p["metadata"]["name"])[:replicas]
        old_gone = not old or recreate
        stopping = [n for n in self.terminating(ns)
                    if n.startswith(f"{name}-") and not n.startswith(f"{name}-{digest}-")]
        if not (recreate and (old or stopping)):
            for _ in range(replicas - len(new)):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                pod = _pod(spec["template"], f"{name}-{digest}-{suffix}", ns, {TEMPLATE_HASH: digest},
                           owner_ref(dep, "Deployment"))
                self._create_pod(pod)
                new.append(pod)
        if not old_gone and sum(ready(p) for p in new) >= replicas:
            for pod in old:
                self._delete_pod(pod)
            old = []
        pods = new + ([] if recreate else old)
        n_ready = sum(ready(p) for p in new)
        status: Obj = {"observedGeneration": meta.get("generation"), "replicas": len(pods),
                       "updatedReplicas": len(new), "readyReplicas": sum(ready(p) for p in pods),
                       "availableReplicas": sum(ready(p) for p in pods),
                       "unavailableReplicas": max(0, replicas - n_ready)}
        available = n_ready >= replicas
        conditions = [
            {"type": "Available", "status": "True" if available else "False",
             "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "True",
             "reason": "NewReplicaSetAvailable" if available and not old else "ReplicaSetUpdated"},
        ]
        old_conditions = {c.get("type"): c for c in (dep.get("status") or {}).get("conditions") or []}
        if any({k: old_conditions.get(c["type"], {}).get(k) for k in c} != c for c in conditions):
            now = _now()
            status["conditions"] = [{**c, "lastUpdateTime": now, "lastTransitionTime": now,
                                     "message": f"{n_ready}/{replicas} pods of the new template ready"}
                                    for c in conditions]
        _write_status(self.api, node_api.path("apps/v1", "deployments", ns, name), dep, status)


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
