"""JSON merge patches, computed: what turns the object we last applied, or the live one, into the one we render.

Data flow: `kube.Kube.apply` asks `merge_patch(last applied, rendered)` for what changed in our rendering and
`restore_patch(rendered, live)` for what someone changed by hand among the fields we render (a quantity
compared by value: "0.5" = "500m"; an empty value as an absent one); `changed_paths` names the fields for the
log, and `overlay` applies a patch to a copy. Pure: no API calls.
"""

from __future__ import annotations

import decimal
import re
from typing import Any


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` (None deletes a key; lists are replaced whole)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif old[key] != value:
            out[key] = merge_patch(old[key], value)
    return out


SAME: Any = type("Same", (), {"__repr__": lambda _: "SAME"})()  # restore_patch: nothing to set back
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SCALE: dict[str | None, int | str] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, None: 1,
    "n": "1e-9", "u": "1e-6", "m": "1e-3", "k": "1e3", "M": "1e6", "G": "1e9", "T": "1e12", "P": "1e15", "E": "1e18",
}


def quantity(value: Any) -> decimal.Decimal | None:
    """A Kubernetes resource quantity's value ("500m", "0.5", "1Gi", 2), or None if `value` is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, suffix = match.groups()
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        return decimal.Decimal(number + suffix)
    return decimal.Decimal(number) * decimal.Decimal(_SCALE[suffix])


def _empty(value: Any) -> bool:
    """What the API server does not keep (Go's omitempty): null, {}, [], "", false, 0."""
    return value is None or value is False or (isinstance(value, (str, list, dict, int, float)) and not value)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (1 and 1.0 are; true and 1 are not)."""
    return a == b and (isinstance(a, bool) == isinstance(b, bool))


def restore_patch(want: Any, live: Any, resources: bool = False) -> Any:
    """A JSON merge patch that sets every field of `want` (what we render) back where `live` differs, or SAME.

    Fields only `live` has (the API server's defaults, status, others' annotations) are left alone; an empty
    field of `want` matches an absent one (the server drops them); a list that differs is set whole (a merge
    patch replaces lists); under `resources`, quantities compare by value ("0.5" is the server's "500m")."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return want
        out = {}
        for key, value in want.items():
            if key not in live:
                if not _empty(value):
                    out[key] = value
                continue
            sub = restore_patch(value, live[key], resources or key == "resources")
            if sub is not SAME:
                out[key] = sub
        return out or SAME
    if isinstance(want, list):
        if not isinstance(live, list) or len(want) != len(live):
            return want
        differs = any(restore_patch(w, v, resources) is not SAME for w, v in zip(want, live, strict=True))
        return want if differs else SAME
    if _same(want, live):
        return SAME
    if resources and quantity(want) is not None and quantity(want) == quantity(live):
        return SAME
    return want


def changed_paths(patch: Any, prefix: str = "") -> list[str]:
    """The fields a merge patch sets, as dotted paths (for the log)."""
    if not isinstance(patch, dict) or not patch:
        return [prefix or "."]
    return [p for key, value in patch.items() for p in changed_paths(value, f"{prefix}.{key}" if prefix else key)]


def overlay(base: Any, top: Any) -> Any:
    """Two merge patches as one (`top` wins where both set a field)."""
    if not isinstance(base, dict) or not isinstance(top, dict):
        return top
    return {**base, **{key: overlay(base.get(key), value) if key in base else value for key, value in top.items()}}
