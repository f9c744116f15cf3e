"""resources.py: every rendered child is a valid Kubernetes object, and the pods run what the CLI reads."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils as kv
import pytest

from a2c import cli, config, flags
from a2c.controller import commands, resources
from a2c.controller import spec as jobspec
from tests.controller.jobs import by_kind, job

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
VERSIONS = sorted({kv.major_minor(v) for v in kv.all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 28)},
                  key=lambda v: tuple(map(int, v.split("."))))



def example_jobs() -> list[dict[str, Any]]:
    out = []
    for path in EXAMPLES:
        for obj in commands.render_file(path.read_text(), "ml"):
            obj["metadata"]["ownerReferences"] = [resources.owner_reference(job())]  # as the controller sets
            out.append(obj)
    return out


SPECS = {
    "defaults": job(),
    "gpu+pvc": job(trainers={"replicas": 3, "gpus": 1, "nodeSelector": {"gpu": "a100"}},
                   checkpoint={"persistent": True, "storageClassName": "fast", "size": "10Gi"}),
    "placement": job(players={"replicasPerTrainer": 4, "tolerations": [{"key": "spot", "operator": "Exists"}],
                              "affinity": {"nodeAffinity": {}}, "resources": {"limits": {"cpu": "500m", "memory": 1}}}),
}


def test_kubernetes_versions_cover_1_28_to_newest() -> None:
    assert VERSIONS[0] == "1.28" and VERSIONS[-1] == kv.major_minor(kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_child_is_valid_for_every_kubernetes_version(version: str) -> None:
    objs = [o for j in SPECS.values() for o in resources.render(j)] + example_jobs()
    objs += [o for o in resources.render(SPECS["gpu+pvc"], stopped=True)]
    assert {o["kind"] for o in objs} == {"ConfigMap", "Service", "StatefulSet"}
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_rejects_a_broken_child() -> None:
    sts = by_kind(resources.render(job()))["StatefulSet/cp-trainer"]
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, VERSIONS[-1], strict=True)


def test_every_child_is_owned_by_the_job() -> None:
    for obj in resources.render(SPECS["gpu+pvc"]):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "a2c.dev/v1alpha1", "kind": "A2CJob", "name": "cp",
                       "uid": "0c0ffee0-0000-4000-8000-000000000001", "controller": True, "blockOwnerDeletion": True}
        assert obj["metadata"]["namespace"] == "ml"


def test_headless_service_and_trainer_statefulset_form_a_ddp_group() -> None:
    objs = by_kind(resources.render(SPECS["gpu+pvc"]))
    svc, sts = objs["Service/cp-trainer"], objs["StatefulSet/cp-trainer"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert set(svc["spec"]["selector"].items()) <= set(sts["spec"]["template"]["metadata"]["labels"].items())
    assert sts["spec"]["serviceName"] == "cp-trainer" and sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}  # the controller restarts the gang, not the STS
    assert sts["spec"]["replicas"] == 3
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["WORLD_SIZE"]["value"] == "3" and env["MASTER_PORT"]["value"] == "29500"
    assert env["MASTER_ADDR"]["value"] == "cp-trainer-0.cp-trainer.ml.svc"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"]["value"] == "1"
    assert c["readinessProbe"]["grpc"]["port"] == 50051
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    # Persistent checkpoints: one PVC per rank from a volumeClaimTemplate (no shared ReadWriteOnce volume),
    # retained when the StatefulSet goes, so they outlive the job; the pod template has no such volume.
    assert "checkpoints" not in volumes
    assert {"name": "checkpoints", "mountPath": "/checkpoints"} in c["volumeMounts"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "checkpoints" and "ownerReferences" not in claim["metadata"]
    assert claim["spec"]["storageClassName"] == "fast" and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert resources.checkpoint_pvc_name("cp") == "checkpoints-cp-trainer-0"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["terminationGracePeriodSeconds"] >= 60  # a final checkpoint after the round in flight
    assert not c["image"].endswith(":latest") and c["image"] == jobspec.IMAGE


def test_cpu_job_has_no_gpu_no_pvc_and_an_emptydir_run_dir() -> None:
    objs = by_kind(resources.render(job()))
    assert not any(k.startswith("PersistentVolumeClaim") for k in objs)
    assert "volumeClaimTemplates" not in objs["StatefulSet/cp-trainer"]["spec"]
    pod = objs["StatefulSet/cp-trainer"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(pod)
    assert {v["name"]: v for v in pod["volumes"]}["checkpoints"] == {"name": "checkpoints", "emptyDir": {}}


def _environ(obj_env: list[dict[str, Any]], cm: dict[str, Any], ordinal: int) -> dict[str, str]:
    """The environment a pod's container would see: envFrom the ConfigMap, then env (downward API resolved)."""
    out = dict(cm["data"])
    for e in obj_env:
        if "valueFrom" in e:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == resources.POD_INDEX
            out[e["name"]] = str(ordinal)
        else:
            out[e["name"]] = e["value"]
    return out


