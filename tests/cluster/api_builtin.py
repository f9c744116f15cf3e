"""Defaults and validation rules of the built-in kinds, the subset a controller's children run into.

The schemas say which fields exist; these rules say which values kube-apiserver accepts: object names
(RFC 1123), label syntax, pod templates (containers need a name and an image, mounts need their volume),
a StatefulSet's selector matching its template and the fields that may change after creation, a
Service's ports, core/v1 Event namespaces. Messages follow the real ones so a failing test reads the same.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.cluster.api_kinds import Resource
    from tests.cluster.api_rest import Rest

Errors = list[tuple[str, str]]

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_NAMES = {"services": "1035", "namespaces": "1123-label"}
PATH_NAMES = {"roles", "rolebindings", "clusterroles", "clusterrolebindings"}


def dns_subdomain(value: str, path: str) -> Errors:
    if len(value) > 253:
        return [(path, f'Invalid value: "{value}": must be no more than 253 characters')]
    if not re.fullmatch(_SUBDOMAIN, value):
        return [(path, f'Invalid value: "{value}": a lowercase RFC 1123 subdomain must consist of lower case '
                       "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
                       f"(e.g. 'example.com', regex used for validation is '{_SUBDOMAIN}')")]
    return []


def dns_label(value: str, path: str, rfc1035: bool = False) -> Errors:
    pattern, what = (_DNS1035, "RFC 1035 label") if rfc1035 else (_LABEL, "RFC 1123 label")
    if len(value) > 63 or not re.fullmatch(pattern, value):
        return [(path, f'Invalid value: "{value}": a lowercase {what} must consist of lower case alphanumeric '
                       "characters or '-', " + ("start with an alphabetic character, " if rfc1035 else "")
                       + "and end with an alphanumeric character, and must be no more than 63 characters "
                       f"(regex used for validation is '{pattern}')")]
    return []


def qualified_name(key: str, path: str) -> Errors:
    prefix, _, name = key.rpartition("/")
    errors = dns_subdomain(prefix, path) if prefix else []
    if len(name) > 63 or not re.fullmatch(_QUALIFIED, name):
        errors.append((path, f'Invalid value: "{key}": name part must consist of alphanumeric characters, \'-\', '
                             "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or "
                             f"'my.name',  or '123-abc', regex used for validation is '{_QUALIFIED}') and be at "
                             "most 63 characters"))
    return errors


def validate_meta(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> Errors:
    meta, errors = obj["metadata"], []
    name = meta.get("name", "")
    if res.plural in PATH_NAMES:
        if name in (".", "..") or "/" in name or "%" in name:
            errors.append(("metadata.name", f'Invalid value: "{name}": may not contain \'/\' or \'%\''))
    elif res.plural in LABEL_NAMES:
        errors += dns_label(name, "metadata.name", rfc1035=LABEL_NAMES[res.plural] == "1035")
    else:
        errors += dns_subdomain(name, "metadata.name")
    for key, value in (meta.get("labels") or {}).items():
        errors += qualified_name(key, "metadata.labels")
        if len(value) > 63 or (value and not re.fullmatch(_QUALIFIED, value)):
            errors.append(("metadata.labels", f'Invalid value: "{value}": a valid label must be an empty string or '
                                              "consist of alphanumeric characters, '-', '_' or '.', and must start "
                                              "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',"
                                              "  or '12345', regex used for validation is "
                                              f"'({_QUALIFIED})?') and be at most 63 characters"))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        errors += qualified_name(key.lower(), "metadata.annotations")
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        errors.append(("metadata.annotations", "Too long: must have at most 262144 bytes"))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for required in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(required):
                errors.append((f"metadata.ownerReferences[{i}].{required}", "Invalid value: \"\": "
                                                                            f"{required} must not be empty"))
    if sum(1 for r in meta.get("ownerReferences") or [] if r.get("controller")) > 1:
        errors.append(("metadata.ownerReferences", "Invalid value: only one reference can have Controller set to true"))
    return errors


def initial_status(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The status a built-in object is created with (status in a create request is ignored)."""
    if plural == "pods":
        return {"phase": "Pending", "qosClass": _qos(obj.get("spec") or {})}
    if plural == "statefulsets":
        return {"replicas": 0, "availableReplicas": 0}
    if plural == "persistentvolumeclaims":
        return {"phase": "Pending"}
    if plural == "services":
        return {"loadBalancer": {}}
    if plural == "namespaces":
        return {"phase": "Active"}
    return {}


