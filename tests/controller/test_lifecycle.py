"""The controller's life cycle against kmock: an in-memory API server spoken to over HTTP by the official
client, with trainer 0 faked by a real gRPC server on port 0.

kmock stores and serves objects; it runs no StatefulSet controller, no kubelet, no garbage collector and
no admission. So the tests play those parts in the open: they create the trainer pods a StatefulSet would,
bump `metadata.generation` when they change a spec (as the API server does), and only check what the
controller itself does: children, status, deleted pods, Events.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from a2c.controller import handlers, kube, loop
from a2c.v1 import trainer_pb2

API, KIND, NS = "a2c.dev/v1alpha1", "A2CJob", "ml"
Phase = trainer_pb2.TrainerStatus


def create_job(api: kube.Kube, name: str = "cp", **spec: Any) -> None:
    body = {"apiVersion": API, "kind": KIND, "spec": {"trainers": {"replicas": 2}, **spec},
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1}}
    api.request("POST", kube.path(API, KIND, NS), body=body)


def change_spec(api: kube.Kube, name: str, spec: dict[str, Any]) -> None:
    job = get_job(api, name)
    api.request("PATCH", kube.path(API, KIND, NS, name), content_type="application/merge-patch+json",
                body={"spec": spec, "metadata": {"generation": job["metadata"]["generation"] + 1}})


def get_job(api: kube.Kube, name: str = "cp") -> dict[str, Any]:
    return api.get(API, KIND, NS, name)


def sts(api: kube.Kube, name: str) -> dict[str, Any]:
    return api.get("apps/v1", "StatefulSet", NS, name)


def start_trainer_pods(api: kube.Kube, n: int, job: str = "cp", tag: str = "a") -> None:
    """What the StatefulSet controller and the kubelet would do: trainer pods, running and ready."""
    for i in range(n):
        labels = {"app.kubernetes.io/name": "a2c", "app.kubernetes.io/instance": job,
                  "app.kubernetes.io/managed-by": "a2c-controller",
                  "app.kubernetes.io/component": "trainer", "a2c.dev/job": job}
        api.request("POST", kube.path("v1", "Pod", NS), body={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job}-trainer-{i}", "namespace": NS, "uid": f"{tag}-{i}", "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "trainer", "restartCount": 0}]},
        })


def pod_names(api: kube.Kube) -> list[str]:
    return sorted(p["metadata"]["name"] for p in api.list("v1", "Pod", NS, {}))


def events(api: kube.Kube) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in api.list("v1", "Event", NS, {})]


def cond(job: dict[str, Any], type_: str) -> str:
    return next(c["status"] for c in job["status"]["conditions"] if c["type"] == type_)


def test_create_progress_gang_restart_success(api: kube.Kube, reconciler: handlers.Reconciler, trainer: Any,
                                              kmock_server: Any) -> None:
    fake, _ = trainer
    create_job(api, checkpoint={"persistent": True})
    assert reconciler.reconcile(NS, "cp") == "changed"
    children = [("ConfigMap", "cp-config"), ("Service", "cp-trainer"), ("PersistentVolumeClaim", "cp-checkpoints")]
    for kind, name in children:
        child = api.get("v1", kind, NS, name)
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-cp"
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 2 and sts(api, "cp-player")["spec"]["replicas"] == 2
    job = get_job(api)
    assert job["status"]["phase"] == "Running" and job["status"]["observedGeneration"] == 1  # trainer 0 says STARTING
    assert ("Normal", "Created") in events(api)

    # idempotent: a second pass with nothing new writes nothing
    writes = kmock_server.writes()
    assert reconciler.reconcile(NS, "cp") == "unchanged"
    assert kmock_server.writes() == writes

    # progress: the trainers come up and train; status follows trainer 0's Status RPC
    start_trainer_pods(api, 2)
    fake.set(phase=Phase.TRAINING, iteration=42, env_steps=5376, mean_return=87.5, episodes=210)
    reconciler.reconcile(NS, "cp")
    st = get_job(api)["status"]
    assert (st["iteration"], st["envSteps"], st["meanReturn"], st["episodes"]) == (42, 5376, 87.5, 210)
    assert cond(get_job(api), "Ready") == "True" and set(st["trainerPods"]) == {"cp-trainer-0", "cp-trainer-1"}

    # gang restart: trainer 1's container restarts -> every trainer pod is deleted, the StatefulSet stays
    before = sts(api, "cp-trainer")
    api.request("PATCH", kube.path("v1", "Pod", NS, "cp-trainer-1"), content_type="application/merge-patch+json",
                body={"status": {"containerStatuses": [{"name": "trainer", "restartCount": 1}]}})
    assert reconciler.reconcile(NS, "cp") == "restarted"
    assert pod_names(api) == []
    assert sts(api, "cp-trainer") == before
    st = get_job(api)["status"]
    assert st["phase"] == "Restarting" and st["gangRestarts"] == 1 and ("Warning", "GangRestart") in events(api)

    # the StatefulSet brings them back (new uids): recorded, Running again, no second restart
    start_trainer_pods(api, 2, tag="b")
    assert reconciler.reconcile(NS, "cp") == "changed"
    st = get_job(api)["status"]
    assert st["phase"] == "Running" and st["trainerPods"]["cp-trainer-0"]["uid"] == "b-0" and st["gangRestarts"] == 1

    # success: players (and trainers) scaled to zero, checkpoints kept, polling stops
    fake.set(phase=Phase.SUCCEEDED, mean_return=481.0)
    reconciler.reconcile(NS, "cp")
    job = get_job(api)
    assert job["status"]["phase"] == "Succeeded" and job["status"]["reason"] == "TargetReached"
    assert cond(job, "Succeeded") == "True" and cond(job, "Progressing") == "False"
    assert sts(api, "cp-player")["spec"]["replicas"] == 0 and sts(api, "cp-trainer")["spec"]["replicas"] == 0
    assert api.get("v1", "PersistentVolumeClaim", NS, "cp-checkpoints")
    calls, writes = fake.calls, kmock_server.writes()
    assert reconciler.reconcile(NS, "cp") == "unchanged" and fake.calls == calls  # final: no more polling
    assert kmock_server.writes() == writes


def test_spec_changes_scale_players_alone_and_reform_trainers(api: kube.Kube, reconciler: handlers.Reconciler,
                                                              trainer: Any) -> None:
    fake, _ = trainer
    fake.set(phase=Phase.TRAINING)
    create_job(api)
    reconciler.reconcile(NS, "cp")
    start_trainer_pods(api, 2)
    reconciler.reconcile(NS, "cp")
    trainers_before = sts(api, "cp-trainer")

    change_spec(api, "cp", {"players": {"replicasPerTrainer": 3}})
    reconciler.reconcile(NS, "cp")
    assert sts(api, "cp-player")["spec"]["replicas"] == 6
    assert sts(api, "cp-trainer") == trainers_before and pod_names(api) == ["cp-trainer-0", "cp-trainer-1"]
    assert get_job(api)["status"]["observedGeneration"] == 2 and ("Normal", "ScaledPlayers") in events(api)

    change_spec(api, "cp", {"trainers": {"replicas": 3}})
    assert reconciler.reconcile(NS, "cp") == "restarted"
    trainer_sts = sts(api, "cp-trainer")
    env = {e["name"]: e.get("value") for e in trainer_sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert trainer_sts["spec"]["replicas"] == 3 and env["WORLD_SIZE"] == "3"
    assert sts(api, "cp-player")["spec"]["replicas"] == 9 and pod_names(api) == []
    st = get_job(api)["status"]
    assert st["trainerReplicas"] == 3 and st["gangRestarts"] == 0 and ("Normal", "Reforming") in events(api)

    # a removed field is removed from the child too (merge patch from the last-applied rendering)
    start_trainer_pods(api, 3, tag="b")
    assert reconciler.reconcile(NS, "cp") == "changed"  # the re-formed group is recorded
    change_spec(api, "cp", {"trainers": {"nodeSelector": {"pool": "big"}}})
    assert reconciler.reconcile(NS, "cp") == "restarted"  # a new trainer template re-forms the group too
    assert pod_names(api) == [] and get_job(api)["status"]["gangRestarts"] == 0
    assert sts(api, "cp-trainer")["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "big"}
    change_spec(api, "cp", {"trainers": {"nodeSelector": None}})
    reconciler.reconcile(NS, "cp")
    assert "nodeSelector" not in sts(api, "cp-trainer")["spec"]["template"]["spec"]


def test_repeated_gang_failures_fail_the_job(api: kube.Kube, reconciler: handlers.Reconciler) -> None:
    create_job(api, maxGangRestarts=1)
    reconciler.reconcile(NS, "cp")
    for tag in ("a", "b"):
        start_trainer_pods(api, 2, tag=tag)
        reconciler.reconcile(NS, "cp")  # recorded
        api.delete("v1", "Pod", NS, "cp-trainer-0")  # a node is lost
        reconciler.reconcile(NS, "cp")
        for name in pod_names(api):
            api.delete("v1", "Pod", NS, name)
    job = get_job(api)
    assert job["status"]["phase"] == "Failed" and job["status"]["reason"] == "TooManyGangRestarts"
    assert "cp-trainer-0 vanished" in job["status"]["message"] and cond(job, "Failed") == "True"
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 0 and sts(api, "cp-player")["spec"]["replicas"] == 0
    assert ("Warning", "Failed") in events(api)


def test_invalid_spec_fails_with_a_reason(api: kube.Kube, reconciler: handlers.Reconciler) -> None:
    create_job(api, name="a" * 41)
    assert reconciler.reconcile(NS, "a" * 41) == "invalid"
    job = get_job(api, "a" * 41)
    assert job["status"]["phase"] == "Failed" and job["status"]["reason"] == "InvalidSpec"
    assert api.list("apps/v1", "StatefulSet", NS, {}) == []


def test_deleted_job_is_left_alone(api: kube.Kube, reconciler: handlers.Reconciler, kmock_server: Any) -> None:
    create_job(api)
    reconciler.reconcile(NS, "cp")
    api.delete(API, KIND, NS, "cp")
    writes = kmock_server.writes()
    assert reconciler.reconcile(NS, "cp") == "gone"
    assert kmock_server.writes() == writes  # nothing recreated; the children go by garbage collection


def test_the_loop_reconciles_on_watch_events(api: kube.Kube, reconciler: handlers.Reconciler, trainer: Any) -> None:
    fake, _ = trainer
    fake.set(phase=Phase.TRAINING, iteration=7)
    runner = loop.Loop(reconciler, namespace=None, resync_s=30.0)  # long resync: only the watch can wake it soon
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # let the first (empty) resync pass
        create_job(api)
        assert wait(lambda: (get_job(api).get("status") or {}).get("iteration") == 7)
        start_trainer_pods(api, 2)
        assert wait(lambda: len((get_job(api).get("status") or {}).get("trainerPods") or {}) == 2)
        api.delete("v1", "Pod", NS, "cp-trainer-1")  # the pod watch wakes the loop: gang restart
        assert wait(lambda: get_job(api)["status"].get("gangRestarts") == 1)
    finally:
        runner.shutdown()
        thread.join(5)
    assert not thread.is_alive()


def wait(predicate: Any, timeout_s: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
