"""Suspend and the run policy on the test cluster, as a user drives them: `kubectl patch` of spec.suspend on a
running job (its pods go, the trainers' final checkpoint is written on SIGTERM; resumed, a new group goes on
from it), and a job whose activeDeadlineSeconds fails it and whose ttlSecondsAfterFinished then deletes it,
leaving its checkpoint PVCs. Small jobs (the chart's CartPole, 2 trainers and 2 players) that never end by
themselves: they stop only by what is tested.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

import pytest

from a2c.controller import resources
from tests.cluster.conftest import NS, Chart, Cluster
from tests.cluster.journeys import JOB, phase, resyncs, values

LIVE = {"stop": {"targetReturn": 10_000.0, "maxEnvSteps": 10**9}}  # never ends by itself


def _resumed_at(cluster: Cluster) -> int | None:
    found = re.search(r"trainer 0 resumed at version (\d+)", cluster.node.logs(NS, f"{JOB}-trainer-0"))
    return int(found.group(1)) if found else None


def _job_pods(cluster: Cluster) -> list[str]:
    return [p["metadata"]["name"] for p in cluster.pods("trainer") + cluster.pods("player")]


def _suspend(cluster: Cluster, value: bool) -> None:
    cluster.kubectl("patch", "a2cjob", JOB, "--type", "merge", "-p", f'{{"spec":{{"suspend":{str(value).lower()}}}}}')


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_created_suspended_then_suspend_and_resume_goes_on_from_the_final_checkpoint(cluster: Cluster) -> None:
    """Created suspended: nothing runs through two of the controller's full passes. Resumed, it trains; suspended
    by `kubectl patch`, its pods go; resumed again, the new group goes on from the trainers' final checkpoint."""
    # no checkpoint on an interval within this test: what the resumed group loads is the one written on SIGTERM
    cluster.install(Chart.render(values(**LIVE, suspend=True, checkpoint={"interval": 100_000})))
    cluster.wait(lambda: phase(cluster) == "Suspended", 120, "the job to be created Suspended")
    table = cluster.kubectl("get", "a2cjobs")
    header, row = table.splitlines()[:2]
    assert row.split()[header.split().index("PHASE")] == "Suspended", table
    _stays_suspended(cluster)
    assert "startTime" not in cluster.status(JOB)

    _suspend(cluster, False)
    cluster.wait(lambda: phase(cluster) == "Running" and int(cluster.status(JOB).get("iteration") or 0) >= 5, 300,
                 "the job to train a few iterations")
    assert "resumedFrom" not in cluster.status(JOB)  # its first start: nothing to resume from

    started = time.monotonic()
    _suspend(cluster, True)
    cluster.wait(lambda: phase(cluster) == "Suspended" and not _job_pods(cluster), 120,
                 "the job to be Suspended with no pods")
    took = time.monotonic() - started
    before = int(cluster.status(JOB)["iteration"])
    claim = resources.checkpoint_pvc_name(JOB)
    assert cluster.api.get("v1", "PersistentVolumeClaim", NS, claim) is not None
    _stays_suspended(cluster)

    _suspend(cluster, False)
    resumed = cluster.wait(lambda: _resumed_at(cluster), 240, "trainer 0 to resume from a checkpoint")
    assert resumed >= before, (resumed, before)  # the final checkpoint, written when the trainers were stopped
    cluster.wait(lambda: phase(cluster) == "Running" and "resumedFrom" in cluster.status(JOB)
                 and int(cluster.status(JOB)["iteration"]) > resumed, 120, "progress after the resume")
    status = cluster.status(JOB)
    assert status["resumedFrom"]["iteration"] >= resumed and status["resumedFrom"]["previousIteration"] == before
    assert status["gangRestarts"] == 0, status
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Suspended"] == ("False", "JobResumed"), conditions
    reasons = [e.get("reason") for e in cluster.api.objects("v1", "Event", NS)]
    assert "Suspended" in reasons and "Resumed" in reasons and "GangRestart" not in reasons, reasons
    print(f"e2e suspend: pods gone {took:.1f} s after the patch; resumed at version {resumed} "
          f"(status held {before} when suspended)")


def _stays_suspended(cluster: Cluster) -> None:
    """No pod, the children at zero, through two of the controller's full passes over the job."""
    lists = resyncs(cluster)

    def still_suspended() -> bool:
        sets = {s["metadata"]["name"]: s["spec"]["replicas"] for s in cluster.api.objects("apps/v1", "StatefulSet", NS)}
        assert sets == {f"{JOB}-trainer": 0, f"{JOB}-player": 0}, sets
        assert not _job_pods(cluster) and phase(cluster) == "Suspended", cluster.describe()
        return resyncs(cluster) >= lists + 2
    cluster.wait(still_suspended, 60, "two resyncs of the suspended job")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_deadline_fails_the_job_and_the_ttl_deletes_it_keeping_the_pvcs(cluster: Cluster) -> None:
    deadline, ttl = 45, 10
    cluster.install(Chart.render(values(**LIVE, runPolicy={"activeDeadlineSeconds": deadline,
                                                           "ttlSecondsAfterFinished": ttl})))
    uid = cluster.wait(lambda: cluster.job(JOB).get("metadata", {}).get("uid"), 60, "the job")
    seen: list[dict[str, Any]] = []

    def failed() -> bool:
        status = cluster.status(JOB)
        if status.get("phase") == "Failed":
            seen.append(status)
        return bool(seen)
    cluster.wait(failed, 240, "the job to fail at its deadline")
    status = seen[0]
    assert status["reason"] == "DeadlineExceeded", status
    active = (_epoch(status["completionTime"]) - _epoch(status["startTime"]))
    assert deadline <= active <= deadline + 10, active  # the controller came back at the deadline, not a resync later
    assert status["conditions"] and {c["type"]: c["status"] for c in status["conditions"]}["Failed"] == "True"
    claim = resources.checkpoint_pvc_name(JOB)
    assert cluster.api.get("v1", "PersistentVolumeClaim", NS, claim) is not None

    cluster.wait(lambda: not cluster.job(JOB), 60, "the job to be deleted after its TTL")
    gone = time.time()
    assert gone - _epoch(status["completionTime"]) >= ttl - 1
    cluster.wait(lambda: not _job_pods(cluster) and not [
        o for kind in (("apps/v1", "StatefulSet"), ("v1", "Service"), ("v1", "ConfigMap"))
        for o in cluster.api.objects(*kind, NS) if (o["metadata"].get("labels") or {}).get("a2c.dev/job") == JOB],
        60, "its children to be collected")
    pvc = cluster.api.get("v1", "PersistentVolumeClaim", NS, claim)
    assert pvc is not None and not pvc["metadata"].get("ownerReferences"), "checkpoints outlive the job"
    deletes = [r for r in cluster.api.requests() if r.user.endswith("-controller") and r.verb == "delete"
               and r.resource == "a2cjobs"]
    assert len(deletes) == 1, deletes
    print(f"e2e run policy: failed after {active:.0f} s active (deadline {deadline} s), deleted "
          f"{gone - _epoch(status['completionTime']):.0f} s after (ttl {ttl} s); job uid {uid}")


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
