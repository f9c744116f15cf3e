"""An A2CJob's spec with its defaults filled in, and the role configs it means.

Data flow: the API server (or `a2c render` reading a file) hands us a job; `with_defaults` fills in what
the CRD's schema defaults would (so a file rendered offline gives the same objects as one admitted by the
API server); `trainer_config` / `player_config` turn it into the dataclasses of `a2c.config`, which
`resources` renders as flags and environment variables for the pods. Defaults come from `a2c.config`,
so the CRD, the CLI and the controller cannot drift apart (tests/controller/test_crd.py checks the CRD).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any

from a2c import config

API_VERSION = "a2c.dev/v1alpha1"
KIND = "A2CJob"
GROUP, VERSION, PLURAL = "a2c.dev", "v1alpha1", "a2cjobs"
IMAGE = "a2c:0.1.0"
GRPC_PORT = 50051
METRICS_PORT = 9090
DDP_PORT = 29500
RUN_DIR = "/checkpoints"
TLS_DIR = "/etc/a2c/tls"  # spec.tls.secretName is mounted here: tls.crt, tls.key, ca.crt (cert-manager's names)
STARTUP_TIMEOUT_S = 900  # the trainer group may take this long to form (image pulls, GPU node scale-up)
MAX_NAME = 40  # <job>-trainer-<revision hash> must stay within 63 characters
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


ALGO_FIELDS = [f.name for f in dataclasses.fields(config.AlgoConfig)]


def defaults() -> dict[str, Any]:
    """The spec an empty A2CJob gets (the CRD's schema defaults say the same)."""
    algo = {_camel(name): _default(config.AlgoConfig, name) for name in ALGO_FIELDS}
    algo["hiddenSizes"] = [int(s) for s in str(algo["hiddenSizes"]).split(",")]
    placement: dict[str, Any] = {"resources": {}, "nodeSelector": {}, "tolerations": [], "affinity": {}}
    return {
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "maxGangRestarts": 3,
        "environment": {"id": _default(config.EnvConfig, "env_id"), "kwargs": {}, "seed": 0},
        "trainers": {
            "replicas": 1, "gpus": 0, "backend": _default(config.TrainerConfig, "backend"),
            "roundTimeoutSeconds": _default(config.TrainerConfig, "round_timeout_s"),
            "distTimeoutSeconds": _default(config.TrainerConfig, "dist_timeout_s"),
            "startupTimeoutSeconds": STARTUP_TIMEOUT_S,
            **copy.deepcopy(placement),
        },
        "players": {
            "replicasPerTrainer": _default(config.TrainerConfig, "players_per_trainer"),
            "envsPerPlayer": _default(config.EnvConfig, "num_envs"),
            **copy.deepcopy(placement),
        },
        "algorithm": algo,
        "stop": {
            "targetReturn": _default(config.StopConfig, "target_return"),
            "returnWindow": _default(config.StopConfig, "return_window"),
            "maxEnvSteps": _default(config.StopConfig, "max_env_steps"),
        },
        "checkpoint": {
            "persistent": False, "size": "1Gi", "accessMode": "ReadWriteOnce",
            "interval": _default(config.TrainerConfig, "checkpoint_interval"),
            "keep": _default(config.TrainerConfig, "keep_checkpoints"),
        },
        "evaluation": {
            "interval": _default(config.TrainerConfig, "eval_interval"),
            "episodes": _default(config.TrainerConfig, "eval_episodes"),
        },
        "tls": {"secretName": "", "mutual": False},
    }


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_defaults(spec: dict[str, Any] | None) -> dict[str, Any]:
    """`spec` with every field the CRD defaults filled in (values already present win)."""
    return _merge(defaults(), spec or {})


def validate_name(name: str) -> None:
    """Children are named `<job>-trainer` etc.: the job name must leave room for that."""
    if not _NAME.match(name) or len(name) > MAX_NAME:
        raise ValueError(f"job name {name!r} must be a DNS-1035 label of at most {MAX_NAME} characters")


def trainer_address(name: str, namespace: str) -> str:
    """Player j's trainer: `{trainer}` is replaced by j mod N (see PlayerConfig.trainer_address)."""
    return f"{name}-trainer-{{trainer}}.{name}-trainer.{namespace}.svc:{GRPC_PORT}"


def master_addr(name: str, namespace: str) -> str:
    return f"{name}-trainer-0.{name}-trainer.{namespace}.svc"


def _env_config(spec: dict[str, Any]) -> config.EnvConfig:
    env = spec["environment"]
    return config.EnvConfig(
        env_id=env["id"], env_kwargs=json.dumps(env.get("kwargs") or {}, sort_keys=True),
        num_envs=int(spec["players"]["envsPerPlayer"]), seed=int(env["seed"]),
    )


def _algo_config(spec: dict[str, Any]) -> config.AlgoConfig:
    algo = spec["algorithm"]
    values = {name: algo[_camel(name)] for name in ALGO_FIELDS}
    values["hidden_sizes"] = ",".join(str(int(h)) for h in algo["hiddenSizes"])
    for name in ALGO_FIELDS:
        values[name] = type(_default(config.AlgoConfig, name))(values[name])
    return config.AlgoConfig(**values)


def tls_files(spec: dict[str, Any], role: str) -> tuple[str, str, str]:
    """(tls_cert, tls_key, tls_ca) of `role`'s config ("" = unset): a trainer gets the server pair (+ the CA
    that signs client certificates, for mutual TLS), a player the CA that verifies the trainer (+ the pair)."""
    tls = spec.get("tls") or {}
    secret, mutual = str(tls.get("secretName") or ""), bool(tls.get("mutual"))
    if not secret:
        if mutual:
            raise ValueError("spec.tls.mutual needs spec.tls.secretName (a Secret with tls.crt, tls.key, ca.crt)")
        return "", "", ""
    cert, key, ca = f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key", f"{TLS_DIR}/ca.crt"
    if role == "trainer":
        return cert, key, ca if mutual else ""
    return (cert, key, ca) if mutual else ("", "", ca)


def trainer_config(name: str, namespace: str, spec: dict[str, Any]) -> config.TrainerConfig:
    """What every trainer of this job runs with (rank is left to the pod: RANK from its ordinal)."""
    trainers, stop, ckpt, evaluation = spec["trainers"], spec["stop"], spec["checkpoint"], spec["evaluation"]
    if int(trainers["gpus"]) > 1:
        raise ValueError(f"spec.trainers.gpus is {trainers['gpus']}: a trainer pod runs one rank on one GPU "
                         "(use more trainer replicas for more GPUs)")
    cert, key, ca = tls_files(spec, "trainer")
    return config.TrainerConfig(
        world_size=int(trainers["replicas"]), master_addr=master_addr(name, namespace), master_port=DDP_PORT,
        port=GRPC_PORT, metrics_port=METRICS_PORT, players_per_trainer=int(spec["players"]["replicasPerTrainer"]),
        run_dir=RUN_DIR, checkpoint_interval=int(ckpt["interval"]), keep_checkpoints=int(ckpt["keep"]),
        round_timeout_s=float(trainers["roundTimeoutSeconds"]), dist_timeout_s=float(trainers["distTimeoutSeconds"]),
        backend=trainers["backend"], device="cuda" if int(trainers["gpus"]) > 0 else "cpu", hold_when_done=True,
        job=name,
        tls_cert=cert, tls_key=key, tls_ca=ca,
        eval_interval=int(evaluation["interval"]), eval_episodes=int(evaluation["episodes"]),
        env=_env_config(spec), algo=_algo_config(spec),
        stop=config.StopConfig(
            target_return=float(stop["targetReturn"]), return_window=int(stop["returnWindow"]),
            max_env_steps=int(stop["maxEnvSteps"]),
        ),
    )


def player_config(name: str, namespace: str, spec: dict[str, Any]) -> config.PlayerConfig:
    """What every player runs with (its index comes from its ordinal: A2C_PLAYER_INDEX)."""
    cert, key, ca = tls_files(spec, "player")
    return config.PlayerConfig(
        num_trainers=int(spec["trainers"]["replicas"]), trainer_address=trainer_address(name, namespace),
        metrics_port=METRICS_PORT, tls_cert=cert, tls_key=key, tls_ca=ca, hold_when_done=True, job=name,
        env=_env_config(spec), algo=_algo_config(spec),
    )
