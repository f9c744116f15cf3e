"""The job's life cycle on the test cluster with a garbage collector as slow as a real one (a second or more,
`APIServer` default): `helm upgrade` of a job value while the old job's children still exist,
`kubectl delete --cascade=foreground` of a running job, a controller failover.

What is checked is what the pods really run (their processes' environment, read from /proc) and what the API
recorded (the store's history, the controller's requests), not what the controller believes.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from tests.cluster.conftest import NS, Chart, Cluster
from tests.cluster.journeys import JOB, phase, values

LIVE = {"stop": {"targetReturn": 10_000.0, "maxEnvSteps": 10**9}}  # never ends by itself


def _controller(obj: dict[str, Any]) -> str:
    return next((r["uid"] for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), "")


class Recorder:
    """Samples the job's status and its trainer pods' owners every 0.2 s, in a thread, for the whole journey."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.stop = cluster, threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self._sample()  # what the last wait saw, whenever within the 0.2 s it came

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        job = self.cluster.job(JOB)
        sets = {s["metadata"]["uid"]: _controller(s) for s in self.cluster.api.objects("apps/v1", "StatefulSet", NS)}
        self.samples.append({"uid": job.get("metadata", {}).get("uid"), "status": dict(job.get("status") or {}),
                             "trainer_jobs": [sets.get(_controller(p), "?") for p in self.cluster.pods("trainer")]})


