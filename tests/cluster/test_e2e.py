"""The user's journey on the test cluster: `helm install` (Helm's rendering, applied with the real kubectl),
the controller as a pod, the job's trainers and players as real processes in their own network namespaces,
talking gRPC and gloo by their pods' DNS names; `kubectl get/describe/delete`; `helm test`; a trainer lost
mid-run; `helm upgrade`; a job the image cannot run.

Each test is one cluster (tests/cluster/conftest.py). What the cluster does not emulate is listed in
docs/kubernetes.md ("The test cluster").
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from a2c.controller import resources
from tests.cluster.conftest import NS, Chart, Cluster
from tests.cluster.journeys import JOB, ROOT, TARGET, controller_ready, job_writes, phase, ready, resyncs, values


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_install_train_succeed_stay_succeeded_and_delete(cluster: Cluster) -> None:
    """(a) install and solve, (g) delete, (h) with kubectl."""
    cluster.install(Chart.render(values()))
    cluster.wait(lambda: controller_ready(cluster), 120, "the controller pod to be Ready")
    seen: list[str] = []

    def record() -> str:
        now = phase(cluster)
        if now and (not seen or seen[-1] != now):
            seen.append(now)
        return now

    cluster.wait(lambda: record() in ("Succeeded", "Failed"), 600, "the job to end")
    status = cluster.status(JOB)
    assert status["phase"] == "Succeeded", cluster.describe()
    assert seen == ["Pending", "Running", "Succeeded"], seen
    assert status["reason"] == "TargetReached" and status["meanReturn"] >= TARGET and status["iteration"] > 0
    assert status["gangRestarts"] == 0

    # it stays Succeeded: no pod restarted, no gang restart, nothing scaled back up, while its pods go and then
    # through two of the controller's resyncs (each a full pass over the job) after they have gone
    def still_succeeded() -> bool:
        assert phase(cluster) == "Succeeded" and cluster.status(JOB)["gangRestarts"] == 0, cluster.describe()
        for name, count in {**cluster.restarts("trainer"), **cluster.restarts("player")}.items():
            assert count == 0, f"{name} restarted after the job succeeded"
        return True

    cluster.wait(lambda: still_succeeded() and not cluster.pods("trainer") and not cluster.pods("player"), 60,
                 "the pods to go")
    passes = resyncs(cluster)

    def stays_down() -> bool:
        scaled = {s["metadata"]["name"]: s["spec"].get("replicas") for s in cluster.api.objects("apps/v1",
                                                                                              "StatefulSet", NS)}
        assert still_succeeded() and not cluster.pods("trainer") and not cluster.pods("player"), cluster.describe()
        assert set(scaled.values()) == {0}, scaled
        return resyncs(cluster) >= passes + 2

    cluster.wait(stays_down, 60, "two resyncs of the finished job")

    # (h) what a user sees with kubectl
    table = cluster.kubectl("get", "a2cjobs")
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "PHASE", "READY", "REASON"], table
    assert row.split()[:4] == [JOB, "Succeeded", "False", "TargetReached"], table
    described = cluster.kubectl("describe", "a2cjob", JOB)
    for reason in ("Created", "Running", "Succeeded"):
        assert re.search(rf"Normal\s+{reason}\s", described), described

    # (g) delete: the children go, the checkpoints stay
    claim = resources.checkpoint_pvc_name(JOB)
    assert cluster.api.get("v1", "PersistentVolumeClaim", NS, claim) is not None
    cluster.kubectl("delete", "a2cjob", JOB, "--timeout", "60s")
    cluster.wait(lambda: not [o for kind in (("apps/v1", "StatefulSet"), ("v1", "Service"), ("v1", "ConfigMap"))
                              for o in cluster.api.objects(*kind, NS)
                              if (o["metadata"].get("labels") or {}).get("a2c.dev/job") == JOB],
                 60, "the job's children to be collected")
    assert cluster.api.get("v1", "PersistentVolumeClaim", NS, claim) is not None, "checkpoints outlive the job"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_running_job_costs_few_api_writes_and_passes_helm_test(cluster: Cluster) -> None:
    """(e) the controller's API writes per running job at steady state, (f) `helm test` against it."""
    # neither target nor budget is ever reached: it runs until deleted
    chart = Chart.render(values(stop={"targetReturn": 10_000.0, "maxEnvSteps": 10**12}))
    cluster.install(chart)
    cluster.wait(lambda: phase(cluster) == "Running", 240, "the job to run")
    cluster.wait(lambda: len(cluster.pods("trainer")) == 2 and all(ready(p) for p in cluster.pods("trainer")), 60,
                 "every trainer to be Ready")
    cluster.apply(chart.tests, "helm-test")  # `helm test`: the chart's test pod checks every trainer over gRPC
    test_pod = chart.tests[0]["metadata"]["name"]
    cluster.wait(lambda: (cluster.api.get("v1", "Pod", NS, test_pod) or {}).get("status", {}).get("phase")
                 in ("Succeeded", "Failed"), 120, "the helm test pod to finish")
    assert (cluster.api.get("v1", "Pod", NS, test_pod) or {})["status"]["phase"] == "Succeeded", \
        cluster.node.logs(NS, test_pod)
    # the steady state's cost, counted over whole resyncs (each polls trainer 0 and writes its progress once)
    first = resyncs(cluster)
    cluster.wait(lambda: resyncs(cluster) > first, 30, "a resync")
    started, before, first = time.monotonic(), job_writes(cluster), resyncs(cluster)
    cluster.wait(lambda: resyncs(cluster) >= first + 3, 60, "three more resyncs")
    window_s, writes, passes = time.monotonic() - started, job_writes(cluster) - before, resyncs(cluster) - first
    assert phase(cluster) == "Running" and cluster.status(JOB)["gangRestarts"] == 0, cluster.describe()
    per_minute = writes / passes * (60 / 10.0)  # at the default --resync-s of 10
    assert writes <= 2 * passes, (writes, passes, window_s)  # at most 12 a minute
    print(f"e2e steady state: {writes} controller writes for the job in {passes} resyncs, {window_s:.0f} s "
          f"({per_minute:.1f}/min at a 10 s resync)")
    cluster.kubectl("delete", "a2cjob", JOB, "--timeout", "60s")
    cluster.wait(lambda: not cluster.pods("trainer") and not cluster.pods("player"), 90, "the pods to go")


