"""Queues and gangs: what puts a job's pods in a Kueue queue and in a gang scheduler's group.

Data flow: `resources` renders each StatefulSet's pod template with `scheduling(...)`'s labels, annotations and
pod fields, and the PodGroup from `pod_group(...)`. A job labelled `kueue.x-k8s.io/queue-name` carries the
label to both StatefulSets, whose pods are created behind Kueue's scheduling gate as one Kueue pod group per
StatefulSet (the trainers are admitted all at once); a gang scheduler (spec.schedulingPolicy.scheduler:
coscheduling, scheduling.x-k8s.io; volcano, scheduling.volcano.sh) gets its schedulerName, its group label or
annotation on every pod, and the PodGroup; `priorityClassName` goes on every pod.
"""

from __future__ import annotations

import hashlib
from typing import Any

from a2c.controller import spec as jobspec

# Kueue (kueue.x-k8s.io): what its StatefulSet integration's webhook writes into a queued StatefulSet's pod
# template (pkg/controller/jobs/statefulset/statefulset_webhook.go), written here too, with the same values, so
# that the webhook and the controller's drift repair agree and the gate holds where no webhook runs.
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
KUEUE_SERVING = "kueue.x-k8s.io/pod-group-serving"
KUEUE_GATE = "kueue.x-k8s.io/admission"
# Gang schedulers: the PodGroup's apiVersion, how a pod names its group (label or annotation), the usual
# schedulerName (the scheduler-plugins chart's second scheduler; Volcano's).
COSCHEDULING_API, COSCHEDULING_LABEL = "scheduling.x-k8s.io/v1alpha1", "scheduling.x-k8s.io/pod-group"
VOLCANO_API, VOLCANO_ANNOTATION = "scheduling.volcano.sh/v1beta1", "scheduling.k8s.io/group-name"
VOLCANO_TASK = "volcano.sh/task-spec"  # the pod's task, for the PodGroup's minTaskMember (as Kubeflow sets it)
SCHEDULER_NAMES = {"coscheduling": "scheduler-plugins-scheduler", "volcano": "volcano"}


def queue_name(job: dict[str, Any]) -> str:
    """The Kueue LocalQueue the job is submitted to: its `kueue.x-k8s.io/queue-name` label ("" = none)."""
    return str((job["metadata"].get("labels") or {}).get(KUEUE_QUEUE) or "")


def kueue_group_name(statefulset: str) -> str:
    """The Kueue workload (and pod group) name of a StatefulSet, as Kueue derives it from its owner
    (jobframework.GetWorkloadNameForOwnerWithGVK, no uid: "statefulset-<name>-<sha1 of kind, group, name>[:5]"),
    with the prefix cut to keep it a label value (63 characters), as Kueue's ShortWorkloadNames does."""
    digest = hashlib.sha1(f"StatefulSet\napps\n{statefulset}\n".encode()).hexdigest()[:5]  # noqa: S324 (Kueue's)
    return f"statefulset-{statefulset}"[:57] + f"-{digest}"


def group_name(job: dict[str, Any]) -> str:
    """The gang scheduler's PodGroup: named after the job."""
    return str(job["metadata"]["name"])


def scheduling(job: dict[str, Any], spec: dict[str, Any], component: str, replicas: int
               ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """(labels, annotations, pod spec fields) that put a `component` pod in its queue and its gang."""
    labels_: dict[str, str] = {}
    notes: dict[str, str] = {}
    pod: dict[str, Any] = {}
    queue = queue_name(job)
    if queue:
        labels_[KUEUE_QUEUE] = queue
        labels_[KUEUE_GROUP] = kueue_group_name(f"{job['metadata']['name']}-{component}")
        notes[KUEUE_TOTAL] = str(replicas)
        notes[KUEUE_SERVING] = "true"  # long-running: the StatefulSet replaces pods that go
        pod["schedulingGates"] = [{"name": KUEUE_GATE}]
    policy = spec["schedulingPolicy"]
    scheduler = policy["scheduler"]
    if scheduler != "none":
        pod["schedulerName"] = policy["schedulerName"] or SCHEDULER_NAMES[scheduler]
        if scheduler == "coscheduling":
            labels_[COSCHEDULING_LABEL] = group_name(job)
        else:
            notes[VOLCANO_ANNOTATION] = group_name(job)
            notes[VOLCANO_TASK] = component
    elif policy["schedulerName"]:
        pod["schedulerName"] = policy["schedulerName"]
    if policy["priorityClass"]:
        pod["priorityClassName"] = policy["priorityClass"]
    return labels_, notes, pod


def pod_group(job: dict[str, Any], spec: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any] | None:
    """The gang scheduler's PodGroup (None without one): minMember `spec.gang_size` (every trainer, and every
    player unless minAvailable says fewer); Volcano also gets the trainers as a task minimum, so the gang it
    places always holds all of them, its queue and the job's priority."""
    policy = spec["schedulingPolicy"]
    scheduler = policy["scheduler"]
    if scheduler == "none":
        return None
    size = jobspec.gang_size(spec)
    if scheduler == "coscheduling":
        return {"apiVersion": COSCHEDULING_API, "kind": "PodGroup", "metadata": meta, "spec": {"minMember": size}}
    trainers = int(spec["trainers"]["replicas"])
    tasks = {"trainer": trainers, **({"player": size - trainers} if size > trainers else {})}
    pg_spec: dict[str, Any] = {"minMember": size, "minTaskMember": tasks}
    if policy["queue"]:
        pg_spec["queue"] = policy["queue"]
    if policy["priorityClass"]:
        pg_spec["priorityClassName"] = policy["priorityClass"]
    return {"apiVersion": VOLCANO_API, "kind": "PodGroup", "metadata": meta, "spec": pg_spec}
