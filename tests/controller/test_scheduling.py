"""Queues and gangs in what resources.render gives: Kueue's labels, annotations and scheduling gate on a queued
job's pods; a gang scheduler's PodGroup (valid against the project's published CRD, vendored in
tests/support/crds), schedulerName and group label or annotation; priorityClassName; the spec checks."""

from __future__ import annotations

import copy
import pathlib
import re
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils as kv
import pytest
import yaml
from kubernetes.client import ApiException

from a2c.controller import handlers, jobstate, kube, resources, scheduling, status, validation
from a2c.controller import spec as jobspec
from tests.cluster import api_schema
from tests.controller import jobs
from tests.controller.jobs import by_kind, job

CRDS = pathlib.Path(__file__).resolve().parents[1] / "support" / "crds"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
VERSIONS = ("1.28", kv.major_minor(kubernetes_validate.latest_version()))  # the oldest supported, the newest



def crd_schema(name: str) -> tuple[str, dict[str, Any]]:
    """(apiVersion, openAPIV3Schema) of the vendored CRD `name`."""
    crd = yaml.safe_load((CRDS / f"{name}.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return f"{crd['spec']['group']}/{version['name']}", version["schema"]["openAPIV3Schema"]


def admitted(obj: dict[str, Any], crd: str) -> dict[str, Any]:
    """What the API server keeps of `obj` as a custom resource of `crd`: fails on a field it would prune (a
    misspelt field is silently lost there) or refuse (a wrong type, a bad pattern), as apiextensions does."""
    api_version, schema = crd_schema(crd)
    assert obj["apiVersion"] == api_version
    kept = copy.deepcopy(obj)
    assert api_schema.prune(kept, schema) == [], "fields the CRD does not know"
    kept = api_schema.apply_defaults(kept, schema)
    assert api_schema.validate(kept, schema) == [], api_schema.validate(kept, schema)
    return kept


def queued(name: str = "cp", queue: str = "team-a", **spec: Any) -> dict[str, Any]:
    out = job(name, **spec)
    out["metadata"]["labels"] = {scheduling.KUEUE_QUEUE: queue}
    return out


def pods(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """component -> pod template of its StatefulSet."""
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]["template"]
            for o in objs if o["kind"] == "StatefulSet"}


def test_the_vendored_crds_are_valid_crds_and_the_validation_bites() -> None:
    for name in ("coscheduling-podgroup", "volcano-podgroup"):
        text = (CRDS / f"{name}.yaml").read_text()
        assert "Source: github.com/" in text and "commit" in text  # where it came from, and which version
        kubernetes_validate.validate(yaml.safe_load(text), VERSIONS[-1], strict=True)
    group = resources.pod_group(job(schedulingPolicy={"scheduler": "volcano"}), jobspec.with_defaults(
        {"schedulingPolicy": {"scheduler": "volcano"}}))
    assert group is not None
    for broken in ({"minMembers": 3}, {"minMember": "3"}, {"minTaskMember": {"trainer": "all"}}):
        with pytest.raises(AssertionError):
            admitted({**group, "spec": broken}, "volcano-podgroup")


def test_by_default_no_podgroup_no_scheduler_no_gate() -> None:
    objs = resources.render(job(trainers={"replicas": 2}))
    assert {o["kind"] for o in objs} == {"ConfigMap", "Service", "StatefulSet"}
    for template in pods(objs).values():
        assert not {"schedulerName", "priorityClassName", "schedulingGates"} & set(template["spec"])
        assert not any(k.startswith(("kueue.", "scheduling.", "volcano.")) for k in
                       {**template["metadata"]["labels"], **template["metadata"]["annotations"]})


def test_coscheduling_podgroup_covers_the_whole_job_and_every_pod_joins_it() -> None:
    spec: dict[str, Any] = {"trainers": {"replicas": 3}, "players": {"replicasPerTrainer": 2},
            "schedulingPolicy": {"scheduler": "coscheduling", "priorityClass": "training"}}
    objs = resources.render(job(**spec))
    kinds = [o["kind"] for o in objs]
    assert kinds.index("PodGroup") < kinds.index("StatefulSet")  # the group exists before its pods ask for it
    group = by_kind(objs)["PodGroup/cp"]
    assert (group["apiVersion"], group["metadata"]["namespace"]) == ("scheduling.x-k8s.io/v1alpha1", "ml")
    assert group["spec"] == {"minMember": 3 + 3 * 2}  # all or nothing: every trainer and every player
    assert group["metadata"]["ownerReferences"] == [resources.owner_reference(job())]
    admitted(group, "coscheduling-podgroup")
    for template in pods(objs).values():
        assert template["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "cp"
        assert template["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
        assert template["spec"]["priorityClassName"] == "training"


def test_min_available_counts_the_trainers_first_then_players() -> None:
    spec: dict[str, Any] = {"trainers": {"replicas": 2}, "players": {"replicasPerTrainer": 4},
            "schedulingPolicy": {"scheduler": "coscheduling", "minAvailable": 2, "schedulerName": "gang"}}
    objs = by_kind(resources.render(job(**spec)))
    assert objs["PodGroup/cp"]["spec"] == {"minMember": 2}
    assert objs["StatefulSet/cp-trainer"]["spec"]["template"]["spec"]["schedulerName"] == "gang"


def test_volcano_podgroup_has_the_trainers_as_a_task_minimum_its_queue_and_priority() -> None:
    spec: dict[str, Any] = {"trainers": {"replicas": 2}, "players": {"replicasPerTrainer": 3},
            "schedulingPolicy": {"scheduler": "volcano", "queue": "research", "priorityClass": "high",
                                 "minAvailable": 5}}
    objs = resources.render(job(**spec))
    group = by_kind(objs)["PodGroup/cp"]
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert group["spec"] == {"minMember": 5, "minTaskMember": {"trainer": 2, "player": 3}, "queue": "research",
                             "priorityClassName": "high"}
    admitted(group, "volcano-podgroup")
    whole = by_kind(resources.render(job(schedulingPolicy={"scheduler": "volcano"})))["PodGroup/cp"]
    assert admitted(whole, "volcano-podgroup")["spec"]["queue"] == "default"  # Volcano's, when none is named
    assert whole["spec"]["minTaskMember"] == {"trainer": 1, "player": 1}
    for component, template in pods(objs).items():
        notes = template["metadata"]["annotations"]
        assert notes["scheduling.k8s.io/group-name"] == "cp" and notes["volcano.sh/task-spec"] == component
        assert template["spec"]["schedulerName"] == "volcano" and template["spec"]["priorityClassName"] == "high"


def test_a_stopped_job_keeps_its_podgroup() -> None:
    spec: dict[str, Any] = {"trainers": {"replicas": 2}, "schedulingPolicy": {"scheduler": "coscheduling"}}
    objs = by_kind(resources.render(job(**spec), stopped=True))
    assert objs["PodGroup/cp"]["spec"] == {"minMember": 4} and objs["StatefulSet/cp-trainer"]["spec"]["replicas"] == 0


def test_priority_class_without_a_gang_scheduler() -> None:
    for template in pods(resources.render(job(schedulingPolicy={"priorityClass": "low"}))).values():
        assert template["spec"]["priorityClassName"] == "low" and "schedulerName" not in template["spec"]


def test_scheduling_changes_re_form_the_trainer_group() -> None:
    """schedulerName, group and priority are in the trainer pods' template: a change re-forms the gang."""
    base = jobspec.with_defaults({})
    other = jobspec.with_defaults({"schedulingPolicy": {"priorityClass": "high"}})
    assert resources.trainer_template_hash(job(), base) != resources.trainer_template_hash(job(), other)


def test_kueue_queue_label_goes_to_both_statefulsets_and_gates_their_pods() -> None:
    objs = resources.render(queued(trainers={"replicas": 3}, players={"replicasPerTrainer": 2}))
    sets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "StatefulSet"}
    assert {n: s["metadata"]["labels"][scheduling.KUEUE_QUEUE] for n, s in sets.items()} == {
        "cp-trainer": "team-a", "cp-player": "team-a"}
    groups = {}
    for component, replicas in (("trainer", 3), ("player", 6)):
        template = pods(objs)[component]
        labels, notes = template["metadata"]["labels"], template["metadata"]["annotations"]
        assert labels[scheduling.KUEUE_QUEUE] == "team-a"
        # One Kueue pod group per StatefulSet, of all its pods: the trainers are admitted together.
        assert notes["kueue.x-k8s.io/pod-group-total-count"] == str(replicas)
        assert notes["kueue.x-k8s.io/pod-group-serving"] == "true"
        assert template["spec"]["schedulingGates"] == [{"name": "kueue.x-k8s.io/admission"}]
        groups[component] = labels["kueue.x-k8s.io/pod-group-name"]
        assert groups[component] == scheduling.kueue_group_name(f"cp-{component}")
    assert groups["trainer"] != groups["player"]
    # The selector is untouched: the queue label may not be there on pods made before it was set.
    assert scheduling.KUEUE_QUEUE not in sets["cp-trainer"]["spec"]["selector"]["matchLabels"]
    stopped = pods(resources.render(queued(), stopped=True))["trainer"]
    assert stopped["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "0"  # as Kueue writes it


def test_kueue_group_name_is_kueues_workload_name() -> None:
    """statefulset-<name>-<5 hex of sha1("StatefulSet\\napps\\n<name>\\n")>, cut to a label value's 63."""
    name = scheduling.kueue_group_name("cp-trainer")
    assert re.fullmatch(r"statefulset-cp-trainer-[0-9a-f]{5}", name)
    assert name == scheduling.kueue_group_name("cp-trainer") != scheduling.kueue_group_name("cp-player")
    longest = scheduling.kueue_group_name("a" * jobspec.MAX_NAME + "-trainer")
    assert len(longest) == 63 and LABEL_VALUE.match(longest)


def test_queued_and_gang_scheduled_children_are_valid_kubernetes_objects() -> None:
    both = queued(schedulingPolicy={"scheduler": "volcano", "priorityClass": "high"}, trainers={"replicas": 2})
    for obj in resources.render(both):
        if obj["kind"] == "PodGroup":
            admitted(obj, "volcano-podgroup")
            continue
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        for value in (obj["metadata"].get("labels") or {}).values():
            assert LABEL_VALUE.match(value) and len(value) <= 63, value


def test_podgroup_paths_are_known_to_the_client() -> None:
    assert kube.path("scheduling.x-k8s.io/v1alpha1", "PodGroup", "ml", "cp") == \
        "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/ml/podgroups/cp"
    assert kube.path("scheduling.volcano.sh/v1beta1", "PodGroup", "ml") == \
        "/apis/scheduling.volcano.sh/v1beta1/namespaces/ml/podgroups"


BAD_POLICIES = {
    "unknown scheduler": ({"scheduler": "kube-batch"}, "one of none, coscheduling, volcano"),
    "gang smaller than the trainers": ({"scheduler": "volcano", "minAvailable": 1}, "must cover every trainer (2)"),
    "gang larger than the job": ({"scheduler": "volcano", "minAvailable": 5}, "cannot exceed the job's pods (4"),
    "minAvailable without a gang scheduler": ({"minAvailable": 2}, "needs a gang scheduler"),
    "minAvailable as text": ({"scheduler": "coscheduling", "minAvailable": "2"}, "must be an integer"),
    "queue for coscheduling": ({"scheduler": "coscheduling", "queue": "q"}, "needs scheduler: volcano"),
    "scheduler name as a number": ({"schedulerName": 3}, "spec.schedulingPolicy.schedulerName must be a string"),
}


@pytest.mark.parametrize("case", list(BAD_POLICIES))
def test_a_bad_scheduling_policy_is_invalid_spec_with_the_reason(case: str) -> None:
    policy, why = BAD_POLICIES[case]
    with pytest.raises(validation.InvalidSpecError, match=re.escape(why)):
        validation.checked_spec(job(trainers={"replicas": 2}, schedulingPolicy=policy))


def test_a_file_rendered_offline_is_checked_too() -> None:
    """`a2c render` of a file (no controller, no admission) refuses what the controller would."""
    with pytest.raises(ValueError, match="must cover every trainer"):
        resources.render(job(trainers={"replicas": 2}, schedulingPolicy={"scheduler": "volcano", "minAvailable": 1}))


def test_good_scheduling_policies_pass() -> None:
    for policy in ({}, {"scheduler": "coscheduling", "minAvailable": 2}, {"scheduler": "volcano", "minAvailable": 4,
                                                                          "queue": "q"}):
        validation.checked_spec(job(trainers={"replicas": 2}, schedulingPolicy=policy))
    assert jobspec.gang_size(jobspec.with_defaults({"trainers": {"replicas": 4},
                                                    "players": {"replicasPerTrainer": 8}})) == 36


def _trainer(i: int, gated: bool = False, ready: bool = False) -> jobstate.JobPod:
    return jobstate.JobPod(name=f"cp-trainer-{i}", uid=f"uid-{i}", restarts=0, ready=ready, gated=gated)


def test_a_queued_job_waits_without_a_deadline_and_its_startup_clock_starts_at_admission() -> None:
    """Kueue may hold a job for hours: while its trainers are gated the job is Pending/Queued and
    startupTimeoutSeconds does not run; it runs from the first pass that finds them admitted."""
    spec: dict[str, Any] = {"trainers": {"replicas": 2, "startupTimeoutSeconds": 30}}
    first = status.decide(job(**spec), [], None, "2026-01-01T00:00:00Z", "h1")
    held = [_trainer(0, gated=True), _trainer(1, gated=True)]
    queued_ = job(**spec)
    queued_["status"] = first.status
    later = status.decide(queued_, held, None, "2026-01-01T03:00:00Z", "h1")  # three hours in the queue
    assert (later.status["phase"], later.status["reason"]) == (jobstate.PENDING, "Queued") and not later.stopped
    assert "held by scheduling gates" in later.status["message"]
    admitted_ = job(**spec)
    admitted_["status"] = later.status
    start = status.decide(admitted_, [_trainer(0), _trainer(1)], None, "2026-01-01T03:00:10Z", "h1")
    assert start.status["phase"] == jobstate.PENDING and start.status["groupStartTime"] == "2026-01-01T03:00:10Z"
    waiting = job(**spec)
    waiting["status"] = start.status
    assert status.decide(waiting, [_trainer(0)], None, "2026-01-01T03:00:30Z", "h1").status["phase"] == jobstate.PENDING
    late = status.decide(waiting, [_trainer(0)], None, "2026-01-01T03:00:50Z", "h1")
    assert (late.status["phase"], late.status["reason"]) == (jobstate.FAILED, "StartupTimeout")


def test_time_queued_does_not_count_towards_the_active_deadline() -> None:
    """As a Kueue-suspended Job's: queued from 00:00 to 03:00, then 50 s active of a 60 s activeDeadlineSeconds."""
    spec: dict[str, Any] = {"trainers": {"replicas": 2}, "runPolicy": {"activeDeadlineSeconds": 60}}

    def at(old: dict[str, Any], pods: list[jobstate.JobPod], now: str) -> dict[str, Any]:
        queued_ = job(**spec)
        queued_["status"] = old
        return status.decide(queued_, pods, None, now, "h1").status

    held = [_trainer(0, gated=True), _trainer(1, gated=True)]
    st = at(at({}, [], "2026-01-01T00:00:00Z"), held, "2026-01-01T00:00:05Z")
    assert st["reason"] == "Queued" and st["queuedSince"] == "2026-01-01T00:00:05Z"
    st = at(st, held, "2026-01-01T03:00:00Z")
    assert (st["phase"], st["reason"], st["queuedSince"]) == (jobstate.PENDING, "Queued", "2026-01-01T00:00:05Z")
    st = at(st, [_trainer(0, ready=True), _trainer(1, ready=True)], "2026-01-01T03:00:05Z")  # admitted, formed
    assert st["phase"] == jobstate.RUNNING and "queuedSince" not in st and st["suspendedSeconds"] == 3 * 3600
    assert at(st, [_trainer(0, ready=True), _trainer(1, ready=True)], "2026-01-01T03:00:50Z")["phase"] == \
        jobstate.RUNNING  # 50 s active
    failed = at(st, [_trainer(0, ready=True), _trainer(1, ready=True)], "2026-01-01T03:01:05Z")
    assert (failed["phase"], failed["reason"]) == (jobstate.FAILED, "DeadlineExceeded")  # 65 s active


def test_the_controller_sees_which_pods_are_gated() -> None:
    def raw(name: str, gates: list[dict[str, str]]) -> dict[str, Any]:
        return {"metadata": {"name": name, "uid": name}, "spec": {"schedulingGates": gates}, "status": {}}
    seen = handlers.job_pods([raw("cp-trainer-0", [{"name": scheduling.KUEUE_GATE}]), raw("cp-trainer-1", [])])
    assert [p.gated for p in seen] == [True, False]


# --- against the stand-in API server, as the chart's ServiceAccount under the chart's Role ------------------


@pytest.mark.parametrize(("scheduler", "crd", "stored"), [
    ("coscheduling", "coscheduling-podgroup", {"minMember": 4}),  # 2 trainers, 1 player each
    ("volcano", "volcano-podgroup", {"minMember": 4, "minTaskMember": {"trainer": 2, "player": 2},
                                     "queue": "default"}),  # the CRD's default queue, filled in by the server
])
def test_the_controller_creates_the_podgroup_the_crd_admits_under_the_charts_role(
        apiserver: Any, api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler, scheduler: str, crd: str,
        stored: dict[str, Any]) -> None:
    api_version, _ = crd_schema(crd)
    apiserver.create(yaml.safe_load((CRDS / f"{crd}.yaml").read_text()))
    jobs.create_job(admin, schedulingPolicy={"scheduler": scheduler})
    reconciler.reconcile(jobs.NS, "cp")
    group = api.get(api_version, "PodGroup", jobs.NS, "cp")
    assert group["spec"] == stored
    assert group["metadata"]["ownerReferences"][0]["uid"] == jobs.get_job(api)["metadata"]["uid"]
    template = jobs.sts(api, "cp-trainer")["spec"]["template"]
    assert template["spec"]["schedulerName"] == scheduling.SCHEDULER_NAMES[scheduler]
    assert {**template["metadata"]["labels"], **template["metadata"]["annotations"]}[
        scheduling.COSCHEDULING_LABEL if scheduler == "coscheduling" else scheduling.VOLCANO_ANNOTATION] == "cp"
    assert reconciler.reconcile(jobs.NS, "cp") == "unchanged"  # the PodGroup as applied (and defaulted) stays


def _body(exc: ApiException) -> str:
    body: Any = exc.body
    return body.decode() if isinstance(body, bytes) else str(body)


@pytest.mark.skipif(not api_schema.CEL_AVAILABLE, reason="no CEL library (cel-python) installed")
def test_the_api_server_refuses_bad_policies_at_admission(admin: kube.Kube) -> None:
    for policy, said in (({"scheduler": "volcano", "minAvailable": 1}, "must cover every trainer"),
                         ({"minAvailable": 2}, "needs a gang scheduler"),
                         ({"scheduler": "coscheduling", "queue": "q"}, "names a Volcano queue")):
        with pytest.raises(ApiException) as refused:
            jobs.create_job(admin, schedulingPolicy=policy)
        assert refused.value.status == 422 and said in _body(refused.value), refused.value.body
    jobs.create_job(admin, schedulingPolicy={"scheduler": "volcano"})
    with pytest.raises(ApiException) as refused:
        jobs.change_spec(admin, "cp", {"schedulingPolicy": {"scheduler": "coscheduling"}})
    assert refused.value.status == 422 and "cannot change once the job exists" in _body(refused.value)


def test_a_scheduler_the_cluster_lacks_fails_the_job_with_the_reason(
        api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler) -> None:
    jobs.create_job(admin, schedulingPolicy={"scheduler": "volcano"})  # no Volcano CRD in this cluster
    assert reconciler.reconcile(jobs.NS, "cp") == "invalid"
    st = jobs.get_job(api)["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec")
    assert "serves no scheduling.volcano.sh/v1beta1 PodGroup" in st["message"]
    assert reconciler.reconcile(jobs.NS, "cp") == "unchanged"  # said once, no write loop


def test_what_kueues_statefulset_webhook_writes_is_not_set_back(
        api: kube.Kube, admin: kube.Kube, reconciler: handlers.Reconciler, apiserver: Any) -> None:
    """Kueue's webhook writes the same group labels and annotations as the controller renders, and a few more;
    the controller's drift repair (it sets back hand edits of what it renders) leaves them all alone."""
    body = {"apiVersion": jobs.API, "kind": jobs.KIND,
            "metadata": {"name": "cp", "namespace": jobs.NS, "labels": {scheduling.KUEUE_QUEUE: "team-a"}},
            "spec": {"trainers": {"replicas": 2}}}
    admin.request("POST", kube.path(jobs.API, jobs.KIND, jobs.NS), body=body)
    reconciler.reconcile(jobs.NS, "cp")
    for component in ("trainer", "player"):
        name = f"cp-{component}"
        webhook = {"kueue.x-k8s.io/pod-suspending-parent": "statefulset", "kueue.x-k8s.io/pod-group-fast-admission":
                   "true", "kueue.x-k8s.io/pod-group-pod-index-label": "apps.kubernetes.io/pod-index",
                   scheduling.KUEUE_TOTAL: "2", scheduling.KUEUE_SERVING: "true"}
        admin.request("PATCH", kube.path("apps/v1", "StatefulSet", jobs.NS, name),
                      content_type="application/merge-patch+json",
                      body={"spec": {"template": {"metadata": {"annotations": webhook, "labels": {
                          scheduling.KUEUE_QUEUE: "team-a",
                          scheduling.KUEUE_GROUP: scheduling.kueue_group_name(name)}}}}})
    writes = jobs.writes(apiserver)
    assert reconciler.reconcile(jobs.NS, "cp") == "unchanged" and jobs.writes(apiserver) == writes
    notes = jobs.sts(api, "cp-trainer")["spec"]["template"]["metadata"]["annotations"]
    assert notes["kueue.x-k8s.io/pod-suspending-parent"] == "statefulset"
