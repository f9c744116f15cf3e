"""Suspend, the run policy (activeDeadlineSeconds, ttlSecondsAfterFinished, backoffLimit) and the operator's job
metrics: the decisions on hand-made observations (status.decide), then the controller against the stand-in
API server (tests/controller/conftest.py), reading the counters from prometheus_client's registry."""

from __future__ import annotations

import pathlib
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import REGISTRY

from a2c.controller import commands, handlers, jobstate, kube, loop, status, validation
from a2c.controller import spec as jobspec
from a2c.observe import metrics
from tests.cluster.apiserver import APIServer
from tests.controller.conftest import NS, FakeTrainer
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
    start_trainer_pods,
    sts,
    writes,
)

T0, T1, T2, T3 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", "2026-01-01T00:03:00Z"
CRD = pathlib.Path(__file__).resolve().parents[2] / "deploy/helm/files/a2cjob-crd.yaml"
SCHEMA = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def job(old: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "cp", "namespace": "ml", "uid": "u", "generation": generation},
            "spec": {"trainers": {"replicas": 2}, **spec}, "status": old or {}}


def pod(i: int, uid: str = "", ready: bool = True) -> jobstate.JobPod:
    return jobstate.JobPod(name=f"cp-trainer-{i}", uid=uid or f"uid-{i}", restarts=0, ready=ready)


def report(phase: str = "TRAINING", **kw: Any) -> dict[str, Any]:
    return {"phase": phase, "iteration": 10, "env_steps": 1280, "mean_return": 42.5, "episodes": 30, "message": "",
            **kw}


def running(**kw: Any) -> dict[str, Any]:
    """The status of a job started at T0 whose trainers 0 and 1 were seen running."""
    d = status.decide(job(), [], None, T0, "h1")
    d = status.decide(job(d.status), [pod(0), pod(1)], report(), T0, "h1")
    assert d.status["phase"] == jobstate.RUNNING
    d.status.update(kw)
    return d.status


def _undeclared(schema: dict[str, Any], value: Any, where: str = "status") -> list[str]:
    """Fields of `value` the structural schema does not declare (the API server would prune them)."""
    if isinstance(value, dict) and "properties" in schema:
        return [p for key, sub in value.items() for p in ([f"{where}.{key}"] if key not in schema["properties"]
                                                          else _undeclared(schema["properties"][key], sub,
                                                                           f"{where}.{key}"))]
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [p for k, v in value.items() for p in _undeclared(schema["additionalProperties"], v, f"{where}.{k}")]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(value) for p in _undeclared(schema["items"], v, f"{where}[{i}]")]
    return []


def _cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


# --- the decisions ---------------------------------------------------------------------------------------------


def test_suspend_stops_everything_keeps_status_and_counts_no_restart() -> None:
    st = running(iteration=40, gangRestarts=1)
    d = status.decide(job(st, generation=2, suspend=True), [pod(0), pod(1)], report(iteration=45), T1, "h1")
    assert d.stopped and not d.restart_gang and d.trainers == 2
    assert d.status["phase"] == jobstate.SUSPENDED and d.status["reason"] == "Suspended"
    assert d.status["gangRestarts"] == 1 and d.status["iteration"] == 40  # kept; nothing counted, nothing polled
    assert d.status["trainerPods"] == {} and d.status["suspendTime"] == T1
    assert [e[1] for e in d.events] == ["Suspended"]
    assert _cond(d.status, "Suspended")["status"] == "True" and _cond(d.status, "Ready")["reason"] == "JobSuspended"
    assert _cond(d.status, "Progressing")["status"] == "False" and _cond(d.status, "Failed")["status"] == "False"
    # the pods going (and vanishing) while suspended is no gang failure, and a second pass says nothing new
    for pods in ([pod(0)], []):
        again = status.decide(job(d.status, generation=2, suspend=True), pods, None, T2, "h1")
        assert again.stopped and not again.restart_gang and again.events == [] and again.status == {
            **d.status, "observedGeneration": 2}


def test_runpolicy_suspend_says_the_same() -> None:
    d = status.decide(job(running(), runPolicy={"suspend": True}), [pod(0), pod(1)], None, T1, "h1")
    assert d.stopped and d.status["phase"] == jobstate.SUSPENDED