def _journal(cluster: Cluster) -> str:
    """metrics.jsonl, which trainer 0 appends to on its checkpoint volume (a resumed run appends after the rows
    of the run it resumed, some of which it will do again)."""
    folder = cluster.node.claim_dir(NS, resources.checkpoint_pvc_name(JOB))
    try:
        with open(f"{folder}/metrics.jsonl") as f:
            return f.read()
    except (OSError, TypeError):
        return ""


def _journal_iteration(cluster: Cluster, since: int = 0) -> int:
    """The newest iteration in the rows written after the first `since` characters of the journal."""
    rows = re.findall(r'"iteration": (\d+)', _journal(cluster)[since:])
    return int(rows[-1]) if rows else 0


def _checkpoints(cluster: Cluster) -> list[str]:
    folder = cluster.node.claim_dir(NS, resources.checkpoint_pvc_name(JOB))
    return sorted(os.listdir(f"{folder}/checkpoints")) if folder and os.path.isdir(f"{folder}/checkpoints") else []


def _log_of(cluster: Cluster, uid: str) -> str:
    """The log of the pod with this uid, running or gone (pods of one StatefulSet reuse their names)."""
    for rt in [*cluster.node.retired, *cluster.node.pods.values()]:
        if rt.uid == uid:
            with open(rt.containers[0].log_file, errors="replace") as f:
                return f.read()
    return ""


