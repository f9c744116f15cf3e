"""The controller's life cycle against a strict stand-in for kube-apiserver, spoken to over HTTP by the
official client as the chart's ServiceAccount, with trainer 0 faked by a real gRPC server on port 0.

The API server validates, defaults and versions objects and collects garbage like the real one; it runs no
StatefulSet controller and no kubelet (tests/cluster's node agent does, end to end). So these tests play
those two in the open: they create the trainer pods a StatefulSet would and write their status through
the /status subresource as a kubelet would, and check only what the controller itself does.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from kubernetes import client

from a2c import config
from a2c.controller import handlers, kube, loop
from a2c.controller import spec as jobspec
from tests.cluster.apiserver import APIServer
from tests.controller.conftest import CONTROLLER, NS, FakeTrainer
from tests.controller.jobs import (
    API,
    KIND,
    Phase,
    change_spec,
    cond,
    create_job,
    events,
    get_job,
    pod_names,
    set_pod_status,
    start_trainer_pods,
    sts,
    writes,
)
from tests.support.procs import wait_for


def test_create_progress_gang_restart_success(api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler,
                                              trainer: tuple[FakeTrainer, str], apiserver: APIServer) -> None:
    fake, _ = trainer
    uid = create_job(admin, checkpoint={"persistent": True})["metadata"]["uid"]
    assert reconciler.reconcile(NS, "cp") == "changed"
    for kind, name in [("ConfigMap", "cp-config"), ("Service", "cp-trainer")]:
        assert api.get("v1", kind, NS, name)["metadata"]["ownerReferences"][0]["uid"] == uid
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 2 and sts(api, "cp-player")["spec"]["replicas"] == 2
    claims = sts(api, "cp-trainer")["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["checkpoints"]  # a retained PVC per rank, owned by none
    job = get_job(api)
    assert job["status"]["phase"] == "Pending" and job["status"]["observedGeneration"] == 1
    assert job["status"]["message"] == "waiting for trainers (0/2 ready)"  # trainer 0 says STARTING meanwhile
    assert ("Normal", "Created") in events(apiserver)

    # idempotent: a second pass with nothing new writes nothing
    before = writes(apiserver)
    assert reconciler.reconcile(NS, "cp") == "unchanged"
    assert writes(apiserver) == before

    # the group forms; trainer 0 reports progress, with no finished episode yet (mean return NaN: left out)
    start_trainer_pods(admin, 2)
    fake.set(phase=Phase.TRAINING, iteration=3, env_steps=384, mean_return=float("nan"), episodes=0)
    reconciler.reconcile(NS, "cp")
    st = get_job(api)["status"]
    assert st["phase"] == "Running" and st["iteration"] == 3 and "meanReturn" not in st
    fake.set(phase=Phase.TRAINING, iteration=42, env_steps=5376, mean_return=87.5, episodes=210)
    reconciler.reconcile(NS, "cp")
    st = get_job(api)["status"]
    assert (st["iteration"], st["envSteps"], st["meanReturn"], st["episodes"]) == (42, 5376, 87.5, 210)
    assert cond(get_job(api), "Ready") == "True" and set(st["trainerPods"]) == {"cp-trainer-0", "cp-trainer-1"}

    # gang restart: trainer 1's container restarts -> every trainer pod is deleted, the StatefulSet stays
    before_sts = sts(api, "cp-trainer")
    set_pod_status(admin, "cp-trainer-1", restarts=1, terminated={"exitCode": 1, "reason": "Error"})
    assert reconciler.reconcile(NS, "cp") == "restarted"
    assert pod_names(api) == []
    assert sts(api, "cp-trainer") == before_sts
    st = get_job(api)["status"]
    assert st["phase"] == "Restarting" and st["gangRestarts"] == 1 and ("Warning", "GangRestart") in events(apiserver)

    # the StatefulSet brings them back (new uids): recorded once the group has formed, Running again
    uids = start_trainer_pods(admin, 2)
    assert reconciler.reconcile(NS, "cp") == "changed"
    st = get_job(api)["status"]
    assert st["phase"] == "Running" and st["trainerPods"]["cp-trainer-0"]["uid"] == uids[0]
    assert st["gangRestarts"] == 1

    # success, as a real trainer lives it: trainer 0 reports SUCCEEDED, then (killed after all) exits; its pod
    # restarts and the new process resumes from the checkpoint, reporting SUCCEEDED again. All in one pass.
    fake.set(phase=Phase.SUCCEEDED, mean_return=481.0, message="mean return 481.0 reached the target 475")
    set_pod_status(admin, "cp-trainer-0", restarts=1, terminated={"exitCode": 0, "reason": "Completed"})
    reconciler.reconcile(NS, "cp")
    job = get_job(api)
    assert job["status"]["phase"] == "Succeeded" and job["status"]["reason"] == "TargetReached"
    assert job["status"]["gangRestarts"] == 1, "a final report beats a restart"
    assert cond(job, "Succeeded") == "True" and cond(job, "Progressing") == "False"
    assert sts(api, "cp-player")["spec"]["replicas"] == 0 and sts(api, "cp-trainer")["spec"]["replicas"] == 0
    calls, before = fake.calls, writes(apiserver)
    fake.up = False  # scaled down: trainer 0 is gone for good
    for _ in range(3):  # final: no more polling, no gang restart, nothing written
        assert reconciler.reconcile(NS, "cp") == "unchanged"
    assert fake.calls == calls and writes(apiserver) == before and get_job(api)["status"]["phase"] == "Succeeded"


def test_events_follow_a_successful_status_write(api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler,
                                                 trainer: tuple[FakeTrainer, str], apiserver: APIServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused status write must not post the job's Events: every retry would post them again."""
    create_job(admin)
    original = reconciler.kube.patch_status

    def refused(job: dict[str, Any], status: dict[str, Any]) -> None:
        raise RuntimeError("the API server refused the status write")

    monkeypatch.setattr(reconciler.kube, "patch_status", refused)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            reconciler.reconcile(NS, "cp")
    assert events(apiserver) == []
    monkeypatch.setattr(reconciler.kube, "patch_status", original)
    reconciler.reconcile(NS, "cp")
    assert events(apiserver) == [("Normal", "Created")]