@pytest.mark.parametrize("name", list(SPECS))
def test_rendered_trainer_command_parses_to_the_config_the_spec_means(name: str) -> None:
    j = SPECS[name]
    objs = by_kind(resources.render(j))
    cm, sts = objs["ConfigMap/cp-config"], objs["StatefulSet/cp-trainer"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["a2c"] and c["envFrom"] == [{"configMapRef": {"name": "cp-config"}}]
    for ordinal in range(sts["spec"]["replicas"]):
        role, cfg = cli.parse_role(c["args"], _environ(c["env"], cm, ordinal))
        expected = jobspec.trainer_config("cp", "ml", jobspec.with_defaults(j["spec"]))
        expected.rank = ordinal
        assert role == "trainer" and cfg == expected
        assert isinstance(cfg, config.TrainerConfig) and cfg.resolved_rank() == ordinal
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert isinstance(cfg, config.TrainerConfig)
    assert ports == {"grpc": cfg.port, "ddp": cfg.master_port, "metrics": cfg.metrics_port}


@pytest.mark.parametrize("name", list(SPECS))
def test_rendered_player_command_parses_and_finds_its_trainer(name: str) -> None:
    j = SPECS[name]
    objs = by_kind(resources.render(j))
    cm, sts = objs["ConfigMap/cp-config"], objs["StatefulSet/cp-player"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    n = by_kind(resources.render(j))["StatefulSet/cp-trainer"]["spec"]["replicas"]
    assert sts["spec"]["replicas"] % n == 0
    for j_index in range(sts["spec"]["replicas"]):
        role, cfg = cli.parse_role(c["args"], _environ(c["env"], cm, j_index))
        assert role == "player" and isinstance(cfg, config.PlayerConfig)
        expected = jobspec.player_config("cp", "ml", jobspec.with_defaults(j["spec"]))
        expected.player_index = j_index
        assert cfg == expected
        assert cfg.resolved_trainer_address() == f"cp-trainer-{j_index % n}.cp-trainer.ml.svc:50051"


def _env_names(cls: type) -> set[str]:
    return {flags.env_name(f) for f in flags.leaves(cls)}


def test_configmap_sets_only_variables_the_cli_reads() -> None:
    cm = by_kind(resources.render(job()))["ConfigMap/cp-config"]
    known = _env_names(config.TrainerConfig) | _env_names(config.PlayerConfig)
    assert set(cm["data"]) <= known
    assert set(cm["data"]) | resources.POD_ENV == known  # and every one of them is set, here or on the pod


def test_spec_values_reach_the_flags() -> None:
    spec = {"algorithm": {"lr": 0.0007, "hiddenSizes": [256, 128], "sharedExtractor": True, "optimizer": "adam"},
            "environment": {"id": "LunarLander-v3", "kwargs": {"continuous": False}, "seed": 7},
            "players": {"envsPerPlayer": 4}, "stop": {"targetReturn": 200}}
    cfg = jobspec.trainer_config("cp", "ml", jobspec.with_defaults(spec))
    assert (cfg.algo.lr, cfg.algo.hidden(), cfg.algo.shared_extractor, cfg.algo.optimizer) == (
        0.0007, (256, 128), True, "adam")
    env = (cfg.env.env_id, cfg.env.kwargs(), cfg.env.seed, cfg.env.num_envs)
    assert env == ("LunarLander-v3", {"continuous": False}, 7, 4)
    assert cfg.stop.target_return == 200.0 and cfg.stop.return_window == 100


@pytest.mark.parametrize(("evaluation", "expected"), [({}, (100, 10)), ({"interval": 25, "episodes": 3}, (25, 3)),
                                                       ({"interval": 0}, (0, 10))])
def test_spec_evaluation_reaches_the_trainers_that_run(evaluation: dict[str, int], expected: tuple[int, int]) -> None:
    """spec.evaluation -> ConfigMap/flags -> the trainer config the real CLI parses (0 turns evaluation off)."""
    objs = by_kind(resources.render(job(evaluation=evaluation)))
    (c,) = objs["StatefulSet/cp-trainer"]["spec"]["template"]["spec"]["containers"]
    role, cfg = cli.parse_role(c["args"], _environ(c["env"], objs["ConfigMap/cp-config"], 0))
    assert role == "trainer" and isinstance(cfg, config.TrainerConfig)
    assert (cfg.eval_interval, cfg.eval_episodes) == expected
    changed = resources.trainer_template_hash(job(evaluation=evaluation)) != resources.trainer_template_hash(job())
    assert changed == (expected != (100, 10)), "a changed evaluation re-forms the trainer group (it is their flag)"


def test_continuous_control_fields_reach_both_roles() -> None:
    spec = jobspec.with_defaults({"algorithm": {"normalizeObs": True, "normalizeReward": True, "lrSchedule": "linear",
                                                "logStdInit": -2, "optimizer": "rmsprop_tf", "useSde": True,
                                                "sdeSampleFreq": 4}})
    for cfg in (jobspec.trainer_config("hc", "ml", spec), jobspec.player_config("hc", "ml", spec)):
        algo = cfg.algo
        assert (algo.normalize_obs, algo.normalize_reward, algo.lr_schedule, algo.optimizer) == (
            True, True, "linear", "rmsprop_tf")
        assert algo.log_std_init == -2.0 and isinstance(algo.log_std_init, float)
        assert (algo.use_sde, algo.sde_sample_freq) == (True, 4)


def test_player_scaling_leaves_the_trainers_untouched() -> None:
    one = by_kind(resources.render(job(players={"replicasPerTrainer": 1}, trainers={"replicas": 2})))
    three = by_kind(resources.render(job(players={"replicasPerTrainer": 3}, trainers={"replicas": 2})))
    assert one["StatefulSet/cp-trainer"] == three["StatefulSet/cp-trainer"]
    replicas = (one["StatefulSet/cp-player"]["spec"]["replicas"], three["StatefulSet/cp-player"]["spec"]["replicas"])
    assert replicas == (2, 6)
    assert one["StatefulSet/cp-player"]["spec"]["template"] == three["StatefulSet/cp-player"]["spec"]["template"]


def test_trainer_count_change_changes_the_group() -> None:
    two = by_kind(resources.render(job(trainers={"replicas": 2})))["StatefulSet/cp-trainer"]
    four = by_kind(resources.render(job(trainers={"replicas": 2}), trainers=4))["StatefulSet/cp-trainer"]
    env = {e["name"]: e.get("value") for e in four["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert four["spec"]["replicas"] == 4 and env["WORLD_SIZE"] == "4"
    assert two["spec"]["template"]["metadata"]["annotations"] != four["spec"]["template"]["metadata"]["annotations"]


def test_stopped_job_scales_to_zero_but_keeps_service_config_and_checkpoints() -> None:
    objs = by_kind(resources.render(SPECS["gpu+pvc"], stopped=True))
    assert objs["StatefulSet/cp-trainer"]["spec"]["replicas"] == 0
    assert objs["StatefulSet/cp-player"]["spec"]["replicas"] == 0
    assert {"Service/cp-trainer", "ConfigMap/cp-config"} <= set(objs)
    assert objs["StatefulSet/cp-trainer"]["spec"]["volumeClaimTemplates"]  # scaled down, claims retained


def test_more_than_one_gpu_per_trainer_is_refused() -> None:
    """One rank per pod uses one GPU; a second one would sit idle, so the spec is refused (InvalidSpec)."""
    with pytest.raises(ValueError, match="one rank on one GPU"):
        resources.render(job(trainers={"gpus": 2}))


@pytest.mark.parametrize("name", ["Bad", "1abc", "a" * 41, "ends-"])
def test_names_that_cannot_name_children_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="DNS-1035"):
        resources.render(job(name=name))


def test_rendering_is_pure() -> None:
    j = SPECS["gpu+pvc"]
    before = copy.deepcopy(j)
    assert resources.render(j) == resources.render(j)
    assert j == before