def test_resume_starts_a_new_group_and_says_where_it_resumed_from() -> None:
    suspended = status.decide(job(running(iteration=40), suspend=True), [], None, T1, "h1").status
    d = status.decide(job(suspended, generation=3, suspend=False), [], report(iteration=40), T3, "h1")
    assert not d.stopped and not d.restart_gang and d.trainers == 2
    assert d.status["phase"] == jobstate.PENDING and d.status["reason"] == "Resuming"
    assert d.status["suspendedSeconds"] == 120 and "suspendTime" not in d.status and d.status["resumeTime"] == T3
    assert d.status["groupFormed"] is False and d.status["groupStartTime"] == T3 and d.status["gangRestarts"] == 0
    assert [e[1] for e in d.events] == ["Resumed"]
    assert _cond(d.status, "Suspended")["status"] == "False" and _cond(d.status, "Suspended")["reason"] == "JobResumed"
    # a report before the new group formed is not taken as where it resumed from
    forming = status.decide(job(d.status, generation=3), [pod(0, uid="n0", ready=False)], report(iteration=44), T3,
                            "h1")
    assert "resumedFrom" not in forming.status and forming.status["iteration"] == 40
    formed = status.decide(job(forming.status, generation=3), [pod(0, uid="n0"), pod(1, uid="n1")],
                           report(iteration=44), T3, "h1")
    assert formed.status["phase"] == jobstate.RUNNING
    assert formed.status["resumedFrom"] == {"iteration": 44, "envSteps": 1280, "previousIteration": 40, "time": T3}
    later = status.decide(job(formed.status, generation=3), [pod(0, uid="n0"), pod(1, uid="n1")],
                          report(iteration=50), T3, "h1")
    assert later.status["resumedFrom"]["iteration"] == 44 and later.status["iteration"] == 50


def test_a_job_created_suspended_starts_nothing_until_resumed() -> None:
    d = status.decide(job(suspend=True), [], None, T0, "h1")
    assert d.stopped and d.status["phase"] == jobstate.SUSPENDED and "startTime" not in d.status
    assert d.status["trainerReplicas"] == 2 and [e[1] for e in d.events] == ["Created"]
    resumed = status.decide(job(d.status, generation=2), [], None, T2, "h1")
    assert not resumed.stopped and resumed.status["startTime"] == T2 and "suspendedSeconds" not in resumed.status
    assert "resumeTime" not in resumed.status  # nothing to resume from: its first report is no resumedFrom
    formed = status.decide(job(resumed.status, generation=2), [pod(0), pod(1)], report(iteration=3), T2, "h1")
    assert formed.status["phase"] == jobstate.RUNNING and "resumedFrom" not in formed.status
    assert resumed.status["message"].startswith("starting: waiting for trainers")


def test_the_deadline_fails_the_job_and_time_suspended_does_not_count() -> None:
    policy = {"runPolicy": {"activeDeadlineSeconds": 90}}
    st = running()  # started at T0
    d = status.decide(job(st, **policy), [pod(0), pod(1)], report(), T1, "h1")
    assert d.status["phase"] == jobstate.RUNNING and d.requeue_s == 30.0  # the loop comes back at the deadline
    d = status.decide(job(st, **policy), [pod(0), pod(1)], report(), "2026-01-01T00:01:30Z", "h1")
    assert d.status["phase"] == jobstate.FAILED and d.status["reason"] == "DeadlineExceeded" and d.stopped
    assert d.status["completionTime"] == "2026-01-01T00:01:30Z" and "checkpoints kept" in d.status["message"]
    assert d.events[0][:2] == ("Warning", "DeadlineExceeded") and d.requeue_s is None
    # suspended from T1 to T3: at T3 + 20 s it has been active 80 s
    suspended = status.decide(job(st, suspend=True, **policy), [], None, T1, "h1").status
    assert status.decide(job(suspended, suspend=True, **policy), [], None, T3, "h1").status["phase"] == "Suspended"
    resumed = status.decide(job(suspended, **policy), [], None, T3, "h1").status
    d = status.decide(job(resumed, **policy), [pod(0), pod(1)], None, "2026-01-01T00:03:20Z", "h1")
    assert d.status["phase"] != jobstate.FAILED and d.requeue_s == 10.0
    d = status.decide(job(resumed, **policy), [pod(0), pod(1)], None, "2026-01-01T00:03:30Z", "h1")
    assert d.status["reason"] == "DeadlineExceeded"


def test_a_final_report_beats_the_deadline() -> None:
    d = status.decide(job(running(), runPolicy={"activeDeadlineSeconds": 1}), [pod(0), pod(1)], report("SUCCEEDED"),
                      T1, "h1")
    assert d.status["phase"] == jobstate.SUCCEEDED


