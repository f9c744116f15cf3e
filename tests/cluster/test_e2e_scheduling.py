"""A queued, gang-scheduled job on the test cluster: the A2CJob labelled with a Kueue queue and with
spec.schedulingPolicy coscheduling. The cluster has the scheduler-plugins' PodGroup CRD (vendored,
tests/support/crds) but neither Kueue nor a gang scheduler: the test plays Kueue (it removes the admission gate
from the pods, as Kueue does when it admits the workload) and the node plays whichever scheduler a pod names
(it binds every ungated pod; it does not wait for the gang).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from a2c.controller import scheduling
from tests.cluster.conftest import NS, Chart, Cluster
from tests.cluster.journeys import JOB, phase, values

CRD = Path(__file__).resolve().parents[1] / "support" / "crds" / "coscheduling-podgroup.yaml"
QUEUE = "team-a"


def _scheduled(pod: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"), {})


def _held(cluster: Cluster, pods: list[dict[str, Any]]) -> bool:
    """Every pod is behind Kueue's gate: Pending, SchedulingGated, not bound, nothing running on the node."""
    return bool(pods) and all(
        p["spec"].get("schedulingGates") == [{"name": scheduling.KUEUE_GATE}] and not p["spec"].get("nodeName")
        and (p.get("status") or {}).get("phase") == "Pending" and _scheduled(p).get("reason") == "SchedulingGated"
        and cluster.node.runtime(NS, p["metadata"]["name"]) is None for p in pods)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_queued_gang_waits_behind_the_gate_then_runs_as_one_podgroup(cluster: Cluster) -> None:
    cluster.apply([yaml.safe_load(CRD.read_text())], "podgroup-crd")
    cluster.kubectl("wait", "--for", "condition=Established", "crd/podgroups.scheduling.x-k8s.io", "--timeout", "30s")
    # The chart's job, queued and gang-scheduled (job.queueName, job.schedulingPolicy); it runs until deleted.
    cluster.install(Chart.render(values(stop={"targetReturn": 10_000.0, "maxEnvSteps": 10**12}, queueName=QUEUE,
                                        schedulingPolicy={"scheduler": "coscheduling"})))

    # The gang's PodGroup: every trainer and player (2 + 2), owned by the job.
    group = cluster.wait(lambda: cluster.api.get("scheduling.x-k8s.io/v1alpha1", "PodGroup", NS, JOB), 120,
                         "the job's PodGroup")
    owner = group["metadata"]["ownerReferences"][0]
    assert group["spec"] == {"minMember": 4}
    assert (owner["kind"], owner["uid"]) == ("A2CJob", cluster.job(JOB)["metadata"]["uid"])

    # Queued: both StatefulSets carry the queue; their pods exist, held behind Kueue's gate.
    cluster.wait(lambda: len(cluster.pods("trainer")) == 2 and len(cluster.pods("player")) == 2, 120, "4 pods")
    for sts in cluster.api.objects("apps/v1", "StatefulSet", NS):
        assert sts["metadata"]["labels"][scheduling.KUEUE_QUEUE] == QUEUE
    cluster.wait(lambda: _held(cluster, cluster.pods("trainer") + cluster.pods("player")), 60, "gated pods")
    cluster.wait(lambda: cluster.status(JOB).get("reason") == "Queued", 60, "the job to say it is queued")
    kept = time.monotonic() + 5  # ...and they stay held: nothing admits them but Kueue
    while time.monotonic() < kept:
        assert _held(cluster, cluster.pods("trainer") + cluster.pods("player")), cluster.describe()
        assert (phase(cluster), cluster.status(JOB).get("reason")) == ("Pending", "Queued")
        time.sleep(0.5)
    for pod in cluster.pods("trainer") + cluster.pods("player"):
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        labels, notes = pod["metadata"]["labels"], pod["metadata"].get("annotations") or {}
        assert labels[scheduling.KUEUE_QUEUE] == QUEUE
        assert labels[scheduling.KUEUE_GROUP] == scheduling.kueue_group_name(f"{JOB}-{component}")
        assert notes[scheduling.KUEUE_TOTAL] == "2"
        assert labels[scheduling.COSCHEDULING_LABEL] == JOB
        assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"

    # Kueue admits the workloads: it removes its gate from each pod; the pods start and the job runs.
    for pod in cluster.pods("trainer") + cluster.pods("player"):
        cluster.kubectl("patch", "pod", pod["metadata"]["name"], "--type", "merge",
                        "-p", json.dumps({"spec": {"schedulingGates": None}}))
    cluster.wait(lambda: phase(cluster) == "Running", 240, "the job to run once admitted")
    for pod in cluster.pods("trainer") + cluster.pods("player"):
        assert pod["spec"]["nodeName"] and not pod["spec"].get("schedulingGates")
        assert _scheduled(pod)["status"] == "True"

    cluster.kubectl("delete", "a2cjob", JOB, "--timeout", "60s")
    cluster.wait(lambda: cluster.api.get("scheduling.x-k8s.io/v1alpha1", "PodGroup", NS, JOB) is None, 60,
                 "the PodGroup to go with its job")
