"""Which resources the server serves: the built-in kinds, plus those of each established CRD.

A `Resource` is one REST collection (group, version, plural) with what discovery tells kubectl about it.
Custom resources of all served versions share one storage (keyed by group and plural); conversion between
versions is the CRD's `None` strategy: only apiVersion changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource
    definition: str = ""  # built-in OpenAPI definition name; "" for custom resources
    crd: str = ""  # name of the CRD serving it
    schema: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    columns: tuple[dict[str, Any], ...] | None = None  # CRD additionalPrinterColumns
    storage: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage identity: all versions of one group/plural are the same objects."""
        return (self.group, self.plural)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def custom(self) -> bool:
        return bool(self.crd)


def _builtin(group: str, version: str, plural: str, kind: str, prefix: str, **kw: Any) -> Resource:
    return Resource(group, version, plural, kind, definition=f"{prefix}.{kind}", **kw)


_CORE = "io.k8s.api.core.v1"
BUILTINS: list[Resource] = [
    _builtin("", "v1", "pods", "Pod", _CORE, short_names=("po",), categories=("all",), status=True),
    _builtin("", "v1", "services", "Service", _CORE, short_names=("svc",), categories=("all",), status=True),
    _builtin("", "v1", "configmaps", "ConfigMap", _CORE, short_names=("cm",)),
    _builtin("", "v1", "secrets", "Secret", _CORE),
    _builtin("", "v1", "events", "Event", _CORE, short_names=("ev",)),
    _builtin("", "v1", "endpoints", "Endpoints", _CORE, short_names=("ep",)),
    _builtin("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", _CORE, short_names=("pvc",), status=True),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", _CORE, short_names=("sa",)),
    _builtin("", "v1", "namespaces", "Namespace", _CORE, namespaced=False, short_names=("ns",), status=True),
    _builtin("", "v1", "nodes", "Node", _CORE, namespaced=False, short_names=("no",), status=True),
    _builtin("apps", "v1", "statefulsets", "StatefulSet", "io.k8s.api.apps.v1", short_names=("sts",),
             categories=("all",), status=True),
    _builtin("apps", "v1", "deployments", "Deployment", "io.k8s.api.apps.v1", short_names=("deploy",),
             categories=("all",), status=True),
    _builtin("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", "io.k8s.api.policy.v1",
             short_names=("pdb",), status=True),
    _builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", "io.k8s.api.rbac.v1"),
    _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", "io.k8s.api.rbac.v1"),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", "io.k8s.api.rbac.v1",
             namespaced=False),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", "io.k8s.api.rbac.v1",
             namespaced=False),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease", "io.k8s.api.coordination.v1"),
    _builtin("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", "io.k8s.api.networking.v1",
             short_names=("netpol",)),
    _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
             "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1", namespaced=False,
             short_names=("crd", "crds"), categories=("api-extensions",), status=True),
]


_ANYTHING = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def from_crd(crd: dict[str, Any]) -> list[Resource]:
    """The resources an (accepted) CRD serves, one per served version."""
    spec, names = crd["spec"], crd["spec"]["names"]
    out = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        columns = version.get("additionalPrinterColumns")
        out.append(Resource(
            spec["group"], version["name"], names["plural"], names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            status="status" in (version.get("subresources") or {}), crd=crd["metadata"]["name"],
            schema=(version.get("schema") or {}).get("openAPIV3Schema") or _ANYTHING,
            columns=tuple(columns) if columns is not None else None, storage=bool(version.get("storage")),
        ))
    return out


def resource_list(resources: list[Resource], group_version: str) -> dict[str, Any]:
    """/api/v1 or /apis/<group>/<version>: an APIResourceList."""
    entries: list[dict[str, Any]] = []
    for res in resources:
        entries.append({"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                        "kind": res.kind, "verbs": VERBS, **({"shortNames": list(res.short_names)}
                                                             if res.short_names else {}),
                        **({"categories": list(res.categories)} if res.categories else {})})
        if res.status:
            entries.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                            "kind": res.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}


def group_list(resources: list[Resource]) -> dict[str, Any]:
    """/apis: every non-core group with its versions (the storage version preferred)."""
    groups: dict[str, list[Resource]] = {}
    for res in resources:
        if res.group:
            groups.setdefault(res.group, []).append(res)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group(name, members)
                                                                    for name, members in sorted(groups.items())]}


def group(name: str, members: list[Resource]) -> dict[str, Any]:
    versions = sorted({r.version for r in members}, key=lambda v: (v != "v1", v))
    preferred = next((r.version for r in members if r.storage), versions[0])
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name,
            "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{name}/{preferred}", "version": preferred}}


def _gv_path(res: Resource) -> str:
    return f"apis/{res.group}/{res.version}" if res.group else "api/v1"


def openapi_root(resources: list[Resource]) -> dict[str, Any]:
    """/openapi/v3: one document per group-version (kubectl reads it to learn that fieldValidation works)."""
    return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=test"}
                      for gv in sorted({_gv_path(r) for r in resources})}}


def openapi_document(resources: list[Resource], gv: str) -> dict[str, Any] | None:
    """A group-version's OpenAPI v3 document: each resource's PATCH operation with its query parameters."""
    members = [r for r in resources if _gv_path(r) == gv]
    if not members:
        return None
    params = [{"name": n, "in": "query", "schema": {"type": "string"}}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
    paths = {}
    for res in members:
        scope = "/namespaces/{namespace}" if res.namespaced else ""
        gvk = {"group": res.group, "version": res.version, "kind": res.kind}
        paths[f"/{gv}{scope}/{res.plural}/{{name}}"] = {
            "patch": {"operationId": f"patch{res.kind}", "parameters": params,
                      "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                      "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": paths,
            "components": {"schemas": {}}}