def _qos(spec: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all({"cpu", "memory"} <= set(r.get("limits") or {})
                     and all((r.get("requests") or r.get("limits") or {}).get(k) == r["limits"][k]
                             for k in ("cpu", "memory")) for r in resources)
    return "Guaranteed" if guaranteed else "Burstable"


def seed_namespace(rest: Rest, namespace: str) -> None:
    """What the serviceaccount controller does for a new namespace: a `default` ServiceAccount."""
    sa = rest.find("", "v1", "serviceaccounts")
    rest.create(sa, namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})


# --- defaults ----------------------------------------------------------------------------------------------


def _default_pod_spec(spec: dict[str, Any]) -> None:
    for key, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"), ("schedulerName",
                       "default-scheduler"), ("terminationGracePeriodSeconds", 30), ("securityContext", {}),
                       ("enableServiceLinks", True)):
        spec.setdefault(key, value)
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        name = spec.get("serviceAccountName") or spec.get("serviceAccount")
        spec["serviceAccountName"] = spec["serviceAccount"] = name
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        image = str(container.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        latest = not tagged or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)


def default(plural: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec")
    if plural == "pods" and isinstance(spec, dict):
        _default_pod_spec(spec)
        if old is None:
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("serviceAccount", spec["serviceAccountName"])
    if plural in ("statefulsets", "deployments") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        template_spec = (spec.get("template") or {}).get("spec")
        if isinstance(template_spec, dict):
            _default_pod_spec(template_spec)
        if plural == "statefulsets":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
            spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
            for claim in spec.get("volumeClaimTemplates") or []:
                claim.setdefault("apiVersion", "v1")
                claim.setdefault("kind", "PersistentVolumeClaim")
                claim.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
        else:
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    if plural == "services" and isinstance(spec, dict):
        _default_service(spec, old)
    if plural == "persistentvolumeclaims" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    if plural == "secrets":
        obj.setdefault("type", "Opaque")


_next_ip = [10]


def _default_service(spec: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if old is not None:
        for kept in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if kept in (old.get("spec") or {}) and kept not in spec:
                spec[kept] = old["spec"][kept]
    if "clusterIP" not in spec:
        _next_ip[0] += 1
        spec["clusterIP"] = f"10.96.{_next_ip[0] // 250}.{_next_ip[0] % 250 + 1}"
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


# --- validation --------------------------------------------------------------------------------------------


_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "Ki": 2**10, "Mi": 2**20,
           "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "n": 1e-9, "u": 1e-6}


def quantity(value: Any) -> float | None:
    text = str(value)
    m = re.fullmatch(r"([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|[numkMGTP]|[eE][-+]?[0-9]+)?", text)
    if not m:
        return None
    number, suffix = float(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * 10 ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _pod_spec(spec: Any, path: str, template: bool) -> Errors:
    if not isinstance(spec, dict):
        return [(path, "Required value")]
    errors: Errors = []
    volumes = [v.get("name", "") for v in spec.get("volumes") or []]
    for i, name in enumerate(volumes):
        errors += dns_label(name, f"{path}.volumes[{i}].name")
        if name in volumes[:i]:
            errors.append((f"{path}.volumes[{i}].name", f'Duplicate value: "{name}"'))
    if not spec.get("containers"):
        errors.append((f"{path}.containers", "Required value"))
    names: list[str] = []
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            where = f"{path}.{group}[{i}]"
            errors += dns_label(c.get("name", ""), f"{where}.name") if c.get("name") else [(f"{where}.name",
                                                                                             "Required value")]
            if c.get("name") in names:
                errors.append((f"{where}.name", f'Duplicate value: "{c["name"]}"'))
            names.append(c.get("name", ""))
            if not c.get("image"):
                errors.append((f"{where}.image", "Required value"))
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    errors.append((f"{where}.volumeMounts[{j}].name", f'Not found: "{mount.get("name")}"'))
                if not mount.get("mountPath"):
                    errors.append((f"{where}.volumeMounts[{j}].mountPath", "Required value"))
            for j, port in enumerate(c.get("ports") or []):
                if not 0 < int(port.get("containerPort", 0)) < 65536:
                    errors.append((f"{where}.ports[{j}].containerPort", f"Invalid value: {port.get('containerPort')}:"
                                                                        " must be between 1 and 65535, inclusive"))
            for j, env in enumerate(c.get("env") or []):
                if not env.get("name"):
                    errors.append((f"{where}.env[{j}].name", "Required value"))
            errors += _resources(c.get("resources") or {}, f"{where}.resources")
    policy = spec.get("restartPolicy", "Always")
    if template and policy != "Always":
        errors.append((f"{path}.restartPolicy", f'Unsupported value: "{policy}": supported values: "Always"'))
    return errors


def _resources(resources: dict[str, Any], path: str) -> Errors:
    errors: Errors = []
    for part in ("limits", "requests"):
        for name, value in (resources.get(part) or {}).items():
            if quantity(value) is None:
                errors.append((f"{path}.{part}[{name}]", f'Invalid value: "{value}": quantities must match the '
                                                         "regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*"
                                                         "[-+]?[0-9]*)$'"))
    for name, request in (resources.get("requests") or {}).items():
        limit = (resources.get("limits") or {}).get(name)
        if limit is not None and (quantity(request) or 0) > (quantity(limit) or 0):
            errors.append((f"{path}.requests", f'Invalid value: "{request}": must be less than or equal to {name} '
                                               "limit of " + str(limit)))
    return errors


def _selector_matches(spec: dict[str, Any], path: str) -> Errors:
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return [(f"{path}.selector", "Required value")]
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return [(f"{path}.template.metadata.labels", f"Invalid value: {labels!r}: `selector` does not match "
                                                     "template `labels`")]
    return []


_STS_MUTABLE = {"replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds", "revisionHistoryLimit"}


def validate(plural: str, obj: dict[str, Any], old: dict[str, Any] | None) -> Errors:
    spec, errors = obj.get("spec"), []
    old_spec = (old or {}).get("spec") or {}
    if plural == "pods":
        errors += _pod_spec(spec, "spec", template=False)
        if isinstance(spec, dict) and spec.get("nodeName") and spec.get("schedulingGates"):
            errors.append(("spec.nodeName", "Forbidden: cannot be set until all schedulingGates have been removed"))
        if old is not None and isinstance(spec, dict):
            errors += _pod_update(spec, old_spec)
    elif plural in ("statefulsets", "deployments"):
        if not isinstance(spec, dict):
            return [("spec", "Required value")]
        errors += _selector_matches(spec, "spec")
        template_spec = (spec.get("template") or {}).get("spec")
        if plural == "statefulsets" and isinstance(template_spec, dict) and spec.get("volumeClaimTemplates"):
            # The pods' volumes are the template's plus one per claim template (what the StatefulSet controller
            # adds); kube-apiserver does not check a StatefulSet's mounts at all, so this is still stricter.
            claims = [{"name": c.get("metadata", {}).get("name", "")} for c in spec["volumeClaimTemplates"]]
            template_spec = {**template_spec, "volumes": [*(template_spec.get("volumes") or []), *claims]}
        errors += _pod_spec(template_spec, "spec.template.spec", template=True)
        if (spec.get("replicas") or 0) < 0:
            errors.append(("spec.replicas", f"Invalid value: {spec['replicas']}: must be greater than or equal to 0"))
        if old is not None and spec.get("selector") != old_spec.get("selector"):
            errors.append(("spec.selector", f"Invalid value: {spec.get('selector')!r}: field is immutable"))
        if plural == "statefulsets" and old is not None:
            changed = {k for k in set(spec) | set(old_spec) if spec.get(k) != old_spec.get(k)} - _STS_MUTABLE
            if changed:
                errors.append(("spec", "Forbidden: updates to statefulset spec for fields other than 'replicas', "
                                       "'ordinals', 'template', 'updateStrategy', "
                                       "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
    elif plural == "services" and isinstance(spec, dict):
        errors += _service(spec, old_spec if old is not None else None)
    elif plural in ("configmaps", "secrets"):
        errors += _data(plural, obj, old)
    elif plural == "persistentvolumeclaims" and isinstance(spec, dict):
        if not spec.get("accessModes"):
            errors.append(("spec.accessModes", "Required value: at least 1 access mode is required"))
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
            errors.append(("spec.resources[storage]", "Required value"))
        if old is not None:
            def fixed(s: dict[str, Any]) -> dict[str, Any]:
                return {k: v for k, v in s.items() if k not in ("resources", "volumeAttributesClassName",
                                                                "volumeName")}
            if fixed(spec) != fixed(old_spec):
                errors.append(("spec", "Forbidden: spec is immutable after creation except resources.requests and "
                                       "volumeAttributesClassName for bound claims"))
    elif plural == "events":
        errors += _event(obj)
    return errors


def _pod_update(spec: dict[str, Any], old_spec: dict[str, Any]) -> Errors:
    """What a pod update may change: images, activeDeadlineSeconds, tolerations, nodeName once (binding), and
    scheduling gates, which may only go (Kueue removes its gate on admission; none may be added)."""
    old_gates = [g.get("name") for g in old_spec.get("schedulingGates") or []]
    for gate in spec.get("schedulingGates") or []:
        if gate.get("name") not in old_gates:
            return [("spec.schedulingGates", f"Forbidden: only deletion is allowed, but found new scheduling gate "
                                             f"'{gate.get('name')}'")]

    def mutable_stripped(s: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in s.items()
               if k not in ("activeDeadlineSeconds", "tolerations", "nodeName", "schedulingGates")}
        for group in ("containers", "initContainers"):
            if group in out:
                out[group] = [{k: v for k, v in c.items() if k != "image"} for c in out[group]]
        return out
    if mutable_stripped(spec) != mutable_stripped(old_spec):
        return [("spec", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                         "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                         "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                         "set to 1 if it was previously negative)")]
    if old_spec.get("nodeName") and spec.get("nodeName") != old_spec.get("nodeName"):
        return [("spec.nodeName", "Forbidden: pod updates may not change nodeName")]
    return []


def _service(spec: dict[str, Any], old_spec: dict[str, Any] | None) -> Errors:
    errors: Errors = []
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and spec.get("type") != "ExternalName":
        errors.append(("spec.ports", "Required value"))
    names = [p.get("name", "") for p in ports]
    for i, port in enumerate(ports):
        if len(ports) > 1 and not port.get("name"):
            errors.append((f"spec.ports[{i}].name", "Required value"))
        elif port.get("name") in names[:i]:
            errors.append((f"spec.ports[{i}].name", f'Duplicate value: "{port["name"]}"'))
        if not 0 < int(port.get("port", 0)) < 65536:
            errors.append((f"spec.ports[{i}].port", f"Invalid value: {port.get('port')}: must be between 1 and "
                                                    "65535, inclusive"))
    if old_spec is not None and old_spec.get("clusterIP") and spec.get("clusterIP") != old_spec.get("clusterIP"):
        errors.append(("spec.clusterIPs[0]", f'Invalid value: ["{spec.get("clusterIP")}"]: may not change once set'))
    return errors


def _data(plural: str, obj: dict[str, Any], old: dict[str, Any] | None) -> Errors:
    errors: Errors = []
    for field in ("data", "stringData", "binaryData"):
        for key, value in (obj.get(field) or {}).items():
            if not re.fullmatch(r"[-._a-zA-Z0-9]+", key) or len(key) > 253:
                errors.append((f"{field}[{key}]", f'Invalid value: "{key}": a valid config key must consist of '
                                                  "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                                                  "'KEY_NAME',  or 'key-name', regex used for validation is "
                                                  "'[-._a-zA-Z0-9]+')"))
            if (plural == "secrets" and field == "data") or field == "binaryData":
                try:
                    base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    errors.append((f"{field}[{key}]", "Invalid value: illegal base64 data"))
    size = sum(len(str(v)) for f in ("data", "binaryData") for v in (obj.get(f) or {}).values())
    if size > 1024 * 1024:
        errors.append(("data", f"Too long: must have at most 1048576 bytes, got {size}"))
    if old is not None and old.get("immutable") and any(obj.get(f) != old.get(f) for f in ("data", "binaryData",
                                                                                             "immutable")):
        errors.append(("data", "Forbidden: field is immutable when `immutable` is set"))
    return errors


def _event(event: dict[str, Any]) -> Errors:
    """legacyValidateEvent: the checks a core/v1 Event create gets."""
    errors: Errors = []
    ns, involved = event["metadata"].get("namespace", ""), event.get("involvedObject") or {}
    if not event.get("eventTime"):
        if involved.get("namespace", "") == "":
            if ns not in ("", "default"):
                errors.append(("involvedObject.namespace", 'Invalid value: "": does not match event.namespace'))
        elif involved["namespace"] != ns:
            errors.append(("involvedObject.namespace", f'Invalid value: "{involved["namespace"]}": does not match '
                                                       "event.namespace"))
    else:
        for field in ("reportingComponent", "reportingInstance", "action", "reason"):
            if not event.get(field):
                errors.append((field, "Required value"))
        if event.get("reportingComponent"):
            errors += qualified_name(event["reportingComponent"], "reportingComponent")
    return errors
