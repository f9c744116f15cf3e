"""Server-side printing of the built-in kinds users list: the columns and cells of kube-apiserver's Table
(kubernetes pkg/printers/internalversion/printers.go), which `kubectl get` shows as they come.

Data flow: `api_select.table` asks `columns(plural)` for a built-in kind's column definitions and `cells(plural,
obj)` for each row. The server always prints wide (priority-1 columns included; kubectl hides them without
`-o wide`). Kinds not here get NAME and AGE, as CRDs without printer columns do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.cluster import api_select

Obj = dict[str, Any]
ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}


def _col(name: str, description: str, priority: int = 0, format_: str = "") -> Obj:
    return {"name": name, "type": "string", "format": format_, "priority": priority, "description": description}


NAME = _col("Name", "Name must be unique within a namespace.", format_="name")
AGE = _col("Age", "CreationTimestamp is the server time when this object was created.")

COLUMNS: dict[str, list[Obj]] = {
    "events": [_col("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
               _col("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
               _col("Reason", "This should be a short, machine understandable string that gives the reason for the "
                              "transition into the object's current status."),
               _col("Object", "The object that this event is about."),
               _col("Subobject", "If referring to a piece of an object instead of an entire object, this string "
                                 "should contain a valid JSON/Go-field access statement", 1),
               _col("Source", "The component reporting this event.", 1),
               _col("Message", "A human-readable description of the status of this operation."),
               _col("First Seen", "The time at which the event was first recorded.", 1),
               _col("Count", "The number of times this event has occurred.", 1),
               {**NAME, "priority": 1}],
    "services": [NAME, _col("Type", "type determines how the Service is exposed."),
                 _col("Cluster-IP", "clusterIP is the IP address of the service."),
                 _col("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster will "
                                     "also accept traffic for this service."),
                 _col("Port(s)", "The list of ports that are exposed by this service."), AGE,
                 _col("Selector", "Route service traffic to pods with label keys and values matching this "
                                  "selector.", 1)],
    "statefulsets": [NAME, _col("Ready", "Number of the pod with ready state"), AGE,
                     _col("Containers", "Names of each container in the template.", 1),
                     _col("Images", "Images referenced by each container in the template.", 1)],
    "persistentvolumeclaims": [NAME, _col("Status", "phase represents the current phase of PersistentVolumeClaim."),
                               _col("Volume", "volumeName is the binding reference to the PersistentVolume backing "
                                              "this claim."),
                               _col("Capacity", "capacity represents the actual resources of the underlying "
                                                "volume."),
                               _col("Access Modes", "accessModes contains the actual access modes the volume "
                                                    "backing the PVC has."),
                               _col("StorageClass", "StorageClass of the pvc"),
                               _col("VolumeAttributesClass", "VolumeAttributesClass of the pvc"), AGE,
                               _col("VolumeMode", "volumeMode defines what type of volume is required by the "
                                                  "claim.", 1)],
}


def _since(timestamp: Any) -> str:
    return api_select.human_age(timestamp) if isinstance(timestamp, str) and timestamp else "<unknown>"


def _labels(selector: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items())) or "<none>"


def _event(obj: Obj) -> list[Any]:
    involved, source = obj.get("involvedObject") or {}, obj.get("source") or {}
    first = _since(obj.get("firstTimestamp") or obj.get("eventTime"))
    last = _since(obj["lastTimestamp"]) if obj.get("lastTimestamp") else first
    count = int(obj.get("count") or 1)
    series = obj.get("series")
    if series:
        last, count = _since(series.get("lastObservedTime")), int(series.get("count") or count)
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    component = source.get("component") or obj.get("reportingComponent") or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    src = ", ".join(p for p in (component, instance) if p) if component else ""
    return [last, obj.get("type", ""), obj.get("reason", ""), target, involved.get("fieldPath", ""), src,
            str(obj.get("message") or "").strip(), first, count, obj["metadata"]["name"]]


def _service(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    external = ",".join(spec.get("externalIPs") or []) or "<none>"
    if spec.get("type") == "ExternalName":
        external = spec.get("externalName") or "<none>"
    ports = ",".join(f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}" if p.get("nodePort")
                     else f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    return [obj["metadata"]["name"], spec.get("type", "ClusterIP"), ips[0] if ips else "<none>", external, ports,
            _since(obj["metadata"].get("creationTimestamp")), _labels(spec.get("selector"))]


def _statefulset(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [obj["metadata"]["name"], f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas', 1))}",
            _since(obj["metadata"].get("creationTimestamp")), ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers)]


def _claim(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    phase = "Terminating" if obj["metadata"].get("deletionTimestamp") else status.get("phase", "")
    capacity = modes = ""
    if spec.get("volumeName"):  # a bound claim shows what its volume gives
        capacity = str((status.get("capacity") or {}).get("storage", ""))
        modes = ",".join(ACCESS_MODES.get(m, m) for m in status.get("accessModes") or [])
    return [obj["metadata"]["name"], phase, spec.get("volumeName", ""), capacity, modes,
            spec.get("storageClassName") or "", spec.get("volumeAttributesClassName") or "<unset>",
            _since(obj["metadata"].get("creationTimestamp")), spec.get("volumeMode") or "<unset>"]


CELLS: dict[str, Callable[[Obj], list[Any]]] = {"events": _event, "services": _service,
                                                 "statefulsets": _statefulset, "persistentvolumeclaims": _claim}