def test_backoff_limit_wins_over_max_gang_restarts() -> None:
    j = job(running(gangRestarts=1), maxGangRestarts=5, runPolicy={"backoffLimit": 1})
    d = status.decide(j, [pod(0)], None, T1, "h1")
    assert d.status["phase"] == jobstate.FAILED and "exceeds runPolicy.backoffLimit 1" in d.status["message"]
    d = status.decide(job(running(gangRestarts=1), maxGangRestarts=1), [pod(0)], None, T1, "h1")
    assert "exceeds maxGangRestarts 1" in d.status["message"]
    j = job(running(gangRestarts=1), maxGangRestarts=1, runPolicy={"backoffLimit": 4})
    assert status.decide(j, [pod(0)], None, T1, "h1").restart_gang


def test_new_status_fields_fit_the_crd_schema() -> None:
    policy = {"runPolicy": {"activeDeadlineSeconds": 90}}
    suspended = status.decide(job(running(), suspend=True), [], None, T1, "h1").status
    resumed = status.decide(job(suspended), [], None, T3, "h1").status
    late = status.decide(job(running(), **policy), [pod(0), pod(1)], report(), T3, "h1").status
    for st in (suspended, resumed, late, status.decide(job(suspend=True), [], None, T0, "h1").status):
        assert _undeclared(SCHEMA, st) == []
        jsonschema.Draft4Validator(SCHEMA).validate(st)


@pytest.mark.parametrize(("spec", "why"), [
    ({"suspend": True, "runPolicy": {"suspend": False}}, "disagree"),
    ({"suspend": "yes"}, "spec.suspend must be true or false"),
    ({"runPolicy": {"activeDeadlineSeconds": 0}}, "activeDeadlineSeconds must be a whole number of at least 1"),
    ({"runPolicy": {"ttlSecondsAfterFinished": 1.5}}, "ttlSecondsAfterFinished must be a whole number"),
    ({"runPolicy": {"backoffLimit": -1}}, "backoffLimit must be a whole number of at least 0"),
    ({"runPolicy": []}, "spec.runPolicy must be an object"),
])
def test_a_bad_run_policy_is_an_invalid_spec_with_the_reason(spec: dict[str, Any], why: str) -> None:
    with pytest.raises(validation.InvalidSpecError, match=why):
        validation.checked_spec({"metadata": {"name": "cp", "namespace": NS}, "spec": spec})


def test_run_policy_defaults() -> None:
    policy = jobspec.run_policy(jobspec.with_defaults({}))
    assert policy == jobspec.RunPolicy(suspend=False, active_deadline_s=None, ttl_after_finished_s=None,
                                       backoff_limit=3, backoff_field="maxGangRestarts")


# --- the controller, on the stand-in API server ----------------------------------------------------------------


def _sample(metric: str, **labels: str) -> float:
    """A counter's value for this process's series (0 before its first increment)."""
    found = REGISTRY.get_sample_value(metric, {**metrics._base, **labels})
    return float(found or 0.0)


def _counters(namespace: str = NS) -> dict[str, float]:
    return {name: _sample(f"a2c_controller_jobs_{name}_total", namespace=namespace)
            for name in ("created", "succeeded", "restarted")}


def test_suspend_removes_the_pods_and_resume_brings_them_back(
        api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler, trainer: tuple[FakeTrainer, str],
        apiserver: APIServer) -> None:
    fake, _ = trainer
    create_job(admin, checkpoint={"persistent": True})
    reconciler.reconcile(NS, "cp")
    start_trainer_pods(admin, 2)
    fake.set(phase=Phase.TRAINING, iteration=30, env_steps=3840, mean_return=50.0, episodes=100)
    reconciler.reconcile(NS, "cp")
    before = _counters()

    change_spec(admin, "cp", {"suspend": True})
    calls = fake.calls
    assert reconciler.reconcile(NS, "cp") == "changed"
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 0 and sts(api, "cp-player")["spec"]["replicas"] == 0
    job = get_job(api)
    assert job["status"]["phase"] == "Suspended" and cond(job, "Suspended") == "True"
    assert job["status"]["iteration"] == 30 and fake.calls == calls  # status kept; trainer 0 not asked
    assert ("Normal", "Suspended") in events(apiserver) and ("Warning", "GangRestart") not in events(apiserver)
    for pod_name in pod_names(api):  # what the StatefulSet controller does at zero replicas
        admin.delete("v1", "Pod", NS, pod_name)
    mark = writes(apiserver)
    for _ in range(2):  # the pods gone: no gang restart, nothing more to write
        assert reconciler.reconcile(NS, "cp") == "unchanged"
    assert writes(apiserver) == mark

    change_spec(admin, "cp", {"suspend": False})
    reconciler.reconcile(NS, "cp")
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 2 and sts(api, "cp-player")["spec"]["replicas"] == 2
    assert get_job(api)["status"]["reason"] == "Resuming"
    start_trainer_pods(admin, 2)
    fake.set(phase=Phase.TRAINING, iteration=31, env_steps=3968)
    reconciler.reconcile(NS, "cp")
    st = get_job(api)["status"]
    assert st["phase"] == "Running" and st["resumedFrom"]["iteration"] == 31 and st["gangRestarts"] == 0
    assert cond(get_job(api), "Suspended") == "False"
    assert _counters() == before, "a suspend and a resume are neither a creation nor a restart"


