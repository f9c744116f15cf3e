"""Pure rendering: one A2CJob -> the Kubernetes objects that run it.

Data flow: `handlers` (and `a2c render`) call `render(job)`; it fills in defaults (`spec.with_defaults`; the
controller hands in the spec it filled once for its pass), builds the role configs (`spec.trainer_config` /
`spec.player_config`) and renders them as

    ConfigMap   <job>-config        every A2C_* variable of both roles (envFrom in both StatefulSets)
    Service     <job>-trainer       headless, publishNotReadyAddresses: peers resolve before ready
    StatefulSet <job>-trainer       Parallel; RANK from the pod-index label; WORLD_SIZE/MASTER_* for DDP;
                                    with spec.checkpoint.persistent a volumeClaimTemplate mounted at --run-dir
                                    (PVC checkpoints-<job>-trainer-<i>, retained: it outlives the job)
    StatefulSet <job>-player        Parallel; A2C_PLAYER_INDEX from the pod-index label (no Service: nothing
                                    dials a player, so its governing service name is only nominal)
    PodGroup    <job>               with spec.schedulingPolicy.scheduler coscheduling (scheduling.x-k8s.io) or
                                    volcano (scheduling.volcano.sh): the gang, minMember = `spec.gang_size`

Queues and gangs (Kueue's labels and gate, a gang scheduler's PodGroup and pod fields): `scheduling`.

No I/O here: tests check these objects against Kubernetes' published schemas and parse the rendered
commands and environment with the real `a2c` CLI.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

from a2c import config, flags
from a2c.controller import scheduling
from a2c.controller import spec as jobspec

POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
# Set on the pod, not in the ConfigMap: they identify the pod's place in the group, or (TLS, as flags) mean
# different files for a trainer (its server pair, + CA for mutual TLS) and a player (the CA, + its client pair).
POD_ENV = {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "A2C_PLAYER_INDEX"}
TLS_ENV = {"A2C_TLS_CERT", "A2C_TLS_KEY", "A2C_TLS_CA"}
POD_ENV |= TLS_ENV
# Players can be rescaled without touching the trainers: this one change must not roll the trainer pods.
TRAINER_HASH_EXCLUDES = {"A2C_PLAYERS_PER_TRAINER"}
CHECKPOINTS = "checkpoints"  # the trainers' checkpoint volume (and volumeClaimTemplate) name
GRACE_AFTER_ROUND_S = 60  # SIGTERM -> the group agrees to stop after this round, writes its checkpoint, exits


def env_vars(obj: Any) -> dict[str, str]:
    """Every leaf of a config dataclass as the environment variable `a2c.config` reads it from."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(env_vars(value))
            continue
        out[flags.env_name(f)] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _digest(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def labels(name: str, component: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "a2c",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "a2c",
        "app.kubernetes.io/managed-by": "a2c-controller",
        "a2c.dev/job": name,
    }
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def selector(name: str, component: str) -> dict[str, str]:
    """Selectors are immutable: only name + instance + component."""
    return {"app.kubernetes.io/name": "a2c", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component}


def owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return {
        "apiVersion": jobspec.API_VERSION, "kind": jobspec.KIND, "name": meta["name"], "uid": meta["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }


def _meta(job: dict[str, Any], name: str, component: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "namespace": job["metadata"].get("namespace") or "default",
        "labels": labels(job["metadata"]["name"], component),
    }
    if job["metadata"].get("uid"):  # absent only when rendering a file offline
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


def _placement(role: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("nodeSelector", "tolerations", "affinity"):
        if role.get(key):
            out[key] = copy.deepcopy(role[key])
    return out


def _security() -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
           "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    return pod, container


def _pod_index_env(var: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"fieldRef": {"fieldPath": POD_INDEX}}}


def configmap(job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    name, ns = job["metadata"]["name"], job["metadata"].get("namespace") or "default"
    data = env_vars(jobspec.player_config(name, ns, spec))
    data.update(env_vars(jobspec.trainer_config(name, ns, spec)))
    data = {k: v for k, v in sorted(data.items()) if k not in POD_ENV}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(job, f"{name}-config", None), "data": data}


def checkpoint_claim(job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The trainers' volumeClaimTemplate: each rank gets its own PVC `checkpoints-<job>-trainer-<i>` (one
    ReadWriteOnce volume shared by every rank would strand ranks on other nodes; only rank 0 writes, the others
    get its state over the process group). Created by the StatefulSet controller and, with the Retain policy,
    owned by nothing: they outlive the job, so a job re-created with the same name (`helm upgrade`) resumes."""
    ckpt = spec["checkpoint"]
    pvc_spec: dict[str, Any] = {"accessModes": [ckpt["accessMode"]],
                                "resources": {"requests": {"storage": ckpt["size"]}}}
    if ckpt.get("storageClassName"):
        pvc_spec["storageClassName"] = ckpt["storageClassName"]
    return {"metadata": {"name": CHECKPOINTS, "labels": labels(job["metadata"]["name"], "checkpoints")},
            "spec": pvc_spec}


def checkpoint_pvc_name(job_name: str, ordinal: int = 0) -> str:
    """The PVC the StatefulSet controller makes for trainer `ordinal` (`<template>-<statefulset>-<ordinal>`)."""
    return f"{CHECKPOINTS}-{job_name}-trainer-{ordinal}"


def trainer_service(job: dict[str, Any]) -> dict[str, Any]:
    name = job["metadata"]["name"]
    ports = [{"name": "grpc", "port": jobspec.GRPC_PORT, "targetPort": "grpc"},
             {"name": "ddp", "port": jobspec.DDP_PORT, "targetPort": "ddp"},
             {"name": "metrics", "port": jobspec.METRICS_PORT, "targetPort": "metrics"}]
    svc_spec = {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector(name, "trainer"),
                "ports": ports}
    meta = _meta(job, f"{name}-trainer", "trainer")
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": svc_spec}


def pod_group(job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any] | None:
    """The gang scheduler's PodGroup, owned by the job (None without one: `scheduling.pod_group`)."""
    return scheduling.pod_group(job, spec, _meta(job, scheduling.group_name(job), None))


def _statefulset(
    job: dict[str, Any], spec: dict[str, Any], component: str, replicas: int, pod: dict[str, Any], digest: str,
    strategy: str,
) -> dict[str, Any]:
    name = job["metadata"]["name"]
    extra_labels, notes, pod_fields = scheduling.scheduling(job, spec, component, replicas)
    template = {
        "metadata": {"labels": {**labels(name, component), **extra_labels},
                     "annotations": {"a2c.dev/config-hash": digest, **notes}},
        "spec": {**pod, **pod_fields},
    }
    sts_spec = {
        "serviceName": f"{name}-{component}", "replicas": replicas, "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector(name, component)}, "template": template,
        "updateStrategy": {"type": strategy},
    }
    meta = _meta(job, f"{name}-{component}", component)
    if scheduling.queue_name(job):  # what Kueue's StatefulSet integration looks for
        meta["labels"][scheduling.KUEUE_QUEUE] = scheduling.queue_name(job)
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": sts_spec}


def trainer_statefulset(job: dict[str, Any], spec: dict[str, Any], replicas: int) -> dict[str, Any]:
    name, ns = job["metadata"]["name"], job["metadata"].get("namespace") or "default"
    trainers = spec["trainers"]
    cfg = jobspec.trainer_config(name, ns, spec)
    gpus = int(trainers["gpus"])
    resources = copy.deepcopy(trainers.get("resources") or {})
    if gpus > 0:
        resources.setdefault("limits", {})["nvidia.com/gpu"] = gpus
    pod_sec, container_sec = _security()
    container: dict[str, Any] = {
        "name": "trainer", "image": spec["image"], "imagePullPolicy": spec["imagePullPolicy"],
        "command": ["a2c"], "args": trainer_args(cfg),
        "ports": [{"name": "grpc", "containerPort": cfg.port}, {"name": "ddp", "containerPort": cfg.master_port},
                  {"name": "metrics", "containerPort": cfg.metrics_port}],
        "env": [
            _pod_index_env("RANK"),
            {"name": "WORLD_SIZE", "value": str(cfg.world_size)},
            {"name": "MASTER_ADDR", "value": cfg.master_addr},
            {"name": "MASTER_PORT", "value": str(cfg.master_port)},
            {"name": "TORCH_NCCL_ASYNC_ERROR_HANDLING", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "envFrom": [{"configMapRef": {"name": f"{name}-config"}}],
        # Ready = the group has formed and the first weights are out (the health service says SERVING). The
        # kubelet's grpc probe speaks plaintext only: a TLS trainer says the same on /readyz of its metrics port.
        "readinessProbe": {**({"httpGet": {"path": "/readyz", "port": "metrics"}} if cfg.tls_cert
                              else {"grpc": {"port": cfg.port}}), "periodSeconds": 5, "failureThreshold": 3},
        # `a2c trainer` writes why it cannot start to /dev/termination-log (exit code 3); any other crash
        # leaves its log tail there, so the controller can say what happened.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": resources,
        "securityContext": container_sec,
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": CHECKPOINTS, "mountPath": cfg.run_dir}, *_tls_mounts(spec)],
    }
    persistent = bool(spec["checkpoint"]["persistent"])
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}, {"name": "tmp", "emptyDir": {}},
               *([] if persistent else [{"name": CHECKPOINTS, "emptyDir": {}}]), *_tls_volumes(spec)]
    pod: dict[str, Any] = {
        "securityContext": pod_sec, "containers": [container],
        "terminationGracePeriodSeconds": int(cfg.round_timeout_s) + GRACE_AFTER_ROUND_S,
        "volumes": volumes, **_placement(trainers),
    }
    if gpus > 0 and not trainers.get("tolerations"):
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    trainer_env = {k: v for k, v in env_vars(cfg).items() if k not in TRAINER_HASH_EXCLUDES}
    # OnDelete: the StatefulSet never rolls trainers one by one (a half-updated DDP group cannot train);
    # the controller restarts the whole gang when the template changes (see trainer_template_hash).
    sts = _statefulset(job, spec, "trainer", replicas, pod, _digest(trainer_env), "OnDelete")
    if persistent:
        sts["spec"]["volumeClaimTemplates"] = [checkpoint_claim(job, spec)]
        sts["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain", "whenScaled": "Retain"}
    return sts


def player_statefulset(job: dict[str, Any], spec: dict[str, Any], replicas: int) -> dict[str, Any]:
    name, ns = job["metadata"]["name"], job["metadata"].get("namespace") or "default"
    cfg = jobspec.player_config(name, ns, spec)
    pod_sec, container_sec = _security()
    container: dict[str, Any] = {
        "name": "player", "image": spec["image"], "imagePullPolicy": spec["imagePullPolicy"],
        "command": ["a2c"], "args": player_args(cfg),
        "ports": [{"name": "metrics", "containerPort": cfg.metrics_port}],
        "env": [_pod_index_env("A2C_PLAYER_INDEX"), {"name": "HOME", "value": "/tmp"}],
        "envFrom": [{"configMapRef": {"name": f"{name}-config"}}],
        "resources": copy.deepcopy(spec["players"].get("resources") or {}),
        "securityContext": container_sec,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *_tls_mounts(spec)],
    }
    pod: dict[str, Any] = {
        "securityContext": pod_sec, "containers": [container], "terminationGracePeriodSeconds": 10,
        "volumes": [{"name": "tmp", "emptyDir": {}}, *_tls_volumes(spec)], **_placement(spec["players"]),
    }
    return _statefulset(job, spec, "player", replicas, pod, _digest(env_vars(cfg)), "RollingUpdate")


def trainer_template_hash(job: dict[str, Any], spec: dict[str, Any] | None = None) -> str:
    """Identifies what trainer pods run; when it changes the controller re-forms the whole group.

    `spec`: the job's spec with its defaults already filled in (else filled here)."""
    spec = jobspec.with_defaults(job.get("spec")) if spec is None else spec
    template = trainer_statefulset(job, spec, int(spec["trainers"]["replicas"]))["spec"]["template"]
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def _tls_volumes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    secret = (spec.get("tls") or {}).get("secretName")
    # 0440 with the pod's fsGroup: readable by the a2c user's group only.
    return [{"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}}] if secret else []


def _tls_mounts(spec: dict[str, Any]) -> list[dict[str, Any]]:
    secret = (spec.get("tls") or {}).get("secretName")
    return [{"name": "tls", "mountPath": jobspec.TLS_DIR, "readOnly": True}] if secret else []


def _tls_args(cfg: config.TrainerConfig | config.PlayerConfig) -> list[str]:
    return [flag for name in ("tls_cert", "tls_key", "tls_ca") if getattr(cfg, name)
            for flag in ("--" + name.replace("_", "-"), getattr(cfg, name))]


def trainer_args(cfg: config.TrainerConfig) -> list[str]:
    """The flags that tie the container to its pod spec (ports, mounts); the rest comes from the ConfigMap."""
    return ["trainer", "--port", str(cfg.port), "--metrics-port", str(cfg.metrics_port), "--run-dir", cfg.run_dir,
            *_tls_args(cfg)]


def player_args(cfg: config.PlayerConfig) -> list[str]:
    return ["player", "--metrics-port", str(cfg.metrics_port), *_tls_args(cfg)]


def render(job: dict[str, Any], stopped: bool = False, trainers: int | None = None,
           spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The children of `job`, in the order they are applied.

    `stopped` scales both StatefulSets to zero (a finished or failed job keeps its Service, ConfigMap and
    checkpoints). `trainers` overrides the trainer count (the group is re-formed at the new size). `spec`: the
    job's spec with its defaults already filled in (the controller fills them once per pass), else filled here.
    """
    jobspec.validate_name(job["metadata"]["name"])
    spec = jobspec.with_defaults(job.get("spec")) if spec is None else copy.deepcopy(spec)
    jobspec.check_scheduling(spec)  # (the controller checked it already; `a2c render` of a file has not)
    if trainers is not None:
        spec["trainers"]["replicas"] = trainers
    n = int(spec["trainers"]["replicas"])
    players = n * int(spec["players"]["replicasPerTrainer"])
    out = [configmap(job, spec), trainer_service(job)]
    group = pod_group(job, spec)  # before the pods that name it
    if group is not None:
        out.append(group)
    out.append(trainer_statefulset(job, spec, 0 if stopped else n))
    out.append(player_statefulset(job, spec, 0 if stopped else players))
    return out
