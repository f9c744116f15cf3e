"""The A2CJob CRD: a valid, structural apiextensions/v1 object whose schema admits the examples, rejects
bad specs, and defaults exactly what the controller (and so the CLI) would."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from a2c.controller import spec as jobspec

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "deploy/helm/files/a2cjob-crd.yaml").read_text())
(VERSION,) = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
# Kubernetes' OpenAPI v3.0 schemas use draft-4 semantics (boolean exclusiveMinimum); x-kubernetes-* are ignored.
VALIDATOR = jsonschema.Draft4Validator(SCHEMA)
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_crd_is_a_valid_apiextensions_object() -> None:
    kubernetes_validate.validate(CRD, "1.28", strict=True)
    kubernetes_validate.validate(CRD, kubernetes_validate.latest_version(), strict=True)
    assert CRD["metadata"]["name"] == "a2cjobs.a2c.dev"
    assert (CRD["spec"]["group"], VERSION["name"], CRD["spec"]["names"]["kind"]) == ("a2c.dev", "v1alpha1", "A2CJob")
    assert "a2cj" in CRD["spec"]["names"]["shortNames"]
    assert VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Iteration"] == ".status.iteration"
    assert columns["Return"] == ".status.meanReturn" and columns["Age"] == ".metadata.creationTimestamp"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"] == ".status.reason"
    assert list(columns)[:3] == ["Phase", "Ready", "Reason"]


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for key, sub in (schema.get("properties") or {}).items():
        out += _nodes(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        out += _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _nodes(schema["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string / preserve-unknown-fields): what the API server requires."""
    for path, node in _nodes(SCHEMA):
        assert "type" in node or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"), path
        if node.get("default") is not None:  # a default must itself validate against its node
            jsonschema.Draft4Validator(node).validate(node["default"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_admitted(path: pathlib.Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert (doc["apiVersion"], doc["kind"]) == ("a2c.dev/v1alpha1", "A2CJob")
        VALIDATOR.validate(doc)


BAD = {
    "zero trainers": ("trainers", "replicas", 0),
    "too many trainers": ("trainers", "replicas", 65),
    "negative gpus": ("trainers", "gpus", -1),
    "two gpus per trainer pod": ("trainers", "gpus", 2),
    "zero startup timeout": ("trainers", "startupTimeoutSeconds", 0),
    "unknown backend": ("trainers", "backend", "mpi"),
    "zero players": ("players", "replicasPerTrainer", 0),
    "zero envs": ("players", "envsPerPlayer", 0),
    "zero lr": ("algorithm", "lr", 0),
    "negative lr": ("algorithm", "lr", -0.001),
    "gamma above 1": ("algorithm", "gamma", 1.5),
    "zero n_steps": ("algorithm", "nSteps", 0),
    "negative entropy": ("algorithm", "entCoef", -0.1),
    "unknown optimizer": ("algorithm", "optimizer", "sgd"),
    "unknown activation": ("algorithm", "activation", "gelu"),
    "unknown lr schedule": ("algorithm", "lrSchedule", "cosine"),
    "normalizeObs as text": ("algorithm", "normalizeObs", "yes"),
    "useSde as text": ("algorithm", "useSde", "yes"),
    "sdeSampleFreq below -1": ("algorithm", "sdeSampleFreq", -2),
    "empty network": ("algorithm", "hiddenSizes", []),
    "lr as text": ("algorithm", "lr", "fast"),
    "zero step budget": ("stop", "maxEnvSteps", 0),
    "bad volume size": ("checkpoint", "size", "lots"),
    "unknown access mode": ("checkpoint", "accessMode", "ReadOnlyMany"),
    "empty env id": ("environment", "id", ""),
    "unknown vectorization": ("environment", "vectorization", "threads"),
    "negative evaluation interval": ("evaluation", "interval", -1),
    "evaluation without episodes": ("evaluation", "episodes", 0),
    "zero deadline": ("runPolicy", "activeDeadlineSeconds", 0),
    "deadline as text": ("runPolicy", "activeDeadlineSeconds", "1h"),
    "negative ttl": ("runPolicy", "ttlSecondsAfterFinished", -1),
    "negative backoff limit": ("runPolicy", "backoffLimit", -1),
    "backoff limit above 100": ("runPolicy", "backoffLimit", 101),
    "suspend as text": ("runPolicy", "suspend", "yes"),
    "unknown scheduler": ("schedulingPolicy", "scheduler", "kube-batch"),
    "zero minAvailable": ("schedulingPolicy", "minAvailable", 0),
    "minAvailable as text": ("schedulingPolicy", "minAvailable", "all"),
    "priority class not a DNS name": ("schedulingPolicy", "priorityClass", "High_Priority"),
    "scheduler name not a DNS name": ("schedulingPolicy", "schedulerName", "My Scheduler"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_specs_are_rejected(case: str) -> None:
    group, key, value = BAD[case]
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    VALIDATOR.validate(doc)  # the example is fine...
    doc["spec"].setdefault(group, {})[key] = value
    with pytest.raises(jsonschema.ValidationError):  # ...until this one field is wrong
        VALIDATOR.validate(doc)


def test_unknown_phase_in_status_is_rejected() -> None:
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate({"spec": {}, "status": {"phase": "Done"}})


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's defaulting does: fill missing properties with their defaults, recursively."""
    if not isinstance(value, dict):
        return value
    out = copy.deepcopy(value)
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _apply_defaults(sub, out[key])
    return out


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _subset(v, big[k]) for k, v in small.items())
    return bool(small == big)


def test_crd_defaults_are_the_controllers_defaults() -> None:
    """An empty spec admitted by the API server renders exactly like an empty spec rendered offline."""
    admitted = _apply_defaults(SCHEMA["properties"]["spec"], {})
    assert _subset(admitted, jobspec.defaults()), (admitted, jobspec.defaults())
    assert jobspec.with_defaults(admitted) == jobspec.defaults()
    leaves = [p for p, n in _nodes(SCHEMA["properties"]["spec"]) if "default" in n and n.get("type") != "object"]
    assert len(leaves) >= 30  # every hyperparameter, bound and enum has one


# --- CEL rules (x-kubernetes-validations), evaluated with cel-python ---------------------------------------


def _rules(schema: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(schema path, rule) -> message, for every x-kubernetes-validations rule in the schema."""
    return {(path, r["rule"]): r["message"] for path, node in _nodes(schema)
            for r in node.get("x-kubernetes-validations") or []}


RULES = _rules(SCHEMA)
CEL = celpy.Environment()


def cel(rule: str, self_: Any, old: Any = None) -> bool:
    """The rule's verdict on `self_` (and `oldSelf`, for a transition rule: an update from `old`)."""
    activation = {"self": celpy.json_to_cel(self_)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    return bool(CEL.program(CEL.compile(rule)).evaluate(activation))


def _meta(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {}}


NAME_SIZE = ("", "self.metadata.name.size() <= 40")
NAME_DNS = ("", "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
MUTUAL = (".spec.tls", "!self.mutual || self.secretName != ''")
CLASS_SET = (".spec.checkpoint", "has(self.storageClassName) == has(oldSelf.storageClassName)")
SUSPEND_AGREES = (".spec", "!has(self.suspend) || !has(self.runPolicy) || !has(self.runPolicy.suspend) "
                           "|| self.suspend == self.runPolicy.suspend")
GANG = (".spec", "!has(self.schedulingPolicy) || !has(self.schedulingPolicy.minAvailable) || "
                 "(self.schedulingPolicy.minAvailable >= self.trainers.replicas && self.schedulingPolicy.minAvailable "
                 "<= self.trainers.replicas * (1 + self.players.replicasPerTrainer))")
GANG_NEEDS_SCHEDULER = (".spec.schedulingPolicy", "self.scheduler != 'none' || !has(self.minAvailable)")
QUEUE_IS_VOLCANOS = (".spec.schedulingPolicy", "self.queue == '' || self.scheduler == 'volcano'")


def _gang(min_available: int | None, trainers: int = 2, per_trainer: int = 3) -> dict[str, Any]:
    policy = {"scheduler": "volcano"} if min_available is None else {"scheduler": "volcano",
                                                                       "minAvailable": min_available}
    return {"trainers": {"replicas": trainers}, "players": {"replicasPerTrainer": per_trainer},
            "schedulingPolicy": policy}


# (rule, [(self, oldSelf or None)] accepted, [...] refused)
CEL_CASES: list[tuple[tuple[str, str], list[tuple[Any, Any]], list[tuple[Any, Any]]]] = [
    (NAME_SIZE, [(_meta("a" * 40), None), (_meta("cartpole"), None)], [(_meta("a" * 41), None)]),
    (NAME_DNS, [(_meta("cartpole"), None), (_meta("lunar-lander-2"), None), (_meta("a"), None)],
     [(_meta("2cartpole"), None), (_meta("CartPole"), None), (_meta("cart.pole"), None), (_meta("cart-"), None)]),
    (MUTUAL, [({"secretName": "", "mutual": False}, None), ({"secretName": "tls", "mutual": True}, None)],
     [({"secretName": "", "mutual": True}, None)]),
    (SUSPEND_AGREES, [({}, None), ({"suspend": True, "runPolicy": {}}, None), ({"runPolicy": {"suspend": True}}, None),
                      ({"suspend": False, "runPolicy": {"suspend": False}}, None),
                      ({"suspend": True, "runPolicy": {"suspend": True}}, None)],
     [({"suspend": True, "runPolicy": {"suspend": False}}, None),
      ({"suspend": False, "runPolicy": {"suspend": True}}, None)]),
    (CLASS_SET, [({}, {}), ({"storageClassName": "fast"}, {"storageClassName": "fast"})],
     [({"storageClassName": "fast"}, {}), ({}, {"storageClassName": "fast"})]),
    # 2 trainers x (1 + 3 players each) = 8 pods: minAvailable from 2 (the trainers) to 8 (all)
    (GANG, [(_gang(None), None), (_gang(2), None), (_gang(5), None), (_gang(8), None), ({"trainers": {}}, None)],
     [(_gang(1), None), (_gang(9), None), (_gang(1, trainers=4, per_trainer=1), None)]),
    (GANG_NEEDS_SCHEDULER, [({"scheduler": "none"}, None), ({"scheduler": "coscheduling", "minAvailable": 2}, None)],
     [({"scheduler": "none", "minAvailable": 2}, None)]),
    (QUEUE_IS_VOLCANOS, [({"scheduler": "none", "queue": ""}, None), ({"scheduler": "volcano", "queue": "q"}, None)],
     [({"scheduler": "coscheduling", "queue": "q"}, None), ({"scheduler": "none", "queue": "q"}, None)]),
    *[((f".spec.schedulingPolicy.{field}", "self == oldSelf"), [(same, same)], [(new, old)])
      for field, same, new, old in [("scheduler", "volcano", "coscheduling", "volcano"),
                                    ("schedulerName", "", "my-scheduler", ""), ("queue", "a", "b", "a")]],
    *[((f".spec.checkpoint.{field}", "self == oldSelf"), [(same, same)], [(new, old)])
      for field, same, new, old in [("persistent", True, True, False), ("persistent", False, False, True),
                                    ("size", "1Gi", "2Gi", "1Gi"), ("storageClassName", "fast", "slow", "fast"),
                                    ("accessMode", "ReadWriteOnce", "ReadWriteMany", "ReadWriteOnce")]],
]


def test_every_cel_rule_is_tested_here() -> None:
    assert set(RULES) == {case[0] for case in CEL_CASES}


@pytest.mark.parametrize(("rule", "accepted", "refused"), CEL_CASES,
                         ids=[f"{where or 'root'}: {rule}" for (where, rule), _, _ in CEL_CASES])
def test_cel_rule_accepts_and_refuses(rule: tuple[str, str], accepted: list[tuple[Any, Any]],
                                      refused: list[tuple[Any, Any]]) -> None:
    for self_, old in accepted:
        assert cel(rule[1], self_, old) is True, (self_, old)
    for self_, old in refused:
        assert cel(rule[1], self_, old) is False, (self_, old)


def test_pvc_fields_are_immutable_with_a_way_out() -> None:
    """Each field that shapes the checkpoint volume has a transition rule whose message says what to do."""
    for field in ("persistent", "size", "storageClassName", "accessMode"):
        message = RULES[(f".spec.checkpoint.{field}", "self == oldSelf")]
        assert f"spec.checkpoint.{field}" in message and "delete the job and create it again" in message
    assert "delete the job and create it again" in RULES[CLASS_SET]
    assert "40 characters" in RULES[NAME_SIZE]


def _at(doc: Any, path: str) -> Any:
    for key in path.split(".")[1:]:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_every_cel_rule(path: pathlib.Path) -> None:
    """What the API server does on create (rules without oldSelf) and on an update that changes nothing."""
    for doc in yaml.safe_load_all(path.read_text()):
        admitted = _apply_defaults(SCHEMA, doc)
        for where, rule in RULES:
            node = _at(admitted, where)
            if node is None:
                continue  # Kubernetes evaluates a rule only where its value is present
            assert cel(rule, node, node if "oldSelf" in rule else None), (where, rule)


def test_gpus_are_limited_to_one_per_trainer_pod() -> None:
    gpus = SCHEMA["properties"]["spec"]["properties"]["trainers"]["properties"]["gpus"]
    assert (gpus["minimum"], gpus["maximum"]) == (0, 1)
    assert "refused" in gpus["description"]


def test_startup_timeout_field() -> None:
    field = SCHEMA["properties"]["spec"]["properties"]["trainers"]["properties"]["startupTimeoutSeconds"]
    assert (field["type"], field["minimum"], field["default"]) == ("number", 1, 900)
    assert "StartupTimeout" in field["description"]


def test_name_rules_are_the_controllers() -> None:
    """The API server refuses the names `spec.validate_name` would mark InvalidSpec, and only those."""
    assert NAME_SIZE[1] == f"self.metadata.name.size() <= {jobspec.MAX_NAME}"
    assert NAME_DNS[1] == f"self.metadata.name.matches('{jobspec._NAME.pattern}')"
    for name in ("cartpole", "a" * 40, "a" * 41, "2cartpole", "cart.pole", "cart-"):
        try:
            jobspec.validate_name(name)
            valid = True
        except ValueError:
            valid = False
        assert (cel(NAME_SIZE[1], _meta(name)) and cel(NAME_DNS[1], _meta(name))) is valid, name


def test_run_policy_fields_and_their_bounds() -> None:
    """Where PyTorchJob users look for them (spec.runPolicy), with the bounds a Kubernetes Job has; no defaults
    (unset: no deadline, no TTL, maxGangRestarts holds), and suspend in both places a user may write it."""
    spec = SCHEMA["properties"]["spec"]["properties"]
    policy = spec["runPolicy"]["properties"]
    assert set(policy) == {"suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "backoffLimit"}
    assert policy["activeDeadlineSeconds"]["minimum"] == 1 and policy["ttlSecondsAfterFinished"]["minimum"] == 0
    assert policy["backoffLimit"]["minimum"] == 0
    assert policy["backoffLimit"]["maximum"] == spec["maxGangRestarts"]["maximum"]
    assert not [k for k, v in policy.items() if "default" in v] and "default" not in spec["suspend"]
    assert spec["suspend"]["type"] == policy["suspend"]["type"] == "boolean"
    assert "disagree" in RULES[SUSPEND_AGREES]


def test_kubectl_get_shows_a_suspended_job() -> None:
    """The Phase column reads status.phase, whose enum has Suspended."""
    version = CRD["spec"]["versions"][0]
    phase = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Phase")
    assert phase["jsonPath"] == ".status.phase"
    assert "Suspended" in SCHEMA["properties"]["status"]["properties"]["phase"]["enum"]