def test_a_job_created_suspended_creates_no_pods(api: kube.Kube, admin: kube.Kube,
                                                 reconciler: handlers.Reconciler) -> None:
    create_job(admin, suspend=True)
    reconciler.reconcile(NS, "cp")
    assert sts(api, "cp-trainer")["spec"]["replicas"] == 0 and sts(api, "cp-player")["spec"]["replicas"] == 0
    assert get_job(api)["status"]["phase"] == "Suspended"


def test_a_disagreeing_suspend_is_refused_at_admission(admin: kube.Kube) -> None:
    with pytest.raises(kube.client.ApiException) as refused:
        create_job(admin, suspend=True, runPolicy={"suspend": False})
    assert refused.value.status == 422 and "disagree" in str(refused.value.body)


def test_ttl_deletes_a_finished_job_and_its_children_and_keeps_the_pvcs(
        api: kube.Kube, admin: kube.Kube, trainer: tuple[FakeTrainer, str], apiserver: APIServer) -> None:
    fake, address = trainer
    now = ["2026-01-01T00:00:00Z"]
    reconciler = handlers.Reconciler(api, address=lambda job: address, probe_timeout_s=1.0, clock=lambda: now[0])
    create_job(admin, checkpoint={"persistent": True}, runPolicy={"ttlSecondsAfterFinished": 60})
    reconciler.reconcile(NS, "cp")
    start_trainer_pods(admin, 2)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",  # as the StatefulSet controller makes it: no owner
             "metadata": {"name": "checkpoints-cp-trainer-0", "namespace": NS, "labels": {"a2c.dev/job": "cp"}},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    admin.request("POST", kube.path("v1", "PersistentVolumeClaim", NS), body=claim)
    succeeded = _sample("a2c_controller_jobs_succeeded_total", namespace=NS)
    fake.set(phase=Phase.SUCCEEDED, iteration=50, mean_return=480.0, episodes=10)
    now[0] = "2026-01-01T00:01:00Z"
    reconciler.reconcile(NS, "cp")
    assert get_job(api)["status"]["phase"] == "Succeeded" and reconciler.due[(NS, "cp")] == 60
    reconciler.reconcile(NS, "cp")
    assert _sample("a2c_controller_jobs_succeeded_total", namespace=NS) == succeeded + 1  # once
    now[0] = "2026-01-01T00:01:59Z"
    assert reconciler.reconcile(NS, "cp") == "unchanged" and reconciler.due[(NS, "cp")] == 1
    now[0] = "2026-01-01T00:02:00Z"
    assert reconciler.reconcile(NS, "cp") == "expired"
    assert apiserver.get(API, KIND, NS, "cp") is None
    assert apiserver.get("v1", "PersistentVolumeClaim", NS, "checkpoints-cp-trainer-0") is not None
    assert reconciler.reconcile(NS, "cp") == "gone"


def test_a_job_with_a_bad_run_policy_fails_with_the_reason_and_still_expires(
        api: kube.Kube, admin: kube.Kube, apiserver: APIServer) -> None:
    """Under a CRD with no schema for the spec (an older release's, or none): a suspend that is not a boolean is
    InvalidSpec with the field named (the reconcile succeeds: no crash loop), and the readable TTL still holds."""
    crd = apiserver.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "a2cjobs.a2c.dev")
    assert crd is not None
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    schema["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    admin.request("PUT", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/a2cjobs.a2c.dev", body=crd)
    now = ["2026-01-01T00:00:00Z"]
    reconciler = handlers.Reconciler(api, clock=lambda: now[0])
    failed = _sample("a2c_controller_jobs_failed_total", namespace=NS, reason="InvalidSpec")
    create_job(admin, suspend="later", runPolicy={"ttlSecondsAfterFinished": 30})
    assert reconciler.reconcile(NS, "cp") == "invalid"
    st = get_job(api)["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec") and "spec.suspend must be true or false" in \
        st["message"]
    assert reconciler.reconcile(NS, "cp") == "unchanged" and reconciler.due[(NS, "cp")] == 30
    assert _sample("a2c_controller_jobs_failed_total", namespace=NS, reason="InvalidSpec") == failed + 1
    now[0] = "2026-01-01T00:00:30Z"
    assert reconciler.reconcile(NS, "cp") == "expired" and apiserver.get(API, KIND, NS, "cp") is None


