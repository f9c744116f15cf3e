"""What lists, watches and `kubectl get` read through: label and field selectors, JSONPath, Tables.

Selectors filter the store's objects for list, watch and deletecollection; a selector the real server
cannot parse (or a field it does not index) is a 400 here too. Tables are the server-side printing that
`kubectl get` asks for (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): a CRD's
additionalPrinterColumns evaluated with the JSONPath subset they use, NAME/AGE for the rest.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

Match = Callable[[dict[str, Any]], bool]


class SelectorError(ValueError):
    """The selector does not parse (400 BadRequest)."""


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector(selector: str) -> Match:
    """Parse a label selector: =, ==, !=, in, notin, exists, !key, gt, lt."""
    tests: list[Match] = []
    for req in _split(selector):
        set_match = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", req)
        if set_match:
            key, op, raw = set_match.groups()
            values = {v.strip() for v in raw.split(",") if v.strip()}
            tests.append(_set_test(_check_key(key, req), op == "in", values))
            continue
        eq = re.fullmatch(r"([^=!<>\s]+)\s*(==|=|!=|<|>)\s*([^=!<>\s]*)", req)
        if eq:
            key, op, value = eq.groups()
            tests.append(_eq_test(_check_key(key, req), op, value))
        elif re.fullmatch(r"!\s*\S+", req):
            tests.append(_exists_test(_check_key(req[1:].strip(), req), False))
        elif " " not in req:
            tests.append(_exists_test(_check_key(req, req), True))
        else:
            raise SelectorError(f"unable to parse requirement: {req!r}")

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in tests)
    return match


def _check_key(key: str, req: str) -> str:
    if not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise SelectorError(f"unable to parse requirement: {req!r}: invalid label key {key!r}")
    return key


def _exists_test(key: str, present: bool) -> Match:
    return lambda labels: (key in labels) == present


def _set_test(key: str, inside: bool, values: set[str]) -> Match:
    if inside:
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def _eq_test(key: str, op: str, value: str) -> Match:
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if not value.lstrip("-").isdigit():
        raise SelectorError("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer")
    bound = int(value)

    def compare(labels: dict[str, str]) -> bool:
        raw = labels.get(key)
        if raw is None or not raw.lstrip("-").isdigit():
            return False
        return int(raw) > bound if op == ">" else int(raw) < bound
    return compare


FIELDS: dict[str, set[str]] = {
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type"},
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "secrets": {"type"}, "namespaces": {"status.phase"}, "nodes": {"spec.unschedulable"},
}


def field_value(obj: dict[str, Any], field: str) -> str:
    if field == "source":
        field = "source.component"
    value: Any = obj
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _field_test(field: str, value: str, equal: bool) -> Match:
    return lambda obj: (field_value(obj, field) == value) == equal


def field_selector(selector: str, plural: str) -> Match:
    """Parse a field selector over the fields kube-apiserver indexes for `plural`."""
    allowed = {"metadata.name", "metadata.namespace"} | FIELDS.get(plural, set())
    tests: list[Match] = []
    for req in _split(selector):
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", req)
        if not m:
            raise SelectorError(f"invalid selector: {req!r}; can't understand {req!r}")
        field, op, value = m.groups()
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        tests.append(_field_test(field, value, op != "!="))
    return lambda obj: all(test(obj) for test in tests)


def jsonpath(obj: Any, expr: str) -> list[Any]:
    """The JSONPath subset of printer columns: `.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`, `{...}` braces."""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    tokens = re.findall(r"\.([A-Za-z0-9_\-/]+)|\[(\*|-?\d+)\]|\[\?\(@\.([A-Za-z0-9_.]+)\s*==\s*[\"']([^\"']*)[\"']\)\]",
                        expr)
    values = [obj]
    for name, index, filter_key, filter_value in tokens:
        nxt: list[Any] = []
        for value in values:
            if name and isinstance(value, dict) and name in value:
                nxt.append(value[name])
            elif index == "*" and isinstance(value, list):
                nxt.extend(value)
            elif index and isinstance(value, list) and -len(value) <= int(index) < len(value):
                nxt.append(value[int(index)])
            elif filter_key and isinstance(value, list):
                nxt.extend(v for v in value if isinstance(v, dict) and field_value(v, filter_key) == filter_value)
        values = nxt
    return values


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """kube's duration.HumanDuration of the time since `timestamp` (as date columns show it)."""
    if not timestamp:
        return "<unknown>"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    seconds = max(0, int((now - parse_time(timestamp)).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace."}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "priority": 0,
              "description": "CreationTimestamp is the server time when this object was created."}


def _pod_cells(pod: dict[str, Any]) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for s in statuses:
        state = s.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated.get("reason"):
            reason = terminated["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    return [f"{ready}/{len(spec.get('containers') or [])}", reason, restarts,
            human_age(pod["metadata"].get("creationTimestamp")), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>"]


POD_COLUMNS = [
    {"name": "Ready", "type": "string", "format": "", "priority": 0, "description": "ready/total containers"},
    {"name": "Status", "type": "string", "format": "", "priority": 0, "description": "phase or reason"},
    {"name": "Restarts", "type": "string", "format": "", "priority": 0, "description": "restarts"},
    {"name": "Age", "type": "string", "format": "", "priority": 0, "description": "age"},
    {"name": "IP", "type": "string", "format": "", "priority": 1, "description": "pod IP"},
    {"name": "Node", "type": "string", "format": "", "priority": 1, "description": "node"},
]


def table(objects: list[dict[str, Any]], columns: list[dict[str, Any]] | None, plural: str,
          include: str, resource_version: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: `columns` are a CRD's printer columns (None: a built-in kind's own, else NAME/AGE)."""
    from tests.cluster import api_printers  # it prints with this module's helpers

    if columns is None and plural in api_printers.COLUMNS:
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
                "columnDefinitions": api_printers.COLUMNS[plural],
                "rows": [_row(api_printers.CELLS[plural](obj), obj, include) for obj in objects]}
    if plural == "pods" and columns is None:
        defs = [NAME_COLUMN] + POD_COLUMNS
    else:
        cols = [AGE_COLUMN] if columns is None else columns
        if not any(c.get("jsonPath") == ".metadata.creationTimestamp" for c in cols):
            cols = cols + [AGE_COLUMN]
        defs = [NAME_COLUMN] + [{"name": c["name"], "type": "string" if c.get("type") == "date" else c["type"],
                                 "format": c.get("format", ""), "description": c.get("description", ""),
                                 "priority": c.get("priority", 0)} for c in cols]
    rows = []
    for obj in objects:
        if plural == "pods" and columns is None:
            cells = [obj["metadata"]["name"]] + _pod_cells(obj)
        else:
            cells = [obj["metadata"]["name"]] + [_cell(obj, c) for c in cols]
        rows.append(_row(cells, obj, include))
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": defs, "rows": rows}


def _row(cells: list[Any], obj: dict[str, Any], include: str) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": cells}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
    return row


def _cell(obj: dict[str, Any], column: dict[str, Any]) -> Any:
    values = jsonpath(obj, column["jsonPath"])
    if not values:
        return None
    if column.get("type") == "date":
        return human_age(values[0]) if isinstance(values[0], str) else None
    if len(values) == 1:
        return values[0]
    return ",".join(str(v) for v in values)