def _resumed_at(cluster: Cluster, pod: str) -> int | None:
    found = re.search(r"trainer 0 resumed at version (\d+)", cluster.node.logs(NS, pod))
    return int(found.group(1)) if found else None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_helm_upgrade_of_a_job_value_reaches_every_pod_and_resumes(cluster: Cluster) -> None:
    interval = 5
    spec = {**LIVE, "checkpoint": {"interval": interval}, "algorithm": {"lr": 0.002}}
    cluster.install(Chart.render(values(**spec)))
    cluster.wait(lambda: phase(cluster) == "Running" and int(cluster.status(JOB).get("iteration") or 0) > interval,
                 300, "the first job to train past a checkpoint")
    old_uid, before = cluster.job(JOB)["metadata"]["uid"], int(cluster.status(JOB)["iteration"])

    cluster.api.gc.delay_s = 3.0  # a busy cluster's collector: the new job surely meets the old children
    with Recorder(cluster) as recorder:
        started, mark = time.monotonic(), len(cluster.api.requests())
        cluster.upgrade(Chart.render(values(**{**spec, "algorithm": {"lr": 0.004}})))

        def upgraded() -> bool:
            pods = cluster.pods("trainer") + cluster.pods("player")
            envs = [cluster.process_env(p["metadata"]["name"]) for p in pods]
            return (len(pods) == 4 and all(e is not None and e.get("A2C_LR") == "0.004" for e in envs)
                    and cluster.job(JOB)["metadata"]["uid"] != old_uid and phase(cluster) == "Running")
        cluster.wait(upgraded, 300, "every trainer and player process to run with lr 0.004")
        took = time.monotonic() - started
        resumed = cluster.wait(lambda: _resumed_at(cluster, f"{JOB}-trainer-0"), 60, "trainer 0 to say it resumed")
        cluster.wait(lambda: int(cluster.status(JOB).get("iteration") or 0) > resumed, 120, "progress after it")

    replaced = {r.name for r in cluster.api.requests()[mark:] if r.user.endswith("-controller")
                and r.verb == "delete" and r.code == 200}
    assert {f"{JOB}-trainer", f"{JOB}-player", f"{JOB}-config"} <= replaced, replaced  # found, not adopted
    assert resumed >= before - interval, (before, resumed)  # the old group's final checkpoint or the one before
    new = [s for s in recorder.samples if s["uid"] not in (None, old_uid)]
    assert new, "the recorder never saw the new job"
    new_uid = new[0]["uid"]
    for sample in new:  # status true at every step: a formed group is the new job's pods, and only them
        if sample["status"].get("groupFormed") or sample["status"].get("phase") == "Running":
            assert sample["trainer_jobs"] and set(sample["trainer_jobs"]) == {new_uid}, sample
    iterations = [int(s["status"]["iteration"]) for s in new if "iteration" in s["status"]]
    assert iterations and iterations[0] >= resumed and iterations == sorted(iterations), iterations
    assert cluster.status(JOB)["gangRestarts"] == 0
    print(f"e2e helm upgrade: every pod on the new value {took:.1f} s after `helm upgrade`; resumed at {resumed} "
          f"(the old job was at {before})")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_foreground_delete_creates_nothing_and_the_job_goes_after_its_children(cluster: Cluster) -> None:
    cluster.install(Chart.render(values(**LIVE, checkpoint={"interval": 5})))
    cluster.wait(lambda: phase(cluster) == "Running" and cluster.status(JOB).get("groupFormed"), 300,
                 "the job to run")
    uid = cluster.job(JOB)["metadata"]["uid"]

    def formed_announced() -> bool:
        """The controller's pass that wrote groupFormed has ended: its last write, the Event announcing it, is
        posted after the status (so a delete sent on the status alone raced that pass's own Event)."""
        return any(e.get("reason") == "Running" and e["involvedObject"].get("uid") == uid
                   and "trainers ready" in e.get("message", "") for e in cluster.api.objects("v1", "Event", NS))
    cluster.wait(formed_announced, 60, "the controller's Event that the group formed")
    mark, requests = cluster.api.store.rv, len(cluster.api.requests())
    gone: dict[str, int] = {}  # uid -> resourceVersion of its removal, for the job and what carries its label

    def removed(_key: Any, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if meta["uid"] == uid or (meta.get("labels") or {}).get("a2c.dev/job") == JOB:
            gone[meta["uid"]] = int(meta["resourceVersion"])
    cluster.api.store.on_delete.append(removed)
    started = time.monotonic()
    cluster.kubectl("delete", "a2cjob", JOB, "--cascade=foreground", "--timeout=180s")  # returns once it is gone
    took = time.monotonic() - started

    after = cluster.api.requests()[requests:]
    asked = next(i for i, r in enumerate(after) if r.verb == "delete" and r.resource == "a2cjobs")
    writes = [r for r in after[asked:] if r.user.endswith("-controller")  # a status poll before it is fine
              and r.verb in ("create", "update", "patch", "delete") and r.resource != "leases"]
    assert writes == [], writes
    added = [e.obj["metadata"]["name"] for e in list(cluster.api.store.history) if e.rv > mark and e.type == "ADDED"
             and (e.obj["metadata"].get("labels") or {}).get("a2c.dev/job") == JOB]
    assert added == [], f"created while the job was being deleted: {added}"
    assert uid in gone and len(gone) >= 7, gone  # the job, 2 StatefulSets, 4 pods, the Service, the ConfigMap
    assert gone[uid] == max(gone.values()), "the job went before its children"
    reasons = [e.get("reason") for e in cluster.api.objects("v1", "Event", NS)]
    assert "GangRestart" not in reasons, reasons
    print(f"e2e foreground delete: the job and its {len(gone) - 1} children gone {took:.1f} s after kubectl delete")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_controller_failover_keeps_the_job_running(cluster: Cluster) -> None:
    """Two controller replicas; the leader's pod is deleted (SIGTERM: it stops acting at once and does not hand
    the Lease over): the standby leads when the Lease expires and goes on from status, with no gang restart."""
    cluster.install(Chart.render({**values(**LIVE, checkpoint={"interval": 5}), "controller": {"replicas": 2}}))
    cluster.wait(lambda: phase(cluster) == "Running" and cluster.status(JOB).get("groupFormed"), 300,
                 "the job to run")

    def holder() -> str:
        lease = cluster.api.get("coordination.k8s.io/v1", "Lease", NS, "a2c-controller") or {}
        return str((lease.get("spec") or {}).get("holderIdentity") or "")
    leader = cluster.wait(holder, 60, "a leader")
    pods = [p["metadata"]["name"] for p in cluster.pods("controller")]
    assert len(pods) == 2, pods
    old = next(name for name in pods if leader.startswith(name))
    started = time.monotonic()
    cluster.kubectl("delete", "pod", old, "--wait=false")
    cluster.wait(lambda: holder() and not holder().startswith(old), 90, "the standby to take the Lease")
    took_lease = time.monotonic() - started
    iteration = int(cluster.status(JOB).get("iteration") or 0)
    cluster.wait(lambda: int(cluster.status(JOB).get("iteration") or 0) > iteration, 60,
                 "progress written by the new leader")
    took_status = time.monotonic() - started
    status = cluster.status(JOB)
    assert status["phase"] == "Running" and status["gangRestarts"] == 0, status
    print(f"e2e controller failover: the standby led {took_lease:.1f} s after the leader's pod was deleted, "
          f"and wrote progress {took_status:.1f} s after")