def test_job_counters_count_each_transition_once(api: kube.Kube, admin: kube.Kube,
                                                 reconciler: handlers.Reconciler, trainer: tuple[FakeTrainer, str]
                                                 ) -> None:
    fake, _ = trainer
    before = _counters()
    failed = _sample("a2c_controller_jobs_failed_total", namespace=NS, reason="TooManyGangRestarts")
    seconds = _sample("a2c_controller_reconcile_seconds_count")
    create_job(admin, maxGangRestarts=1)
    for _ in range(2):
        reconciler.reconcile(NS, "cp")
    assert _counters() == {**before, "created": before["created"] + 1}
    start_trainer_pods(admin, 2)
    fake.set(phase=Phase.TRAINING, iteration=3)
    reconciler.reconcile(NS, "cp")
    admin.delete("v1", "Pod", NS, "cp-trainer-1")  # a lost rank: gang restart 1
    assert reconciler.reconcile(NS, "cp") == "restarted"
    reconciler.reconcile(NS, "cp")
    assert _counters()["restarted"] == before["restarted"] + 1
    start_trainer_pods(admin, 2)
    reconciler.reconcile(NS, "cp")
    admin.delete("v1", "Pod", NS, "cp-trainer-0")  # gang restart 2 > maxGangRestarts: Failed
    for _ in range(2):
        reconciler.reconcile(NS, "cp")
    assert get_job(api)["status"]["reason"] == "TooManyGangRestarts"
    assert _sample("a2c_controller_jobs_failed_total", namespace=NS, reason="TooManyGangRestarts") == failed + 1
    assert _counters()["restarted"] == before["restarted"] + 1, "the failing loss is not a restart"
    assert _sample("a2c_controller_reconcile_seconds_count") == seconds + 8  # one observation per reconcile


def test_the_loop_comes_back_at_the_deadline_and_reports_its_queue(
        api: kube.Kube, admin: kube.Kube, trainer: tuple[FakeTrainer, str]) -> None:
    """The reconciler asks for the job again at its deadline; the loop's queue depth counts what is pending or
    backing off."""
    fake, address = trainer
    reconciler = handlers.Reconciler(api, address=lambda job: address, probe_timeout_s=1.0)
    create_job(admin, runPolicy={"activeDeadlineSeconds": 3})
    runner = loop.Loop(reconciler, NS, resync_s=600.0)
    runner.enqueue((NS, "cp"))
    runner.enqueue((NS, "other"))
    assert _sample("a2c_controller_queue_depth") == 2
    runner._reconcile((NS, "cp"), False)
    runner._reconcile((NS, "other"), False)
    assert (NS, "cp") in runner._later and 1.0 <= runner._later[(NS, "cp")] - loop.time.monotonic() <= 3.5
    runner._pending.clear()
    runner._depth()
    assert _sample("a2c_controller_queue_depth") == 0


def test_the_schema_check_is_not_vacuous() -> None:
    assert _undeclared(SCHEMA, {"phase": "Running", "bogus": 1, "resumedFrom": {"iteration": 1, "extra": 2}}) == [
        "status.bogus", "status.resumedFrom.extra"]


def test_a2c_render_of_a_suspended_job_gives_children_at_zero() -> None:
    job = "apiVersion: a2c.dev/v1alpha1\nkind: A2CJob\nmetadata: {name: cp}\nspec: {trainers: {replicas: 2}%s}\n"
    replicas = {o["metadata"]["name"]: o["spec"]["replicas"] for o in commands.render_file(job % ", suspend: true")
                if o["kind"] == "StatefulSet"}
    assert replicas == {"cp-trainer": 0, "cp-player": 0}
    running = {o["metadata"]["name"]: o["spec"]["replicas"] for o in commands.render_file(job % "")
               if o["kind"] == "StatefulSet"}
    assert running == {"cp-trainer": 2, "cp-player": 2}
    with pytest.raises(ValueError, match="disagree"):
        commands.render_file(job % ", suspend: true, runPolicy: {suspend: false}")
