"""An A2CJob's spec with its defaults filled in, and the role configs it means.

Data flow: the API server (or `a2c render` reading a file) hands us a job; `with_defaults` fills in what
the CRD's schema defaults would (so a file rendered offline gives the same objects as one admitted by the
API server); `trainer_config` / `player_config` turn it into the dataclasses of `a2c.config`, which
`resources` renders as flags and environment variables for the pods. Every config field with `crd` metadata
is an A2CJob field (`JOB_FIELDS`): read into the config here, its default in `defaults()`, and its schema in
the CRD and the chart written from the same metadata by tools/gen_config.py (whose `--check` the tests run),
so the CRD, the chart, the CLI and the controller cannot drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import typing
from typing import Any, TypeVar

from a2c import config, flags

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
T = TypeVar("T")


JobField = tuple[dataclasses.Field[Any], Any]  # a config field that is an A2CJob field, and its type


def _job_fields() -> dict[str, JobField]:
    """Spec path (`algorithm.lr`) -> (field, type), for every config field with `crd` metadata, in the order
    a2c.config declares them (a trainer's first, then what only a player has)."""
    out: dict[str, JobField] = {}
    for cls in (config.TrainerConfig, config.PlayerConfig):
        for f, kind in flags.typed_leaves(cls):
            if "crd" in f.metadata:
                out.setdefault(f.metadata["crd"], (f, kind))
    return out


JOB_FIELDS = _job_fields()


def schema_type(f: dataclasses.Field[Any], kind: Any) -> str:
    """The JSON type of a config field in the A2CJob: its `schema` metadata's, else its Python type's."""
    named = (f.metadata.get("schema") or {}).get("type")
    return str(named) if named else {bool: "boolean", int: "integer", float: "number", str: "string"}[kind]


def to_spec(f: dataclasses.Field[Any], kind: Any, value: Any) -> Any:
    """A config value as the A2CJob holds it: a JSON object or an integer list where the flag is text."""
    typ = schema_type(f, kind)
    if typ == "object":
        return json.loads(value)
    if typ == "array":
        return [int(s) for s in str(value).split(",") if s.strip()]
    return value


def from_spec(f: dataclasses.Field[Any], kind: Any, value: Any) -> Any:
    """An A2CJob value as the config field holds it (the inverse of `to_spec`; a whole number may stand for a
    float, as YAML writes it)."""
    typ = schema_type(f, kind)
    if typ == "object":
        return json.dumps(value or {}, sort_keys=True)
    if typ == "array":
        return ",".join(str(int(v)) for v in value)
    return kind(value)


def _at(spec: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        spec = spec[key]
    return spec


def _put(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        spec = spec.setdefault(key, {})
    spec[last] = value


def defaults() -> dict[str, Any]:
    """The spec an empty A2CJob gets (the CRD's schema defaults say the same: tools/gen_config.py writes them
    from the same fields): the config fields' defaults, and what only the A2CJob has."""
    placement: dict[str, Any] = {"resources": {}, "nodeSelector": {}, "tolerations": [], "affinity": {}}
    out: dict[str, Any] = {
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "maxGangRestarts": 3,
        "runPolicy": {},
        "environment": {},
        "trainers": {"gpus": 0, "startupTimeoutSeconds": STARTUP_TIMEOUT_S, **copy.deepcopy(placement)},
        "players": copy.deepcopy(placement),
        "algorithm": {},
        "stop": {},
        "checkpoint": {"persistent": False, "size": "1Gi", "accessMode": "ReadWriteOnce"},
        "evaluation": {},
        "tls": {"secretName": "", "mutual": False},
        # minAvailable has no default: absent, the gang is every trainer and every player (`gang_size`).
        "schedulingPolicy": {"scheduler": "none", "schedulerName": "", "queue": "", "priorityClass": ""},
    }
    for path, (f, kind) in JOB_FIELDS.items():
        _put(out, path, to_spec(f, kind, f.default))
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_defaults(spec: dict[str, Any] | None) -> dict[str, Any]:
    """`spec` with every field the CRD defaults filled in (values already present win)."""
    return _merge(defaults(), spec or {})


@dataclasses.dataclass(frozen=True)
class RunPolicy:
    """When the job runs and for how long, as batch users know it (Kubernetes Job, Kubeflow's runPolicy).

    `suspend`: spec.suspend or spec.runPolicy.suspend (either may be given; both given must agree).
    `backoff_limit`: gang restarts allowed before the job fails: spec.runPolicy.backoffLimit where given, else
    spec.maxGangRestarts (which then keeps its meaning). None: no deadline, no TTL."""

    suspend: bool = False
    active_deadline_s: int | None = None
    ttl_after_finished_s: int | None = None
    backoff_limit: int = 3
    backoff_field: str = "maxGangRestarts"  # which field set backoff_limit, for the message that names it


def _whole(value: Any, where: str, least: int) -> int | None:
    """`value` as a whole number of at least `least` (None stays None), or ValueError naming `where`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < least:
        raise ValueError(f"{where} must be a whole number of at least {least}, not {value!r}")
    return int(value)


def run_policy(spec: dict[str, Any]) -> RunPolicy:
    """The job's run policy from its spec (defaults filled in), or ValueError saying what is wrong: the CRD's
    schema and CEL rules say the same at admission; this holds for a job admitted under an older CRD."""
    policy = spec.get("runPolicy") or {}
    if not isinstance(policy, dict):
        raise ValueError("spec.runPolicy must be an object")
    given = {where: value for where, value in (("spec.suspend", spec.get("suspend")),
                                              ("spec.runPolicy.suspend", policy.get("suspend")))
             if value is not None}
    for where, value in given.items():
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, not {value!r}")
    if len(set(given.values())) > 1:
        raise ValueError("spec.suspend and spec.runPolicy.suspend disagree: set one of them")
    backoff = _whole(policy.get("backoffLimit"), "spec.runPolicy.backoffLimit", 0)
    return RunPolicy(
        suspend=any(given.values()),
        active_deadline_s=_whole(policy.get("activeDeadlineSeconds"), "spec.runPolicy.activeDeadlineSeconds", 1),
        ttl_after_finished_s=_whole(policy.get("ttlSecondsAfterFinished"), "spec.runPolicy.ttlSecondsAfterFinished",
                                    0),
        backoff_limit=backoff if backoff is not None else int(spec["maxGangRestarts"]),
        backoff_field="runPolicy.backoffLimit" if backoff is not None else "maxGangRestarts",
    )


def validate_name(name: str) -> None:
    """Children are named `<job>-trainer` etc.: the job name must leave room for that."""
    if not _NAME.match(name) or len(name) > MAX_NAME:
        raise ValueError(f"job name {name!r} must be a DNS-1035 label of at most {MAX_NAME} characters")


SCHEDULERS = ("none", "coscheduling", "volcano")


def gang_size(spec: dict[str, Any]) -> int:
    """minMember of the job's PodGroup: `spec.schedulingPolicy.minAvailable`, else every trainer and every player
    (the whole job, all or nothing, as Kubeflow's runPolicy.schedulingPolicy has it)."""
    trainers = int(spec["trainers"]["replicas"])
    players = trainers * int(spec["players"]["replicasPerTrainer"])
    given = (spec.get("schedulingPolicy") or {}).get("minAvailable")
    return trainers + players if given is None else int(given)


def check_scheduling(spec: dict[str, Any]) -> None:
    """ValueError saying what is wrong with `spec.schedulingPolicy` (the CRD refuses the same at admission; this
    holds for a job admitted under an older CRD, or rendered from a file)."""
    policy = spec["schedulingPolicy"]
    scheduler = policy["scheduler"]
    if scheduler not in SCHEDULERS:
        raise ValueError(f"spec.schedulingPolicy.scheduler is {scheduler!r}: one of {', '.join(SCHEDULERS)}")
    given = policy.get("minAvailable")
    if given is not None:
        if scheduler == "none":
            raise ValueError("spec.schedulingPolicy.minAvailable needs a gang scheduler (scheduler: coscheduling "
                             "or volcano)")
        if isinstance(given, bool) or not isinstance(given, int):
            raise ValueError(f"spec.schedulingPolicy.minAvailable must be an integer, not {given!r}")
        trainers = int(spec["trainers"]["replicas"])
        total = trainers * (1 + int(spec["players"]["replicasPerTrainer"]))
        if not trainers <= given <= total:
            raise ValueError(f"spec.schedulingPolicy.minAvailable is {given}: it must cover every trainer "
                             f"({trainers}) and cannot exceed the job's pods ({total}: trainers and players)")
    if policy["queue"] and scheduler != "volcano":
        raise ValueError("spec.schedulingPolicy.queue names a Volcano queue: it needs scheduler: volcano "
                         "(for Kueue, label the A2CJob kueue.x-k8s.io/queue-name)")


def trainer_address(name: str, namespace: str) -> str:
    """Player j's trainer: `{trainer}` is replaced by j mod N (see PlayerConfig.trainer_address)."""
    return f"{name}-trainer-{{trainer}}.{name}-trainer.{namespace}.svc:{GRPC_PORT}"


def master_addr(name: str, namespace: str) -> str:
    return f"{name}-trainer-0.{name}-trainer.{namespace}.svc"


def _from_spec(cls: type[T], spec: dict[str, Any], **values: Any) -> T:
    """`cls` with every field the A2CJob has read from `spec` (groups included), and `values` on top."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            continue
        kind = flags.typed_fields(typing.cast(type, cls))[f.name]
        if dataclasses.is_dataclass(kind):
            values[f.name] = _from_spec(kind, spec)  # type: ignore[arg-type]
        elif "crd" in f.metadata:
            values[f.name] = from_spec(f, kind, _at(spec, f.metadata["crd"]))
    return cls(**values)


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
    trainers = spec["trainers"]
    if int(trainers["gpus"]) > 1:
        raise ValueError(f"spec.trainers.gpus is {trainers['gpus']}: a trainer pod runs one rank on one GPU "
                         "(use more trainer replicas for more GPUs)")
    cert, key, ca = tls_files(spec, "trainer")
    return _from_spec(
        config.TrainerConfig, spec, master_addr=master_addr(name, namespace), master_port=DDP_PORT, port=GRPC_PORT,
        metrics_port=METRICS_PORT, run_dir=RUN_DIR, device="cuda" if int(trainers["gpus"]) > 0 else "cpu",
        hold_when_done=True, job=name, tls_cert=cert, tls_key=key, tls_ca=ca,
    )


def player_config(name: str, namespace: str, spec: dict[str, Any]) -> config.PlayerConfig:
    """What every player runs with (its index comes from its ordinal: A2C_PLAYER_INDEX)."""
    cert, key, ca = tls_files(spec, "player")
    return _from_spec(
        config.PlayerConfig, spec, num_trainers=int(spec["trainers"]["replicas"]),
        trainer_address=trainer_address(name, namespace), metrics_port=METRICS_PORT, tls_cert=cert, tls_key=key,
        tls_ca=ca, hold_when_done=True, job=name,
    )
