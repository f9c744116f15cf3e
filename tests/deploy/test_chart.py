"""The Helm chart, rendered by Helm's own Go SDK (helm-python-sdk) for a matrix of values.

What is real here: Helm's template engine, its schema validation and its linter; Kubernetes' published
OpenAPI schemas (kubernetes-validate); our CRD's openAPIV3Schema; the `a2c` CLI parser; the controller's
pure rendering; a real gRPC health server. What is not: an API server, so admission, hooks and
NetworkPolicy enforcement are exercised only by deploy/kind/e2e.sh.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from concurrent import futures
from typing import Any

import grpc
import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from a2c import cli, config
from a2c.controller import kube, probe, resources

from . import chartlib
from .chartlib import NAMESPACE, RELEASE, of_kind, one

CASES = list(chartlib.cases())
JOB_CASES = [c for c in CASES if c != "nojob"]
# Kinds that are not built into Kubernetes: A2CJob is checked against our CRD instead, the Prometheus
# Operator's kinds by the structural tests below.
CUSTOM_KINDS = {"A2CJob", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
CRD = chartlib.load_all(chartlib.CRD_FILE.read_text())[0]
JOB_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def pod_specs(rendered: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for obj in chartlib.objects(rendered):
        if obj["kind"] == "Pod":
            out.append((obj["metadata"]["name"], obj["spec"]))
        elif obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return out


# --- Helm itself --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", chartlib.KUBE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_strict_lint_is_clean(case: str, kube_version: str) -> None:
    chart = chartlib.CHART
    report = helm.lint(chart, chartlib.cases()[case], strict=True, namespace=NAMESPACE,
                       kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], (problems, report["errors"])


@pytest.mark.parametrize("case", CASES)
def test_every_built_in_object_is_valid_for_several_kubernetes_versions(case: str, rendered_cases) -> None:
    objs = [o for o in chartlib.objects(rendered_cases[case]) if o["kind"] not in CUSTOM_KINDS]
    assert objs
    for version in chartlib.KUBE_VERSIONS:
        for obj in objs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{case}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: "
                            f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_validation_catches_a_broken_object(rendered_cases) -> None:
    """The validator above is not vacuous: a misspelt field in a rendered Deployment fails it."""
    deployment = copy.deepcopy(one(rendered_cases["defaults"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, chartlib.KUBE_VERSIONS[0], strict=True)


# --- values.schema.json -------------------------------------------------------------------------------

BAD_VALUES = [
    ({"job": {"trainers": {"replicas": 0}}}, "/job/trainers/replicas", "minimum"),
    ({"job": {"trainers": {"gpus": -1}}}, "/job/trainers/gpus", "minimum"),
    ({"job": {"trainers": {"gpus": 2}}}, "/job/trainers/gpus", "maximum"),
    ({"job": {"trainers": {"startupTimeoutSeconds": 0}}}, "/job/trainers/startupTimeoutSeconds", "minimum"),
    ({"controller": {"replicas": 0}}, "/controller/replicas", "minimum"),
    ({"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "Never"}},
     "/podDisruptionBudget/unhealthyPodEvictionPolicy", "'IfHealthyBudget', 'AlwaysAllow'"),
    ({"job": {"trainers": {"gpu": 1}}}, "/job/trainers", "'gpu' not allowed"),
    ({"job": {"players": {"replicasPerTrainer": "2"}}}, "/job/players/replicasPerTrainer", "want integer"),
    ({"job": {"algorithm": {"optimizer": "sgd"}}}, "/job/algorithm/optimizer", "'rmsprop', 'rmsprop_tf', 'adam'"),
    ({"job": {"algorithm": {"gamma": 1.5}}}, "/job/algorithm/gamma", "maximum"),
    ({"job": {"algorithm": {"lr": 0}}}, "/job/algorithm/lr", "exclusiveMinimum"),
    ({"job": {"name": "Bad_Name"}}, "/job/name", "does not match pattern"),
    ({"job": {"checkpoint": {"size": "lots"}}}, "/job/checkpoint/size", "does not match pattern"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"),
    ({"controller": {"logLevel": "LOUD"}}, "/controller/logLevel", "'DEBUG'"),
    ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "/metrics/serviceMonitor/enabled", "want boolean"),
    ({"metrics": {"serviceMonitor": {"interval": "15"}}}, "/metrics/serviceMonitor/interval", "pattern"),
    ({"podDisruptionBudget": {"trainers": {"maxUnavailable": "half"}}}, "/podDisruptionBudget/trainers", "pattern"),
    ({"networkPolicy": {"apiServer": {"ports": [70000]}}}, "/networkPolicy/apiServer/ports/0", "maximum"),
    ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed", ""),
    ({"job": {"schedulingPolicy": {"scheduler": "kube-batch"}}}, "/job/schedulingPolicy/scheduler", "'volcano'"),
    ({"job": {"schedulingPolicy": {"minAvailable": 0}}}, "/job/schedulingPolicy/minAvailable", "minimum"),
    ({"job": {"queueName": "team a"}}, "/job/queueName", "does not match pattern"),
]


@pytest.mark.parametrize(("values", "where", "what"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_schema_refuses_bad_values_with_a_clear_message(values: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chartlib.render(values)
    message = str(caught.value)
    assert where in message and what in message, message


def test_a_latest_image_tag_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="latest"):
        chartlib.render({"image": {"tag": "latest"}})


@pytest.mark.parametrize("case", CASES)
def test_schema_accepts_every_case(case: str) -> None:
    with helm.Chart.load(chartlib.CHART) as chart:
        chart.validate_schema(chart.merge_values(chartlib.cases()[case]))


def test_values_schema_covers_exactly_the_crd_spec() -> None:
    """Every CRD spec field is settable through job.* (image and pull policy come from image.*), and
    job.* holds nothing the CRD would drop."""
    with helm.Chart.load(chartlib.CHART) as chart:
        schema = chart.schema
    assert schema is not None
    job_schema = schema["properties"]["job"]["properties"]
    crd_spec = JOB_SCHEMA["properties"]["spec"]["properties"]
    # queueName is the job's Kueue label, not a spec field
    assert set(job_schema) - {"enabled", "name", "queueName"} == set(crd_spec) - {"image", "imagePullPolicy"}
    for key, sub in crd_spec.items():
        if sub.get("type") == "object" and "properties" in sub:
            assert set(job_schema[key]["properties"]) == set(sub["properties"]), key


# --- the CRD and the default A2CJob -------------------------------------------------------------------


def test_crd_is_the_controller_file_as_is_plus_keep(rendered_cases) -> None:
    crd = one(rendered_cases["defaults"], "CustomResourceDefinition")
    assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert crd == CRD


def test_crd_text_is_verbatim_without_keep() -> None:
    with helm.Chart.load(chartlib.CHART) as chart:
        text = chart.render({"crds": {"keep": False}}, name=RELEASE, namespace=NAMESPACE)["a2c/templates/crd.yaml"]
    assert text.strip() == chartlib.CRD_FILE.read_text().strip()


@pytest.mark.parametrize(("values", "present"), [
    ({"crds": {"install": False}}, False),
    ({"crds": {"install": True, "keep": False}}, True),
])
def test_crd_flags(values: dict[str, Any], present: bool) -> None:
    crds = of_kind(chartlib.render(values), "CustomResourceDefinition")
    assert len(crds) == int(present)
    if present:
        assert crds[0] == CRD


@pytest.mark.parametrize("case", JOB_CASES)
def test_job_is_valid_against_the_crd_schema(case: str, rendered_cases) -> None:
    job = one(rendered_cases[case], "A2CJob")
    assert job["apiVersion"] == f"{CRD['spec']['group']}/{CRD['spec']['versions'][0]['name']}"
    # OpenAPI v3.0 schemas (boolean exclusiveMinimum) are JSON Schema draft 4 in these keywords.
    jsonschema.Draft4Validator(JOB_SCHEMA).validate(job)


def test_crd_schema_check_is_not_vacuous(rendered_cases) -> None:
    job = copy.deepcopy(one(rendered_cases["defaults"], "A2CJob"))
    job["spec"]["algorithm"]["lr"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(JOB_SCHEMA).validate(job)


def test_job_queue_and_scheduling_policy_reach_the_job() -> None:
    """job.queueName labels the A2CJob for Kueue; job.schedulingPolicy is its spec.schedulingPolicy."""
    policy = {"scheduler": "volcano", "queue": "research", "minAvailable": 1, "priorityClass": "high"}
    job = one(chartlib.render({"job": {"queueName": "team-a", "schedulingPolicy": policy}}), "A2CJob")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["schedulingPolicy"] == policy
    jsonschema.Draft4Validator(JOB_SCHEMA).validate(job)
    plain = one(chartlib.render({}), "A2CJob")
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    assert plain["spec"]["schedulingPolicy"] == {"scheduler": "none"}


def test_job_is_a_post_install_hook_so_its_crd_exists_first(rendered_cases) -> None:
    annotations = one(rendered_cases["defaults"], "A2CJob")["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_default_job_trains_cartpole_on_cpu(rendered_cases) -> None:
    spec = one(rendered_cases["defaults"], "A2CJob")["spec"]
    assert spec["environment"]["id"] == "CartPole-v1"
    assert spec["trainers"]["gpus"] == 0
    assert spec["trainers"]["startupTimeoutSeconds"] == 900
    assert spec["image"] == "a2c:0.1.0" and spec["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("case", JOB_CASES)
def test_default_job_survives_an_upgrade(case: str, rendered_cases) -> None:
    """`helm upgrade` deletes and re-creates the hook job: it resumes only if its checkpoints are on PVCs
    that outlive it. The chart's job has them by default, and the controller renders them so: a trainer
    volumeClaimTemplate that the StatefulSet's deletion leaves behind."""
    job = one(rendered_cases[case], "A2CJob")
    assert job["spec"]["checkpoint"]["persistent"] is True
    (trainers,) = [c for c in resources.render(copy.deepcopy(job))
                   if c["kind"] == "StatefulSet" and c["metadata"]["name"].endswith("-trainer")]
    assert trainers["spec"]["volumeClaimTemplates"], "persistent checkpoints come from a volumeClaimTemplate"
    assert trainers["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    text = (chartlib.CHART / "values.yaml").read_text()
    for promise in ("`helm upgrade` deletes the job and creates it again", "`helm uninstall` does not delete the job",
                    "delete pvc -l a2c.dev/job=<job>"):
        assert promise in text, promise


def test_notes_say_how_to_delete_the_retained_checkpoints(rendered_cases) -> None:
    """The PVC name and the label selector NOTES.txt print are those of the claims the trainers get."""
    rendered = rendered_cases["defaults"]
    job = one(rendered, "A2CJob")
    (trainers,) = [c for c in resources.render(copy.deepcopy(job))
                   if c["kind"] == "StatefulSet" and c["metadata"]["name"].endswith("-trainer")]
    (claim,) = trainers["spec"]["volumeClaimTemplates"]
    text = chartlib.notes(rendered)
    assert f"{claim['metadata']['name']}-{trainers['metadata']['name']}-<i>" in text
    command = next(line.strip() for line in text.splitlines() if "delete pvc" in line)
    assert command.startswith(f"kubectl -n {NAMESPACE} delete pvc -l ")
    key, _, value = command.rpartition(" ")[2].partition("=")
    assert claim["metadata"]["labels"][key] == value == job["metadata"]["name"]
    emptydir = chartlib.notes(chartlib.render({"job": {"checkpoint": {"persistent": False}}}))
    assert "delete pvc" not in emptydir and "starts training over" in emptydir


def test_gpu_values_reach_the_job(rendered_cases) -> None:
    spec = one(rendered_cases["gpu"], "A2CJob")["spec"]
    assert spec["trainers"]["gpus"] == 1 and spec["trainers"]["backend"] == "nccl"
    assert spec["trainers"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["image"] == "a2c:0.1.0-cuda"
    assert spec["checkpoint"]["persistent"] is True


def test_run_policy_and_suspend_values_reach_the_job() -> None:
    policy = {"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600, "backoffLimit": 5}
    job = one(chartlib.render({"job": {"suspend": True, "runPolicy": policy}}), "A2CJob")
    assert job["spec"]["suspend"] is True and job["spec"]["runPolicy"] == policy
    jsonschema.Draft4Validator(JOB_SCHEMA).validate(job)
    default = one(chartlib.render({}), "A2CJob")["spec"]
    assert "suspend" not in default and default["runPolicy"] == {}  # unset: no deadline, no TTL, maxGangRestarts
    with pytest.raises(Exception, match="activeDeadlineSeconds"):  # values.schema.json refuses a bad value
        chartlib.render({"job": {"runPolicy": {"activeDeadlineSeconds": 0}}})


def test_nojob_renders_crd_and_controller_only(rendered_cases) -> None:
    rendered = rendered_cases["nojob"]
    assert not of_kind(rendered, "A2CJob") and not of_kind(rendered, "Pod")
    one(rendered, "Deployment")
    one(rendered, "CustomResourceDefinition")
    assert "job.enabled=false" in chartlib.notes(rendered)


# --- commands: what the chart renders, the real CLI parses -------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_controller_command_is_accepted_by_the_cli(case: str, rendered_cases) -> None:
    container = one(rendered_cases[case], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's entrypoint is `a2c`
    args = cli.build_parser().parse_args(container["args"])
    assert args.command == "controller"
    assert args.namespace == NAMESPACE  # its Role only covers the release namespace
    assert args.metrics_port == 9090
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("case", JOB_CASES)
def test_job_becomes_trainer_and_player_commands_the_cli_accepts(case: str, rendered_cases) -> None:
    """Chart values -> A2CJob -> the controller's pure rendering -> `a2c trainer|player` parsed for real,
    with the environment the pods get (ConfigMap plus pod env, the pod index standing in for the label)."""
    job = copy.deepcopy(one(rendered_cases[case], "A2CJob"))
    children = resources.render(job)
    configmap = next(c for c in children if c["kind"] == "ConfigMap")
    values = chartlib.cases()[case]
    trainers = values.get("job", {}).get("trainers", {}).get("replicas", 1)
    for sts in (c for c in children if c["kind"] == "StatefulSet"):
        container = sts["spec"]["template"]["spec"]["containers"][0]
        environ = dict(configmap["data"])
        for var in container["env"]:
            environ[var["name"]] = var.get("value", "0")  # valueFrom: the pod index of pod 0
        role, cfg = cli.parse_role(container["args"], environ)
        assert container["command"] == ["a2c"] and role == container["name"]
        if role == "trainer":
            assert isinstance(cfg, config.TrainerConfig)
            assert cfg.world_size == trainers
            assert cfg.env.env_id == job["spec"]["environment"]["id"]
            assert cfg.algo.lr == pytest.approx(job["spec"]["algorithm"]["lr"])
        else:
            assert isinstance(cfg, config.PlayerConfig)
            assert cfg.num_trainers == trainers
            assert cfg.env.num_envs == job["spec"]["players"]["envsPerPlayer"]


# --- helm test ---------------------------------------------------------------------------------------


def _health_server(status: int) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _test_pod(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    pod = one(rendered, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # hook-succeeded would delete the pod before `helm test --logs` reads it
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
    return pod


def test_helm_test_pod_targets_every_trainer(rendered_cases) -> None:
    for case, trainers in (("defaults", 1), ("kind", 2), ("gpu", 4)):
        job = one(rendered_cases[case], "A2CJob")["metadata"]["name"]
        args = _test_pod(rendered_cases[case])["spec"]["containers"][0]["args"]
        # The controller's headless Service and port: `<job>-trainer-<i>.<job>-trainer.<ns>.svc:50051`.
        assert args[2:] == [f"{job}-trainer-{i}.{job}-trainer.{NAMESPACE}.svc:50051" for i in range(trainers)]
        assert args[2] == probe.address(job, NAMESPACE, 50051)  # where the controller reads status


@pytest.mark.parametrize(("status", "timeout", "code"), [
    (health_pb2.HealthCheckResponse.SERVING, "10", 0),
    (health_pb2.HealthCheckResponse.NOT_SERVING, "1", 1),
])
def test_helm_test_command_health_checks_a_real_grpc_server(status: int, timeout: str, code: int,
                                                            rendered_cases) -> None:
    """Run the hook's exact command (python -c <script>) against a real grpc.health.v1 server."""
    container = _test_pod(rendered_cases["defaults"])["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    server, port = _health_server(status)
    try:
        script = container["args"][0]
        proc = subprocess.run([sys.executable, "-c", script, timeout, f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60)
    finally:
        server.stop(0)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert ("SERVING" if code == 0 else "NOT_SERVING") in proc.stdout


def test_helm_test_fails_when_nothing_listens(rendered_cases) -> None:
    script = _test_pod(rendered_cases["defaults"])["spec"]["containers"][0]["args"][0]
    server, port = _health_server(health_pb2.HealthCheckResponse.SERVING)
    server.stop(0)
    proc = subprocess.run([sys.executable, "-c", script, "1", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "UNAVAILABLE" in proc.stdout, proc.stdout + proc.stderr


# --- conventions: labels, names, security ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_labels_on_every_object(case: str, rendered_cases) -> None:
    for obj in chartlib.objects(rendered_cases[case]):
        if obj["kind"] == "CustomResourceDefinition":
            continue  # the controller's file, included as-is
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
                    "helm.sh/chart"):
            assert key in labels, (obj["kind"], obj["metadata"]["name"], key)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert obj["metadata"]["namespace"] == NAMESPACE


def test_deployment_selector_is_name_instance_component(rendered_cases) -> None:
    deployment = one(rendered_cases["defaults"], "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["replicas"] == 1


@pytest.mark.parametrize("replicas", [1, 2])
def test_controller_replicas_elect_a_leader(replicas: int) -> None:
    """Only the Lease holder acts, so replicas may overlap: a rolling update that never drops to zero pods,
    and the downward-API identity the election uses."""
    deployment = one(chartlib.render({"controller": {"replicas": replicas}}), "Deployment")
    assert deployment["spec"]["replicas"] == replicas
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    args = cli.build_parser().parse_args(container["args"])
    assert getattr(args, "leader_election", True) is True  # the controller's default: on


def test_controller_liveness_is_the_reconcile_loop(rendered_cases) -> None:
    """/healthz (fails when the reconcile loop is stuck) restarts the pod after about two minutes;
    readiness stays on /metrics, which a standby replica serves too."""
    container = one(rendered_cases["defaults"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert ready["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert 90 <= live["periodSeconds"] * live["failureThreshold"] <= 180
    assert live["timeoutSeconds"] < live["periodSeconds"]


def test_names_fit_63_characters_with_the_longest_release_name() -> None:
    name = "r" * 53  # Helm's own limit on release names
    helm.validate_release_name(name)
    rendered = chartlib.render(chartlib.cases()["monitoring"] | {"networkPolicy": {"enabled": True}},
                               chart=chartlib.CHART, name=name)
    for obj in chartlib.objects(rendered):
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    job = one(rendered, "A2CJob")
    assert len(job["metadata"]["name"]) <= 40  # the controller's limit (children add suffixes)


@pytest.mark.parametrize("case", CASES)
def test_restrictive_security_contexts(case: str, rendered_cases) -> None:
    specs = pod_specs(rendered_cases[case])
    assert specs
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sec = container["securityContext"]
            assert sec["readOnlyRootFilesystem"] is True, name
            assert sec["allowPrivilegeEscalation"] is False, name
            assert sec["capabilities"] == {"drop": ["ALL"]}, name
            assert not container["image"].endswith(":latest"), name
            assert container["imagePullPolicy"] == "IfNotPresent", name
            assert container["resources"]["requests"], name
        token = spec.get("automountServiceAccountToken")
        assert token is (name.endswith("-controller")), f"{name}: only the controller gets a token"


def test_rbac_is_namespaced_and_minimal(rendered_cases) -> None:
    rendered = rendered_cases["defaults"]
    assert not of_kind(rendered, "ClusterRole") and not of_kind(rendered, "ClusterRoleBinding")
    role = one(rendered, "Role")
    granted = {(group, res): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for res in rule["resources"]}
    assert all("*" not in verbs for verbs in granted.values())
    assert not any("*" in res or "*" in group for group, res in granted)
    children = {"get", "list", "watch", "create", "patch", "delete"}
    assert granted == {
        # the controller never writes a job's spec; it deletes a finished job after its ttlSecondsAfterFinished
        ("a2c.dev", "a2cjobs"): {"get", "list", "watch", "delete"},
        ("a2c.dev", "a2cjobs/status"): {"get", "patch", "update"},
        ("a2c.dev", "a2cjobs/finalizers"): {"update"},  # blockOwnerDeletion on the children
        ("apps", "statefulsets"): children,
        ("", "services"): children,
        ("", "configmaps"): children,
        ("", "persistentvolumeclaims"): children,
        ("", "pods"): {"get", "list", "watch", "delete"},  # pods come from StatefulSets; delete = gang restart
        ("", "events"): {"create", "patch"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update", "patch"},  # leader election
        ("scheduling.x-k8s.io", "podgroups"): children,  # spec.schedulingPolicy: coscheduling's PodGroup
        ("scheduling.volcano.sh", "podgroups"): children,  # ... or Volcano's
    }
    # Every kind the controller's API client addresses is granted (a2c/controller/kube.py).
    for (api_version, _kind), plural in kube.PLURALS.items():
        group = api_version.rpartition("/")[0]
        assert (group, plural) in granted, (group, plural)
    binding = one(rendered, "RoleBinding")
    sa = one(rendered, "ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    assert one(rendered, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa


# --- monitoring and dashboards -----------------------------------------------------------------------


def test_monitoring_off_by_default(rendered_cases) -> None:
    for kind in CUSTOM_KINDS - {"A2CJob"}:
        assert not of_kind(rendered_cases["defaults"], kind)
    assert not of_kind(rendered_cases["defaults"], "ConfigMap")


def test_service_monitor_selects_the_controller_metrics_service(rendered_cases) -> None:
    rendered = rendered_cases["monitoring"]
    monitor = one(rendered, "ServiceMonitor")
    service = one(rendered, "Service")
    assert monitor["metadata"]["labels"]["release"] == "monitoring"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_pod_monitor_selects_the_pods_the_controller_renders(rendered_cases) -> None:
    rendered = rendered_cases["monitoring"]
    monitor = one(rendered, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "monitoring"
    selector = monitor["spec"]["selector"]
    children = resources.render(copy.deepcopy(one(rendered, "A2CJob")))
    for sts in (c for c in children if c["kind"] == "StatefulSet"):
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/component"] in selector["matchExpressions"][0]["values"]
        ports = {p["name"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_prometheus_rule_is_the_alert_rules_file(rendered_cases) -> None:
    rule = one(rendered_cases["monitoring"], "PrometheusRule")
    expected = yaml.safe_load((chartlib.CHART / "files" / "alert-rules.yaml").read_text())
    assert rule["spec"] == expected and rule["spec"]["groups"]
    assert rule["metadata"]["labels"]["release"] == "monitoring"


def test_one_dashboard_configmap_per_json_file(rendered_cases) -> None:
    maps = of_kind(rendered_cases["monitoring"], "ConfigMap")
    files = sorted((chartlib.CHART / "dashboards").glob("*.json"))
    assert files and len(maps) == len(files)
    by_key = {key: value for cm in maps for key, value in cm["data"].items()}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert len(cm["data"]) == 1
    for path in files:
        assert by_key[path.name] == path.read_text()


@pytest.mark.parametrize(("flag", "message"), [
    ({"grafana": {"dashboards": {"enabled": True}}}, "dashboards"),
    ({"metrics": {"prometheusRule": {"enabled": True}}}, "alert-rules.yaml"),
])
def test_enabled_packaging_without_its_files_fails_clearly(flag: dict[str, Any], message: str, tmp_path) -> None:
    chart = tmp_path / "a2c"
    shutil.copytree(chartlib.CHART, chart, ignore=shutil.ignore_patterns("dashboards", "alert-rules.yaml"))
    with pytest.raises(helm.HelmRenderError, match=message):
        chartlib.render(flag, chart)


# --- NetworkPolicy and PodDisruptionBudgets -----------------------------------------------------------


def _policy(rendered: dict[str, list[dict[str, Any]]], suffix: str) -> dict[str, Any]:
    return next(p for p in of_kind(rendered, "NetworkPolicy") if p["metadata"]["name"].endswith(suffix))


def _admits(peers: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    return any("podSelector" in p and p["podSelector"]["matchLabels"].items() <= labels.items() for p in peers)


def test_network_policies(rendered_cases) -> None:
    assert not of_kind(rendered_cases["defaults"], "NetworkPolicy")
    rendered = rendered_cases["networkpolicy"]
    children = resources.render(copy.deepcopy(one(rendered, "A2CJob")))
    pod_labels = {s["metadata"]["name"].rsplit("-", 1)[-1]: s["spec"]["template"]["metadata"]["labels"]
                  for s in children if s["kind"] == "StatefulSet"}
    controller = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    test_pod = one(rendered, "Pod")["metadata"]["labels"]
    trainers, players = _policy(rendered, "-trainers"), _policy(rendered, "-players")
    assert trainers["spec"]["podSelector"]["matchLabels"].items() <= pod_labels["trainer"].items()
    assert players["spec"]["podSelector"]["matchLabels"].items() <= pod_labels["player"].items()
    ddp, grpc_in, metrics_in = trainers["spec"]["ingress"]
    assert "ports" not in ddp and _admits(ddp["from"], pod_labels["trainer"])  # gloo/NCCL pick ports
    assert grpc_in["ports"] == [{"protocol": "TCP", "port": 50051}]
    for who in (pod_labels["player"], controller, test_pod):
        assert _admits(grpc_in["from"], who)
    assert not _admits(grpc_in["from"], {"app.kubernetes.io/part-of": "a2c", "app.kubernetes.io/component": "x"})
    assert metrics_in["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    for policy in of_kind(rendered, "NetworkPolicy"):
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        dns = [rule for rule in policy["spec"]["egress"] if "to" not in rule]
        assert dns and {"protocol": "UDP", "port": 53} in dns[0]["ports"], policy["metadata"]["name"]
    api = _policy(rendered, "-controller")["spec"]["egress"][0]
    assert {p["port"] for p in api["ports"]} == {443, 6443}


def test_pod_disruption_budgets_select_the_job_pods(rendered_cases) -> None:
    rendered = rendered_cases["defaults"]
    children = resources.render(copy.deepcopy(one(rendered, "A2CJob")))
    budgets = {p["metadata"]["name"].rsplit("-", 1)[-1]: p for p in of_kind(rendered, "PodDisruptionBudget")}
    assert set(budgets) == {"trainers", "players"}
    # One trainer may be evicted (a node drain then restarts the gang once, from its checkpoint): with 0 a
    # drain would hang until the job ends. Pods that are not Ready never hold a drain up.
    assert budgets["trainers"]["spec"]["maxUnavailable"] == 1
    for budget in budgets.values():
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    blocking = chartlib.render({"podDisruptionBudget": {"trainers": {"maxUnavailable": 0},
                                                        "unhealthyPodEvictionPolicy": None}})
    budget = next(p for p in of_kind(blocking, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-trainers"))
    assert budget["spec"]["maxUnavailable"] == 0 and "unhealthyPodEvictionPolicy" not in budget["spec"]
    for sts in (c for c in children if c["kind"] == "StatefulSet"):
        role = sts["metadata"]["name"].rsplit("-", 1)[-1] + "s"
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert budgets[role]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not of_kind(chartlib.render({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget")


def test_notes_say_what_to_run_next(rendered_cases) -> None:
    text = chartlib.notes(rendered_cases["defaults"])
    assert f"helm test {RELEASE} -n {NAMESPACE}" in text
    assert "kubectl -n a2c get a2cjobs" in text


SWITCHES: dict[str, dict[str, Any]] = {
    "no-controller": {"controller": {"enabled": False}, "networkPolicy": {"enabled": True}},
    "own-service-account": {"controller": {"serviceAccount": {"create": False, "name": "ops"},
                                           "rbac": {"create": False}}},
    "no-extras": {"tests": {"enabled": False}, "podDisruptionBudget": {"enabled": False},
                  "crds": {"install": False}},
    "named-job": {"job": {"name": "cartpole", "checkpoint": {"persistent": True, "storageClassName": "fast"}},
                  "nameOverride": "rl", "imagePullSecrets": [{"name": "regcred"}]},
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_switches_render_valid_objects(switch: str) -> None:
    values = SWITCHES[switch]
    rendered = chartlib.render(values)
    for obj in chartlib.objects(rendered):
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, chartlib.KUBE_VERSIONS[-1], strict=True)
    report = helm.lint(chartlib.CHART, values, strict=True, namespace=NAMESPACE)
    assert not [m for m in report["messages"] if m["severity"] >= 2]
    if switch == "no-controller":
        assert not of_kind(rendered, "Deployment") and not of_kind(rendered, "Role")
        assert {p["metadata"]["name"] for p in of_kind(rendered, "NetworkPolicy")} == {
            "demo-a2c-trainers", "demo-a2c-players", "demo-a2c-test"}
    if switch == "own-service-account":
        assert not of_kind(rendered, "ServiceAccount") and not of_kind(rendered, "RoleBinding")
        assert one(rendered, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    if switch == "no-extras":
        for kind in ("Pod", "PodDisruptionBudget", "CustomResourceDefinition"):
            assert not of_kind(rendered, kind), kind
    if switch == "named-job":
        job = one(rendered, "A2CJob")
        assert job["metadata"]["name"] == "cartpole"
        assert job["spec"]["checkpoint"]["storageClassName"] == "fast"
        jsonschema.Draft4Validator(JOB_SCHEMA).validate(job)
        assert one(rendered, "Deployment")["metadata"]["name"] == "demo-rl-controller"
        pod = one(rendered, "Pod")["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["containers"][0]["args"][2].startswith("cartpole-trainer-0.cartpole-trainer.")