def _resumed_at(cluster: Cluster, pod: str, not_uid: str) -> int | None:
    """The version the trainer in pod `pod` (not the one with uid `not_uid`: a pod of the same name that is
    gone) resumed at, once its log says so."""
    live = cluster.api.get("v1", "Pod", NS, pod)
    runtime = cluster.node.runtime(NS, pod)
    if live is None or live["metadata"]["uid"] == not_uid or runtime is None or runtime.uid != live["metadata"]["uid"]:
        return None
    found = re.search(r"trainer 0 resumed at version (\d+)", cluster.node.logs(NS, pod))
    return int(found.group(1)) if found else None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_lost_trainer_restarts_the_gang_and_an_upgrade_resumes_from_the_checkpoints(cluster: Cluster) -> None:
    interval = 20
    # 8 copies per player at lr 2e-3 (the defaults before 64 at 4e-3): a run long enough to be interrupted twice
    chart = Chart.render(values(stop={"targetReturn": 475.0}, checkpoint={"interval": interval},
                                players={"envsPerPlayer": 8}, algorithm={"lr": 0.002}))
    cluster.install(chart)
    cluster.wait(lambda: phase(cluster) == "Running" and _journal_iteration(cluster) >= 2 * interval + 5, 300,
                 "two checkpoints")
    old_uid = (cluster.api.get("v1", "Pod", NS, f"{JOB}-trainer-0") or {})["metadata"]["uid"]

    # (b) SIGKILL trainer 1's process mid-run: its container restarts, then the controller restarts the gang
    cluster.node.kill(NS, f"{JOB}-trainer-1", signal.SIGKILL)
    cluster.wait(lambda: cluster.status(JOB).get("gangRestarts") == 1, 120, "a gang restart")
    before = _journal_iteration(cluster)  # the last iteration done: trainer 0 waits on its lost peer since
    resumed = cluster.wait(lambda: _resumed_at(cluster, f"{JOB}-trainer-0", old_uid), 180, "trainer 0 to resume")
    assert before - interval <= resumed <= before, (before, resumed, _checkpoints(cluster))
    mark = len(_journal(cluster))  # what the resumed trainer writes comes after this
    cluster.wait(lambda: phase(cluster) == "Running" and _journal_iteration(cluster, mark) > resumed + 5, 240,
                 "training to go on after the gang restart")
    assert cluster.status(JOB)["gangRestarts"] == 1

    # (c) `helm upgrade`: the hook job is deleted (its children with it) and created again; it resumes
    before = _journal_iteration(cluster, mark)
    old_uid = (cluster.api.get("v1", "Pod", NS, f"{JOB}-trainer-0") or {})["metadata"]["uid"]
    cluster.kubectl("delete", "a2cjob", JOB, "--timeout", "60s")
    cluster.wait(lambda: not cluster.pods("trainer"), 120, "the old job's trainers to go")
    stopped_log = _log_of(cluster, old_uid)
    assert "STOPPING" in stopped_log, stopped_log[-3000:]  # SIGTERM: the group agreed to stop, then checkpointed
    cluster.apply(chart.job, "hooks-upgrade")
    resumed = cluster.wait(lambda: _resumed_at(cluster, f"{JOB}-trainer-0", old_uid), 240,
                           "the new job's trainer 0 to resume")
    assert resumed >= before, (before, resumed, _checkpoints(cluster), stopped_log)  # the final checkpoint
    cluster.wait(lambda: phase(cluster) in ("Succeeded", "Failed"), 600, "the new job to end")
    status = cluster.status(JOB)
    assert status["phase"] == "Succeeded" and status["gangRestarts"] == 0, cluster.describe()
    assert status["envSteps"] > 0 and status["meanReturn"] >= 475.0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_job_the_image_cannot_run_fails_with_the_reason_and_no_restart_loop(cluster: Cluster) -> None:
    """(d) a broken job, then (h) a user's own job from examples/ on the same cluster."""
    chart = Chart.render(values(environment={"id": "NoSuchEnvironment-v0"}))
    cluster.install(chart)
    cluster.wait(lambda: phase(cluster) == "Failed", 180, "the job to fail")
    status = cluster.status(JOB)
    assert status["reason"] == "TrainerCannotStart", status
    assert "NoSuchEnvironment" in status["message"] and "cannot start" in status["message"], status
    described = cluster.kubectl("describe", "a2cjob", JOB)
    assert re.search(r"Warning\s+TrainerCannotStart\s", described), described
    cluster.wait(lambda: not cluster.pods("trainer") and not cluster.pods("player"), 60, "the pods to go")
    assert cluster.status(JOB)["gangRestarts"] == 0

    # (h) a job of the user's own, as the README says: `kubectl apply -f examples/cartpole.yaml`
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "cartpole.yaml"))
    cluster.wait(lambda: phase(cluster, "cartpole") == "Running" and cluster.status("cartpole").get("groupFormed"),
                 240, "examples/cartpole.yaml to train")
    assert len(cluster.pods("player")) == 4 and cluster.status("cartpole")["gangRestarts"] == 0
    cluster.kubectl("delete", "-f", str(ROOT / "examples" / "cartpole.yaml"), "--timeout", "60s")
    cluster.wait(lambda: not cluster.pods("trainer") and not cluster.pods("player"), 90, "its pods to go")

