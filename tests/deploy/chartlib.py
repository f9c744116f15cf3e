"""Shared helpers of the deploy tests: render the chart with Helm's own Go SDK, and the values matrix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm"
CRD_FILE = CHART / "files" / "a2cjob-crd.yaml"
RULES_FILE = CHART / "files" / "alert-rules.yaml"
DASHBOARDS = CHART / "dashboards"
RELEASE, NAMESPACE = "demo", "a2c"
# Kubernetes versions every built-in object is validated against (the chart needs >= 1.28).
KUBE_VERSIONS = ("1.28.0", "1.31.0", "1.34.0")


class KubeLoader(yaml.SafeLoader):
    """Reads numbers the way the API server's YAML decoder does: `1e-05` (Helm's toYaml of 0.00001) is
    a float there, while PyYAML's YAML 1.1 rules would make it a string."""


KubeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=KubeLoader) if doc]


def values_file(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def cases() -> dict[str, dict[str, Any]]:
    """The values matrix: each case is a file a user would pass with -f."""
    kind = values_file(ROOT / "deploy" / "kind" / "values.yaml")
    kind.setdefault("image", {})["tag"] = "0.1.0-kind"  # what deploy/kind/e2e.sh sets
    return {
        "defaults": {},
        "kind": kind,
        "gpu": values_file(CHART / "ci" / "gpu-values.yaml"),
        "monitoring": values_file(CHART / "ci" / "monitoring-values.yaml"),
        "networkpolicy": values_file(CHART / "ci" / "networkpolicy-values.yaml"),
        "nojob": values_file(CHART / "ci" / "nojob-values.yaml"),
    }


def render(values: dict[str, Any], chart: Path = CHART, name: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, list[dict[str, Any]]]:
    """template path -> the objects it renders (NOTES.txt as {"NOTES": text})."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values=values, name=name, namespace=namespace, is_install=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            out[path] = [{"NOTES": text}]
            continue
        out[path] = load_all(text)
    return out


def objects(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for docs in rendered.values() for doc in docs if "kind" in doc]


def of_kind(rendered: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in objects(rendered) if doc["kind"] == kind]


def one(rendered: dict[str, list[dict[str, Any]]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(rendered, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def notes(rendered: dict[str, list[dict[str, Any]]]) -> str:
    return next(docs[0]["NOTES"] for path, docs in rendered.items() if path.endswith("NOTES.txt"))
