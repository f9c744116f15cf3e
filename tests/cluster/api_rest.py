"""REST semantics of one resource: create, read, update, patch, delete, as kube-apiserver's registry does.

The write path mirrors the real one: decode (unknown fields, types) -> defaults -> status/spec separation
-> generation -> validation -> optimistic concurrency -> store. Errors are `ApiError`s that the HTTP layer
renders as `Status` objects. CRDs are handled here too: creating one serves its resources at once.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from typing import Any

from tests.cluster import api_builtin, api_kinds, api_patch, api_schema, api_select, api_store
from tests.cluster.api_kinds import Resource

GENERATION = {"pods", "statefulsets", "deployments", "poddisruptionbudgets", "customresourcedefinitions",
              "networkpolicies"}
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, **({"details": self.details} if self.details else {}), "code": self.code}


def qualified(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(res)} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(res)} "{name}": the object has '
                                     "been modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": res.group, "kind": res.plural})


def invalid(res: Resource, name: str, errors: list[tuple[str, str]]) -> ApiError:
    text = [f"{path}: {message}" for path, message in errors]
    joined = text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    causes = [{"reason": "FieldValueInvalid", "message": m, "field": p} for p, m in errors]
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {joined}',
                    {"name": name, "group": res.group, "kind": res.kind, "causes": causes})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


class Rest:
    def __init__(self, store: api_store.Store, auto_namespaces: bool, graceful_pods: bool) -> None:
        self.store = store
        self.auto_namespaces, self.graceful_pods = auto_namespaces, graceful_pods
        self.lock = threading.RLock()  # one writer at a time: read-modify-write stays atomic
        self.resources: dict[tuple[str, str, str], Resource] = {}
        for res in api_kinds.BUILTINS:
            self.resources[(res.group, res.version, res.plural)] = res
        self.ns_res = self.find("", "v1", "namespaces")

    # --- the registry ---------------------------------------------------------------------------------

    def find(self, group: str, version: str, plural: str) -> Resource:
        res = self.resources.get((group, version, plural))
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res

    def by_kind(self, api_version: str, kind: str) -> Resource:
        group, _, version = api_version.rpartition("/")
        for res in self.resources.values():
            if res.group == group and res.version == version and res.kind == kind:
                return res
        raise KeyError(f"{api_version} {kind} is not served")

    def storage(self, key: api_store.Key) -> Resource | None:
        """The resource through which objects of `key` are deleted (its storage version)."""
        members = [r for r in self.resources.values() if r.key == key]
        return next((r for r in members if r.storage), members[0] if members else None)

    def served(self) -> list[Resource]:
        return list(self.resources.values())

    # --- reading ----------------------------------------------------------------------------------------

    def output(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as this version serves it (custom resources are defaulted on read too)."""
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = res.api_version, res.kind
        if res.custom:
            out = api_schema.normalize_numbers(api_schema.apply_defaults(out, res.schema))
        return dict(out)

    def get(self, res: Resource, ns: str, name: str) -> dict[str, Any]:
        obj = self.store.get(res.key, ns, name)
        if obj is None:
            raise not_found(res, name)
        return self.output(res, obj)

    def select(self, res: Resource, ns: str | None, labels: str = "", fields: str = "") -> list[dict[str, Any]]:
        match = self.matcher(res, labels, fields)
        return [self.output(res, o) for o in self.store.items(res.key, ns) if match(o)]

    def matcher(self, res: Resource, labels: str, fields: str) -> api_select.Match:
        try:
            by_label = api_select.label_selector(labels)
            by_field = api_select.field_selector(fields, res.plural if not res.custom else "")
        except api_select.SelectorError as exc:
            raise bad_request(str(exc)) from exc
        return lambda obj: by_label(obj) and by_field(obj)

    # --- decoding ---------------------------------------------------------------------------------------

    def decode(self, res: Resource, body: Any, validation: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request was in an unknown format - expected an object, got "
                              f"{api_schema.json_type(body)}")
        body = copy.deepcopy(body)
        if body.get("kind") and body["kind"] != res.kind:
            raise bad_request(f"the kind in the data ({body['kind']}) does not match the expected kind ({res.kind})")
        if body.get("apiVersion") and body["apiVersion"] != res.api_version:
            raise bad_request(f"the API version in the data ({body['apiVersion']}) does not match the expected API "
                              f"version ({res.api_version})")
        # kube-apiserver decodes a body with the endpoint's group/version/kind as the default: clients such as
        # the official python client's typed API (e.g. its LeaseLock) send objects without apiVersion and kind.
        body.setdefault("kind", res.kind)
        body.setdefault("apiVersion", res.api_version)
        strict = validation in ("Strict", "")  # built-ins: stricter than the real default (Warn)
        header = f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}'
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request(f"{header}: json: cannot unmarshal {api_schema.json_type(meta)} into Go struct field "
                              f"{res.kind}.metadata of type v1.ObjectMeta")
        if res.custom:
            body = api_schema.normalize_numbers(body)
            found = api_schema.decode_builtin(body["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                                              drop_unknown=validation != "Strict")
            unknown = ["metadata." + u for u in found.unknown] + api_schema.prune(body, res.schema)
            if validation == "Strict" and unknown:
                raise bad_request(f"{header}: strict decoding error: "
                                  + ", ".join(f'unknown field "{u}"' for u in unknown))
            if found.type_errors:
                raise bad_request(f"{header}: json: {found.type_errors[0]}")
            return body
        found = api_schema.decode_builtin(body, res.definition, drop_unknown=not strict)
        if found.type_errors:
            raise bad_request(f"{header}: json: {found.type_errors[0]}")
        if strict and found.unknown:
            raise bad_request(f"{header}: strict decoding error: " + ", ".join(f'unknown field "{u}"'
                                                                              for u in found.unknown))
        return body

    # --- writing ----------------------------------------------------------------------------------------

    def ensure_namespace(self, ns: str) -> None:
        if self.store.get(self.ns_res.key, "", ns) is not None:
            return
        if not self.auto_namespaces:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        self.create(self.ns_res, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    def create(self, res: Resource, ns: str, body: Any, validation: str = "") -> dict[str, Any]:
        obj = self.decode(res, body, validation)
        meta = obj["metadata"]
        if res.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(res, "", [("metadata.name", "Required value: name or generateName is required")])
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        with self.lock:
            if res.namespaced:
                self.ensure_namespace(ns)
            if self.store.get(res.key, meta.get("namespace", ""), meta["name"]) is not None:
                raise ApiError(409, "AlreadyExists", f'{qualified(res)} "{meta["name"]}" already exists',
                               {"name": meta["name"], "group": res.group, "kind": res.plural})
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=api_schema.now())
            for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
                meta.pop(transient, None)
            if res.plural in GENERATION or res.custom:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            if res.status:
                obj.pop("status", None)
                if not res.custom:
                    obj["status"] = api_builtin.initial_status(res.plural, obj)
            self.admit(res, obj, None)
            if res.plural == "pods":
                self.check_service_account(obj)
            stored = self.store.put(res.key, obj, "ADDED")
            if res.key == CRD_KEY:
                stored = self.establish(stored)
            if res.plural == "namespaces":
                api_builtin.seed_namespace(self, meta["name"])
            return self.output(res, stored)

    def check_service_account(self, pod: dict[str, Any]) -> None:
        """The ServiceAccount admission plugin: a pod runs as an existing ServiceAccount of its namespace."""
        ns, name = pod["metadata"]["namespace"], pod["spec"].get("serviceAccountName", "default")
        if self.store.get(("", "serviceaccounts"), ns, name) is None:
            raise ApiError(403, "Forbidden", f'pods "{pod["metadata"]["name"]}" is forbidden: error looking up '
                                             f'service account {ns}/{name}: serviceaccount "{name}" not found')

    def admit(self, res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Defaults and validation, built-in or from the CRD schema; raises 422 Invalid."""
        name = obj["metadata"].get("name", "")
        errors = api_builtin.validate_meta(res, obj, old)
        if res.custom:
            obj.update(api_schema.normalize_numbers(api_schema.apply_defaults(obj, res.schema)))
            errors += api_schema.validate(obj, res.schema, old)
        else:
            api_builtin.default(res.plural, obj, old)
            errors += api_builtin.validate(res.plural, obj, old)
            if res.key == CRD_KEY:
                errors += self.validate_crd(obj, old)
        if errors:
            raise invalid(res, name, errors)

    def update(self, res: Resource, ns: str, name: str, body: Any, sub: str = "", validation: str = "",
               check_rv: bool = True) -> dict[str, Any]:
        obj = self.decode(res, body, validation)
        meta = obj["metadata"]
        if meta.get("name") not in (None, name):
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if res.namespaced and meta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        with self.lock:
            old = self.store.get(res.key, ns if res.namespaced else "", name)
            if old is None:
                raise not_found(res, name)
            if check_rv and meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"][
                    "resourceVersion"]:
                raise conflict(res, name)
            if check_rv and not meta.get("resourceVersion") and (res.custom or res.key == CRD_KEY):
                raise invalid(res, name, [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for "
                                                                       "an update")])
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {meta['uid']}, UID in "
                                                f"object meta: {old['metadata']['uid']}")
            if sub == "status":  # /status writes change nothing but .status
                new = copy.deepcopy(old)
                new["status"] = obj.get("status")
                if new["status"] is None:
                    new.pop("status")
            else:
                new = obj
                if res.status:
                    new.pop("status", None)
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                for kept in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                             "generation", "namespace"):
                    if kept in old["metadata"]:
                        new["metadata"][kept] = old["metadata"][kept]
                    else:
                        new["metadata"].pop(kept, None)
            new["metadata"]["name"] = name
            self.admit(res, new, copy.deepcopy(old))
            if "generation" in old["metadata"] and _spec(new) != _spec(old):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            if old["metadata"].get("deletionTimestamp"):
                added = set(new["metadata"].get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise invalid(res, name, [("metadata.finalizers", "Forbidden: no new finalizers can be added "
                                                                      "if the object is being deleted")])
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if _same(new, old):
                return self.output(res, old)
            stored = self.store.put(res.key, new, "MODIFIED")
            if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers"):
                self.store.remove(res.key, meta_ns(stored), name)
            if res.key == CRD_KEY and sub != "status":
                stored = self.establish(stored)
            return self.output(res, stored)

    def patch(self, res: Resource, ns: str, name: str, body: Any, content_type: str, sub: str = "",
              validation: str = "") -> dict[str, Any]:
        with self.lock:
            current = self.get(res, ns, name)
            try:
                if content_type == "application/merge-patch+json":
                    if not isinstance(body, dict):
                        raise api_patch.PatchError("a merge patch must be a JSON object")
                    patched = api_patch.merge_patch(current, body)
                elif content_type == "application/json-patch+json":
                    patched = api_patch.json_patch(current, body)
                elif content_type == "application/strategic-merge-patch+json" and not res.custom:
                    patched = api_patch.strategic_merge(current, body, {"$ref": "#/$defs/" + res.definition},
                                                        api_schema.resolve)
                else:
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                                "accepted media types include: application/json-patch+"
                                                                "json, application/merge-patch+json"
                                                                + ("" if res.custom else
                                                                   ", application/strategic-merge-patch+json"))
            except api_patch.PatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
            meta = patched.get("metadata") if isinstance(patched, dict) else None
            if isinstance(meta, dict):
                wanted = meta.get("resourceVersion")
                if wanted and wanted != current["metadata"]["resourceVersion"]:
                    raise conflict(res, name)
            return self.update(res, ns, name, patched, sub, validation, check_rv=False)

    def delete(self, res: Resource, ns: str, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """As kube-apiserver's registry: the garbage collector's finalizers are set from the propagation policy
        (`orphan`, `foregroundDeletion`; a background delete removes the object now and leaves its dependents to
        the collector), an object with finalizers or a pod on a node with grace only gets a deletionTimestamp."""
        options = options or {}
        with self.lock:
            obj = self.store.get(res.key, ns, name)
            if obj is None:
                raise not_found(res, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                                f"object meta: {obj['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            meta = obj["metadata"]
            finalizers = gc_finalizers(meta.get("finalizers") or [], options)
            grace = options.get("gracePeriodSeconds")
            if meta.get("deletionTimestamp"):  # deleting already: a new policy or the kubelet's confirmation
                new = copy.deepcopy(obj)
                new["metadata"]["finalizers"] = finalizers
                if res.plural == "pods" and grace == 0:
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                if finalizers or new["metadata"].get("deletionGracePeriodSeconds"):
                    if not finalizers:
                        new["metadata"].pop("finalizers", None)
                    if new == obj:
                        return self.output(res, obj)
                    return self.output(res, self.store.put(res.key, new, "MODIFIED"))
            else:
                pod_grace = (res.plural == "pods" and self.graceful_pods and obj.get("spec", {}).get("nodeName")
                             and grace != 0)
                if finalizers or pod_grace:
                    marked = copy.deepcopy(obj)
                    marked["metadata"]["deletionTimestamp"] = api_schema.now()
                    marked["metadata"]["deletionGracePeriodSeconds"] = (
                        (grace if grace is not None else obj["spec"].get("terminationGracePeriodSeconds", 30))
                        if pod_grace else 0)
                    if finalizers:
                        marked["metadata"]["finalizers"] = finalizers
                    return self.output(res, self.store.put(res.key, marked, "MODIFIED"))
            if res.plural == "namespaces":
                for key in list(self.store.objects):
                    owner = self.storage(key)
                    for child in self.store.items(key, name) if owner and owner.namespaced else []:
                        self.store.remove(key, name, child["metadata"]["name"])
            if res.key == CRD_KEY:
                self.unserve(obj)
            gone = self.store.remove(res.key, ns, name)
            assert gone is not None
            if res.plural == "pods":
                return self.output(res, gone)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": res.group, "kind": res.plural, "uid": gone["metadata"]["uid"]}}

    def drop_finalizer(self, res: Resource, obj: dict[str, Any], finalizer: str) -> None:
        """What the garbage collector does once its work for `obj` is done; a deleting object then goes, unless
        other finalizers hold it or it is a pod whose kubelet has not confirmed yet."""
        with self.lock:
            ns, name = meta_ns(obj), obj["metadata"]["name"]
            current = self.store.get(res.key, ns, name)
            if current is None or current["metadata"]["uid"] != obj["metadata"]["uid"]:
                return
            new = copy.deepcopy(current)
            left = [f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
            new["metadata"]["finalizers"] = left
            if not left:
                del new["metadata"]["finalizers"]
            stored = self.store.put(res.key, new, "MODIFIED")
            if stored["metadata"].get("deletionTimestamp") and not left and \
                    not stored["metadata"].get("deletionGracePeriodSeconds"):
                self.store.remove(res.key, ns, name)

    def orphan(self, uid: str) -> None:
        for key, dep in self.store.dependents(uid):
            dep["metadata"]["ownerReferences"] = [r for r in dep["metadata"]["ownerReferences"] if r.get("uid") != uid]
            if not dep["metadata"]["ownerReferences"]:
                del dep["metadata"]["ownerReferences"]
            self.store.put(key, dep, "MODIFIED")

    # --- CustomResourceDefinitions ------------------------------------------------------------------------

    def validate_crd(self, crd: dict[str, Any], old: dict[str, Any] | None) -> list[tuple[str, str]]:
        spec, errors = crd.get("spec") or {}, []
        names = spec.get("names") or {}
        if crd["metadata"]["name"] != f"{names.get('plural')}.{spec.get('group')}":
            errors.append(("metadata.name", f"Invalid value: \"{crd['metadata']['name']}\": must be spec.names.plural"
                                            f"+\".\"+spec.group"))
        versions = spec.get("versions") or []
        if sum(1 for v in versions if v.get("storage")) != 1:
            errors.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
        for i, version in enumerate(versions):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                errors.append((f"spec.versions[{i}].schema.openAPIV3Schema", "Required value: schemas are required"))
            else:
                errors += api_schema.structural_errors(schema, f"spec.versions[{i}].schema.openAPIV3Schema")
        for res in self.resources.values():
            if res.key == (spec.get("group"), names.get("plural")) and res.crd != crd["metadata"]["name"]:
                errors.append(("spec.names.plural", f"Invalid value: \"{names.get('plural')}\": already served"))
        if old is not None and old["spec"].get("scope") != spec.get("scope"):
            errors.append(("spec.scope", "Invalid value: field is immutable"))
        return errors

    def establish(self, crd: dict[str, Any]) -> dict[str, Any]:
        """What apiextensions' controllers do: accept the names, serve the versions, mark it Established."""
        self.unserve(crd, keep_objects=True)
        for res in api_kinds.from_crd(crd):
            self.resources[(res.group, res.version, res.plural)] = res
        before = {c["type"]: c for c in (crd.get("status") or {}).get("conditions") or []}
        now = api_schema.now()
        status = copy.deepcopy(crd)
        status["status"] = {
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": sorted({v["name"] for v in crd["spec"]["versions"] if v.get("storage")}
                                     | set((crd.get("status") or {}).get("storedVersions") or [])),
            "conditions": [{"type": t, "status": "True", "reason": r, "message": m,
                            "lastTransitionTime": before.get(t, {}).get("lastTransitionTime", now)}
                           for t, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                           ("Established", "InitialNamesAccepted", "the initial names have been "
                                                                                   "accepted"))]}
        if status.get("status") == crd.get("status"):
            return crd
        return self.store.put(CRD_KEY, status, "MODIFIED")

    def unserve(self, crd: dict[str, Any], keep_objects: bool = False) -> None:
        served = [k for k, r in self.resources.items() if r.crd == crd["metadata"]["name"]]
        if not keep_objects and served:
            res = self.resources[served[0]]
            for obj in self.store.items(res.key):
                self.store.remove(res.key, meta_ns(obj), obj["metadata"]["name"])
        for k in served:
            del self.resources[k]


GC_FINALIZERS = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}


def gc_finalizers(finalizers: list[str], options: dict[str, Any]) -> list[str]:
    """The object's finalizers once a delete with `options` has set the garbage collector's own (as
    kube-apiserver's deletionFinalizersForGarbageCollection): no policy asked keeps what is there."""
    policy, orphan = options.get("propagationPolicy"), options.get("orphanDependents")
    if policy is not None and orphan is not None:
        raise ApiError(422, "Invalid", "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: "
                                       f"\"{policy}\": orphanDependents and deletionPropagation cannot be both set")
    if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
        raise ApiError(422, "Invalid", "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported "
                                       f"value: \"{policy}\": supported values: \"Foreground\", \"Background\", "
                                       "\"Orphan\", \"nil\"")
    if policy is None and orphan is not None:
        policy = "Orphan" if orphan else "Background"
    if policy is None:
        return list(finalizers)
    kept = [f for f in finalizers if f not in GC_FINALIZERS.values()]
    return kept + ([GC_FINALIZERS[policy]] if policy in GC_FINALIZERS else [])


def meta_ns(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace", ""))


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    def strip(o: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
    return strip(new) == strip(old)
