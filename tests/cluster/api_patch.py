"""The three PATCH bodies kube-apiserver accepts: JSON merge patch, JSON patch, strategic merge patch.

Each is a pure function from (live object, patch) to the new object; the server decodes the body first and
validates the result afterwards, so these only know patch semantics. Strategic merge reads the patch
strategy and merge key of each list from the built-in OpenAPI schema (`x-kubernetes-patch-strategy`,
`x-kubernetes-patch-merge-key`), as the real server does from its Go struct tags.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Resolve = Callable[[dict[str, Any]], dict[str, Any]]


class PatchError(Exception):
    """The patch cannot be applied (422 in kube-apiserver)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise PatchError(f"path element {part!r} does not exist")
            doc = doc[part]
        elif isinstance(doc, list):
            doc = doc[_index(doc, part, allow_end=False)]
        else:
            raise PatchError(f"cannot descend into {type(doc).__name__} at {part!r}")
    return doc


def _index(seq: list[Any], part: str, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(seq)
    if not part.isdigit() or (len(part) > 1 and part.startswith("0")):
        raise PatchError(f"invalid array index {part!r}")
    index = int(part)
    if index > len(seq) or (index == len(seq) and not allow_end):
        raise PatchError(f"array index {index} out of bounds")
    return index


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 add/remove/replace/move/copy/test; any failing operation fails the whole patch."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be an array of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        parts, kind = _pointer(op["path"]), op["op"]
        if kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, source))
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, parts, value)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, parts)
        elif kind == "replace":
            _walk(doc, parts)
            doc = _add(_remove(doc, parts), parts, copy.deepcopy(op.get("value")))
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"testing value {op['path']} failed")
        else:
            raise PatchError(f"unexpected kind of operation {kind!r}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, dict):
        parent[parts[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], allow_end=True), value)
    else:
        raise PatchError(f"cannot add to {type(parent).__name__}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return None
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, dict):
        if parts[-1] not in parent:
            raise PatchError(f"cannot remove missing key {parts[-1]!r}")
        del parent[parts[-1]]
    elif isinstance(parent, list):
        del parent[_index(parent, parts[-1], allow_end=False)]
    else:
        raise PatchError(f"cannot remove from {type(parent).__name__}")
    return doc


_DELETE = object()


def strategic_merge(target: Any, patch: Any, schema: dict[str, Any], resolve: Resolve) -> Any:
    """Strategic merge patch of a built-in object; `schema` is its OpenAPI definition, `resolve` follows $ref."""
    result = _smp_map(target if isinstance(target, dict) else {}, patch, resolve(schema), resolve)
    return {} if result is _DELETE else result


def _child(schema: dict[str, Any], key: str, resolve: Resolve) -> dict[str, Any]:
    props = schema.get("properties") or {}
    if key in props:
        return resolve(props[key])
    extra = schema.get("additionalProperties")
    return resolve(extra) if isinstance(extra, dict) else {}


def _smp_map(target: dict[str, Any], patch: Any, schema: dict[str, Any], resolve: Resolve) -> Any:
    if not isinstance(patch, dict):
        raise PatchError(f"expected a map in the patch, got {patch!r}")
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type {directive!r}")
    out = copy.deepcopy(target)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(out.get(field), list):
                out[field] = [v for v in out[field] if v not in value]
            continue
        if value is None:
            out.pop(key, None)
            continue
        child = _child(schema, key, resolve)
        if isinstance(value, dict) and child.get("type") != "array":
            before = out.get(key)
            merged = _smp_map(before if isinstance(before, dict) else {}, value, child, resolve)
            if merged is _DELETE:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            before = out.get(key)
            out[key] = _smp_list(before if isinstance(before, list) else [], value, child, resolve)
        else:
            out[key] = copy.deepcopy(value)
    for field, order in orders.items():
        out[field] = _reorder(out.get(field) or [], order, _child(schema, field, resolve))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _smp_list(target: list[Any], patch: list[Any], schema: dict[str, Any], resolve: Resolve) -> list[Any]:
    strategy = str(schema.get("x-kubernetes-patch-strategy", ""))
    if "merge" not in strategy.split(","):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    key = schema.get("x-kubernetes-patch-merge-key")
    if not key:  # a merged list of primitives is a set union
        return copy.deepcopy(target) + [v for v in patch if v not in target]
    items = resolve(schema.get("items") or {})
    out = copy.deepcopy(target)
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise PatchError(f"map: {element!r} does not contain declared merge key: {key}")
        index = next((i for i, v in enumerate(out) if isinstance(v, dict) and v.get(key) == element[key]), None)
        if element.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append({k: copy.deepcopy(v) for k, v in element.items() if k != "$patch"})
        else:
            out[index] = _smp_map(out[index], element, items, resolve)
    return out


def _reorder(values: list[Any], order: list[Any], schema: dict[str, Any]) -> list[Any]:
    key = schema.get("x-kubernetes-patch-merge-key")

    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(v) for v in order]
    rank = {repr(w): i for i, w in enumerate(wanted)}
    return sorted(values, key=lambda v: rank.get(repr(ident(v)), len(rank)))