def test_a_nan_body_is_refused_before_it_leaves(api: kube.Kube, admin: kube.Kube) -> None:
    """kube-apiserver answers 400 to NaN; our client refuses to send it, saying why; the stand-in refuses it too."""
    job = create_job(admin)
    with pytest.raises(ValueError, match="not JSON compliant"):
        api.patch_status(job, {"meanReturn": float("nan")})
    cfg = admin.api.configuration
    response = admin.api.rest_client.pool_manager.request(
        "PATCH", f"{cfg.host}{kube.path(API, KIND, NS, 'cp')}/status", body=b'{"status": {"meanReturn": NaN}}',
        headers={"Content-Type": "application/merge-patch+json",
                 "Authorization": cfg.get_api_key_with_prefix("BearerToken")})
    assert response.status == 400, response.data


def test_spec_changes_scale_players_alone_and_reform_trainers(api: kube.Kube, admin: kube.Kube,
                                                              reconciler: handlers.Reconciler,
                                                              trainer: tuple[FakeTrainer, str],
                                                              apiserver: APIServer) -> None:
    fake, _ = trainer
    fake.set(phase=Phase.TRAINING)
    create_job(admin)
    reconciler.reconcile(NS, "cp")
    start_trainer_pods(admin, 2)
    reconciler.reconcile(NS, "cp")
    trainers_before = sts(api, "cp-trainer")

    change_spec(admin, "cp", {"players": {"replicasPerTrainer": 3}})
    reconciler.reconcile(NS, "cp")
    assert sts(api, "cp-player")["spec"]["replicas"] == 6
    assert sts(api, "cp-trainer") == trainers_before and pod_names(api) == ["cp-trainer-0", "cp-trainer-1"]
    assert get_job(api)["status"]["observedGeneration"] == 2 and ("Normal", "ScaledPlayers") in events(apiserver)

    change_spec(admin, "cp", {"trainers": {"replicas": 3}})
    assert reconciler.reconcile(NS, "cp") == "restarted"
    trainer_sts = sts(api, "cp-trainer")
    env = {e["name"]: e.get("value") for e in trainer_sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert trainer_sts["spec"]["replicas"] == 3 and env["WORLD_SIZE"] == "3"
    assert sts(api, "cp-player")["spec"]["replicas"] == 9 and pod_names(api) == []
    st = get_job(api)["status"]
    assert st["trainerReplicas"] == 3 and st["gangRestarts"] == 0 and ("Normal", "Reforming") in events(apiserver)

    # a removed field is removed from the child too (merge patch from the last-applied rendering)
    start_trainer_pods(admin, 3)
    assert reconciler.reconcile(NS, "cp") == "changed"  # the re-formed group is recorded
    change_spec(admin, "cp", {"trainers": {"nodeSelector": {"pool": "big"}}})
    assert reconciler.reconcile(NS, "cp") == "restarted"  # a new trainer template re-forms the group too
    assert pod_names(api) == [] and get_job(api)["status"]["gangRestarts"] == 0
    assert sts(api, "cp-trainer")["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "big"}
    change_spec(admin, "cp", {"trainers": {"nodeSelector": None}})
    reconciler.reconcile(NS, "cp")
    assert "nodeSelector" not in sts(api, "cp-trainer")["spec"]["template"]["spec"]


def test_repeated_gang_failures_fail_the_job(api: kube.Kube, admin: kube.Kube,
                                             reconciler: handlers.Reconciler, apiserver: APIServer) -> None:
    create_job(admin, maxGangRestarts=1)
    reconciler.reconcile(NS, "cp")
    for _ in range(2):
        start_trainer_pods(admin, 2)
        reconciler.reconcile(NS, "cp")  # the group forms: recorded
        admin.delete("v1", "Pod", NS, "cp-trainer-0")  # a node is lost
        reconciler.reconcile(NS, "cp")
        for name in pod_names(api):
            admin.delete("v1", "Pod", NS, name)
    job = get_job(api)
    assert job["status"]["phase"] == "Failed" and job["status"]["reason"] == "TooManyGangRestarts"
    assert "cp-trainer-0 vanished" in job["status"]["message"] and cond(job, "Failed") == "True"
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 0 and sts(api, "cp-player")["spec"]["replicas"] == 0
    assert ("Warning", "Failed") in events(apiserver)


def test_restarts_before_the_group_forms_are_not_gang_failures(api: kube.Kube, admin: kube.Kube,
                                                               reconciler: handlers.Reconciler,
                                                               trainer: tuple[FakeTrainer, str]) -> None:
    """Rank 1 is up, rank 0's image is still pulling: rank 1 times out its rendezvous and restarts, again and
    again. That is waiting, not failing; once every rank is Ready the group has formed."""
    create_job(admin, maxGangRestarts=1)
    reconciler.reconcile(NS, "cp")
    start_trainer_pods(admin, 2, ready=False)
    for restarts in range(1, 5):
        set_pod_status(admin, "cp-trainer-1", ready=False, restarts=restarts,
                       terminated={"exitCode": 1, "reason": "Error", "message": "rendezvous timed out"})
        assert reconciler.reconcile(NS, "cp") != "restarted"
    st = get_job(api)["status"]
    assert st["phase"] == "Pending" and st["gangRestarts"] == 0 and "(0/2 ready)" in st["message"]
    set_pod_status(admin, "cp-trainer-0")
    set_pod_status(admin, "cp-trainer-1", restarts=4)
    trainer[0].set(phase=Phase.TRAINING, iteration=1)
    reconciler.reconcile(NS, "cp")
    st = get_job(api)["status"]
    assert st["phase"] == "Running" and st["groupFormed"] is True and st["gangRestarts"] == 0


def test_a_trainer_that_cannot_start_fails_the_job(api: kube.Kube, admin: kube.Kube,
                                                   reconciler: handlers.Reconciler, apiserver: APIServer) -> None:
    create_job(admin, environment={"id": "NoSuchEnvironment-v0"})
    reconciler.reconcile(NS, "cp")
    start_trainer_pods(admin, 2, ready=False)
    why = "trainer cannot start: NameNotFound: Environment `NoSuchEnvironment` doesn't exist."
    set_pod_status(admin, "cp-trainer-0", ready=False, restarts=1,
                   terminated={"exitCode": 3, "reason": "Error", "message": why})
    reconciler.reconcile(NS, "cp")
    job = get_job(api)
    assert job["status"]["phase"] == "Failed" and job["status"]["reason"] == "TrainerCannotStart"
    assert why in job["status"]["message"] and ("Warning", "TrainerCannotStart") in events(apiserver)
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 0  # no restart loop


def test_invalid_spec_fails_with_a_reason(api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler,
                                          apiserver: APIServer) -> None:
    """What admission lets through but the controller cannot run: TLS mutual without a Secret, under an older
    CRD without the rule that refuses it (`crds.install=false` with a CRD from an earlier release)."""
    crd = apiserver.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "a2cjobs.a2c.dev")
    assert crd is not None
    tls = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tls"]
    assert tls.pop("x-kubernetes-validations")
    admin.request("PUT", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/a2cjobs.a2c.dev", body=crd)
    create_job(admin, tls={"mutual": True})
    assert reconciler.reconcile(NS, "cp") == "invalid"
    job = get_job(api)
    assert job["status"]["phase"] == "Failed" and job["status"]["reason"] == "InvalidSpec"
    assert api.list("apps/v1", "StatefulSet", NS, {}) == []
    with pytest.raises(Exception, match="422"):  # a name the children cannot carry is refused at admission (CEL)
        create_job(admin, name="a" * 41)


def test_deleted_job_is_left_alone_and_its_children_are_collected(api: kube.Kube, admin: kube.Kube,
                                                                  reconciler: handlers.Reconciler,
                                                                  apiserver: APIServer) -> None:
    create_job(admin)
    reconciler.reconcile(NS, "cp")
    admin.delete(API, KIND, NS, "cp")
    before = writes(apiserver)
    assert reconciler.reconcile(NS, "cp") == "gone"
    assert writes(apiserver) == before  # nothing recreated
    apiserver.wait_for(lambda: not apiserver.objects("apps/v1", "StatefulSet", NS) and not apiserver.objects(
        "v1", "ConfigMap", NS) and not apiserver.objects("v1", "Service", NS), timeout=10)  # each in its own time


def _run(runner: loop.Loop) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def test_the_loop_reconciles_on_watch_events(api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler,
                                             trainer: tuple[FakeTrainer, str]) -> None:
    fake, _ = trainer
    fake.set(phase=Phase.TRAINING, iteration=7)
    runner = loop.Loop(reconciler, namespace=NS, resync_s=30.0)  # long resync: only a watch can wake it soon
    thread = _run(runner)
    try:
        create_job(admin)
        wait_for(lambda: (get_job(api).get("status") or {}).get("phase") == "Pending", 10, "the job's children")
        start_trainer_pods(admin, 2)
        wait_for(lambda: get_job(api)["status"].get("groupFormed"), 10, "the group to be recorded")
        admin.delete("v1", "Pod", NS, "cp-trainer-1")  # the pod watch wakes the loop: gang restart
        wait_for(lambda: get_job(api)["status"].get("gangRestarts") == 1, 10, "a gang restart")
    finally:
        runner.shutdown()
        thread.join(5)
    assert not thread.is_alive()


def test_steady_state_costs_one_status_write_per_poll(api: kube.Kube, admin: kube.Kube,
                                                      reconciler: handlers.Reconciler,
                                                      trainer: tuple[FakeTrainer, str], apiserver: APIServer) -> None:
    """The reconcile storm: our own status writes come back as watch events; reconciling each one wrote again.
    Now a running job whose trainer 0 advances costs one status PATCH per resync, and nothing between."""
    fake, _ = trainer
    fake.set(phase=Phase.TRAINING, iteration=1)
    create_job(admin)
    reconciler.reconcile(NS, "cp")
    start_trainer_pods(admin, 2)
    reconciler.reconcile(NS, "cp")
    resync_s = 0.5
    runner = loop.Loop(reconciler, namespace=NS, resync_s=resync_s)
    stop_advancing = threading.Event()

    def advance() -> None:  # trainer 0 makes progress all the time
        while not stop_advancing.wait(0.05):
            fake.set(iteration=fake.reply.iteration + 1)

    threading.Thread(target=advance, daemon=True).start()
    thread = _run(runner)
    try:
        wait_for(lambda: get_job(api)["status"].get("phase") == "Running", 10, "the job to run")
        apiserver.reset_counts()
        started = time.monotonic()
        apiserver.wait_for(lambda: time.monotonic() - started >= 10 * resync_s, timeout=30)
        counts, polls = apiserver.counts(CONTROLLER), (time.monotonic() - started) / resync_s
    finally:
        stop_advancing.set()
        runner.shutdown()
        thread.join(5)
    written = counts["create"] + counts["update"] + counts["patch"] + counts["delete"]
    assert 0.5 * polls <= counts["patch"] <= polls + 2, counts  # progress is written, once per poll
    assert written == counts["patch"], counts
    per_minute_at_default = written / polls * (60 / 10.0)  # the default --resync-s is 10
    assert per_minute_at_default <= 12, counts
    assert counts["get"] + counts["list"] <= 12 * (polls + 2), counts  # reads: a handful per poll, no storm


def test_watches_resume_from_their_resource_version_and_relist_when_it_expired(
        api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler, trainer: tuple[FakeTrainer, str]) -> None:
    runner = loop.Loop(reconciler, namespace=NS, resync_s=30.0)
    seen: list[tuple[str, str]] = []
    original = runner.enqueue

    def spy(key: tuple[str, str], poll: bool = False) -> None:
        seen.append(key)
        original(key, poll)

    runner.enqueue = spy  # type: ignore[method-assign]
    create_job(admin, name="old")
    reconciler.reconcile(NS, "old")
    version = api.list_at(API, KIND, NS, {})[1]
    for i in range(3):  # changes after `version`, then the watch starts from it: only those are replayed
        create_job(admin, name=f"new{i}")
    events_seen = []
    for event in api.watch(API, KIND, NS, timeout_s=5, resource_version=version):
        events_seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(events_seen) == 3:
            break
    assert events_seen == [("ADDED", "new0"), ("ADDED", "new1"), ("ADDED", "new2")]
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    with pytest.raises(loop.Expired):
        runner._handle(expired, loop._job_key, KIND)
    bookmark = {"type": "BOOKMARK", "object": {"kind": KIND, "metadata": {"resourceVersion": "99"}}}
    assert runner._handle(bookmark, loop._job_key, KIND) == "99" and seen == []
    ours = {"type": "MODIFIED", "object": get_job(api, "old")}  # a status write of ours comes back
    runner._handle(ours, loop._job_key, KIND)
    assert seen == []
    change_spec(admin, "old", {"players": {"replicasPerTrainer": 2}})  # a user's change: generation moves
    runner._handle({"type": "MODIFIED", "object": get_job(api, "old")}, loop._job_key, KIND)
    assert seen == [(NS, "old")]


def test_hand_edits_of_children_are_set_back(api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler,
                                             apiserver: APIServer, caplog: pytest.LogCaptureFixture) -> None:
    """`kubectl edit` of what the controller renders (the trainer StatefulSet's replicas, the player template's
    env, the Service's ports, a label) is undone at the next pass; what it does not render is left alone."""
    create_job(admin, players={"resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}}})
    reconciler.reconcile(NS, "cp")
    player = sts(api, "cp-player")
    container = player["spec"]["template"]["spec"]["containers"][0]
    rendered_env, ports = container["env"], api.get("v1", "Service", NS, "cp-trainer")["spec"]["ports"]
    merge = "application/merge-patch+json"
    admin.request("PATCH", kube.path("apps/v1", "StatefulSet", NS, "cp-trainer"), content_type=merge,
                  body={"spec": {"replicas": 5}, "metadata": {"labels": {"a2c.dev/job": "other", "mine": "x"}}})
    edited = {**container, "env": [*rendered_env[:-1], {"name": "HOME", "value": "/root"}, {"name": "X", "value": "1"}],
              "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}  # the same quantity, written otherwise
    admin.request("PATCH", kube.path("apps/v1", "StatefulSet", NS, "cp-player"), content_type=merge,
                  body={"spec": {"template": {"spec": {"containers": [edited]}}}})
    admin.request("PATCH", kube.path("v1", "Service", NS, "cp-trainer"), content_type=merge,
                  body={"spec": {"ports": [{"name": "grpc", "port": 1234, "targetPort": 1234}]}})

    with caplog.at_level(logging.INFO, logger="a2c.controller.kube"):
        assert reconciler.reconcile(NS, "cp") == "changed"
    trainer = sts(api, "cp-trainer")
    assert trainer["spec"]["replicas"] == 2
    assert trainer["metadata"]["labels"]["a2c.dev/job"] == "cp" and trainer["metadata"]["labels"]["mine"] == "x"
    assert sts(api, "cp-player")["spec"]["template"]["spec"]["containers"][0]["env"] == rendered_env
    assert api.get("v1", "Service", NS, "cp-trainer")["spec"]["ports"] == ports
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "StatefulSet ml/cp-trainer was edited by hand (metadata.labels.a2c.dev/job, spec.replicas)" in said, said
    assert "spec.template.spec.containers" in said and "Service ml/cp-trainer" in said and "ConfigMap" not in said

    before = writes(apiserver)
    assert reconciler.reconcile(NS, "cp") == "unchanged"  # set back once, not on every pass
    assert writes(apiserver) == before


def test_a_bug_of_ours_is_retried_not_blamed_on_the_spec(api: kube.Kube, admin: kube.Kube,
                                                         reconciler: handlers.Reconciler, apiserver: APIServer,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A KeyError in our own code (here in spec.trainer_config, which also checks the spec) is an error of the
    controller: the loop logs it with its traceback and retries the job with back-off; the job is not marked
    Failed/InvalidSpec for it (as it was when any KeyError or TypeError counted as the spec's fault)."""
    real, calls = jobspec.trainer_config, []

    def buggy(*args: Any, **kwargs: Any) -> config.TrainerConfig:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise KeyError("trainerPodz")
        return real(*args, **kwargs)

    monkeypatch.setattr(jobspec, "trainer_config", buggy)
    create_job(admin)
    with pytest.raises(KeyError):
        reconciler.reconcile(NS, "cp")
    assert "status" not in get_job(api) and not events(apiserver)
    runner = loop.Loop(reconciler, namespace=NS, resync_s=60.0, requeue_s=0.5)
    thread = _run(runner)
    try:
        with caplog.at_level(logging.ERROR, logger="a2c.controller.loop"):
            wait_for(lambda: (get_job(api).get("status") or {}).get("phase") == "Pending", 10,
                     "the retry after the failures to succeed")
    finally:
        runner.shutdown()
        thread.join(5)
    failed = [r for r in caplog.records if r.levelno == logging.ERROR and "reconcile ml/cp failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None and failed[0].exc_info[0] is KeyError, caplog.text
    assert "Traceback" in caplog.text and "trainerPodz" in caplog.text
    assert ("Warning", "InvalidSpec") not in events(apiserver)


def test_a_spec_of_the_wrong_type_is_invalid_not_an_error(api: kube.Kube, admin: kube.Kube,
                                                          reconciler: handlers.Reconciler,
                                                          apiserver: APIServer) -> None:
    """Under a CRD with no schema for the spec (an older release's, or none), a field of the wrong type is the
    user's to fix: the job fails with InvalidSpec naming the field, and the reconcile itself succeeds."""
    crd = apiserver.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "a2cjobs.a2c.dev")
    assert crd is not None
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    schema["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    admin.request("PUT", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/a2cjobs.a2c.dev", body=crd)
    create_job(admin, trainers={"replicas": "two"})
    assert reconciler.reconcile(NS, "cp") == "invalid"
    st = get_job(api)["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec")
    assert "spec.trainers.replicas must be a number, not a string ('two')" in st["message"], st
    assert ("Warning", "InvalidSpec") in events(apiserver) and api.list("apps/v1", "StatefulSet", NS, {}) == []


def test_a_refused_watch_is_a_warning(apiserver: APIServer, reconciler: handlers.Reconciler, tmp_path: Any,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A controller whose Role does not let it watch (an RBAC 403) says so at WARNING, not at DEBUG."""
    apiserver.add_token("nobody-token", f"system:serviceaccount:{NS}:nobody")
    with client.ApiClient(apiserver.client_configuration("nobody-token", tmp_path)) as api_client:
        runner = loop.Loop(handlers.Reconciler(kube.Kube(api_client, timeout_s=5.0)), namespace=NS, resync_s=1.0)
        with caplog.at_level(logging.WARNING, logger="a2c.controller.loop"):
            watcher = threading.Thread(target=runner._watch, args=(API, KIND, loop._job_key), daemon=True)
            watcher.start()
            try:
                wait_for(lambda: any("watch A2CJob failed" in r.getMessage() for r in caplog.records), 10,
                         "a warning")
            finally:
                runner.shutdown()
                watcher.join(5)
    warning = next(r for r in caplog.records if "watch A2CJob failed" in r.getMessage())
    assert warning.levelno == logging.WARNING and "403 Forbidden" in warning.getMessage(), warning.getMessage()
