"""The A2CJob CRD: a valid, structural apiextensions/v1 object whose schema admits the examples, rejects
bad specs, and defaults exactly what the controller (and so the CLI) would."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

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
    "empty network": ("algorithm", "hiddenSizes", []),
    "lr as text": ("algorithm", "lr", "fast"),
    "zero step budget": ("stop", "maxEnvSteps", 0),
    "bad volume size": ("checkpoint", "size", "lots"),
    "unknown access mode": ("checkpoint", "accessMode", "ReadOnlyMany"),
    "empty env id": ("environment", "id", ""),
    "negative evaluation interval": ("evaluation", "interval", -1),
    "evaluation without episodes": ("evaluation", "episodes", 0),
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
