"""Schemas: the published OpenAPI of the built-in kinds, and a CRD version's structural schema.

Built-in kinds are decoded as Go structs are: a field the struct lacks is an unknown field (rejected under
fieldValidation=Strict, dropped otherwise), a value of the wrong JSON type fails decoding (400). The schemas
come from the `kubernetes-validate` package. Custom resources follow apiextensions-apiserver: unknown fields
are pruned (or rejected under Strict), `default`s are applied, then the OpenAPI v3 schema and its
`x-kubernetes-validations` CEL rules are checked (422 with field paths).
"""

from __future__ import annotations

import copy
import datetime
import functools
import math
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate

celpy: Any
try:  # CEL rules are checked where a CEL library is installed (cel-python), skipped otherwise
    import celpy
except ImportError:  # pragma: no cover
    celpy = None

CEL_AVAILABLE = celpy is not None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name)[:3])


@functools.cache
def definitions() -> dict[str, Any]:
    """All built-in OpenAPI definitions of the newest Kubernetes version the package ships."""
    import json
    root = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    newest = max((d for d in root.iterdir() if d.name.endswith("-local")), key=lambda d: _version_key(d.name))
    return dict(json.loads((newest / "_definitions.json").read_text())["$defs"])


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = {**definitions()[schema["$ref"].rsplit("/", 1)[-1]],
                  **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    raw = schema.get("type")
    return set(raw if isinstance(raw, list) else [raw] if raw else [])


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _fits(value: Any, types: set[str]) -> bool:
    kind = json_type(value)
    return not types or kind in types or (kind == "integer" and "number" in types)


@dataclass
class Decoded:
    """What decoding a built-in object into its Go struct found."""
    unknown: list[str] = field(default_factory=list)
    type_errors: list[str] = field(default_factory=list)
    required: list[str] = field(default_factory=list)


def decode_builtin(obj: dict[str, Any], definition: str, drop_unknown: bool) -> Decoded:
    """Check `obj` against a built-in definition; with `drop_unknown`, unknown fields are removed in place."""
    found = Decoded()
    _decode(obj, {"$ref": "#/$defs/" + definition}, "", found, drop_unknown)
    return found


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


def _decode(value: Any, schema: dict[str, Any], path: str, found: Decoded, drop: bool) -> None:
    if str(schema.get("$ref", "")).endswith("resource.Quantity") and isinstance(value, str) \
            and not _QUANTITY.match(value):
        found.type_errors.append(f"quantities must match the regular expression "
                                 f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({path}: {value!r})")
        return
    schema = resolve(schema)
    if schema.get("format") == "date-time" and isinstance(value, str) and not _DATE_TIME.match(value):
        found.type_errors.append(f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse ({path})')
        return
    if "oneOf" in schema:  # IntOrString, Quantity
        if not any(_fits(value, _types(resolve(s))) for s in schema["oneOf"]):
            found.type_errors.append(f"cannot unmarshal {json_type(value)} into Go struct field {path or '.'}")
        return
    types = _types(schema)
    if value is None:
        return
    concrete = types - {"null"}
    if concrete and not _fits(value, concrete):
        expected = sorted(concrete)[0]
        found.type_errors.append(f"cannot unmarshal {json_type(value)} into Go struct field {path} of type {expected}")
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and extra is None:
            return  # free-form (RawExtension, JSON)
        for key in list(value):
            sub = _join(path, key)
            if props is not None and key in props:
                _decode(value[key], props[key], sub, found, drop)
            elif isinstance(extra, dict):
                _decode(value[key], extra, sub, found, drop)
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.unknown.append(sub)
                if drop:
                    del value[key]
        for key in schema.get("required") or []:
            if value.get(key) is None and key not in ("metadata",):
                found.required.append(_join(path, key))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _decode(item, schema["items"], f"{path}[{i}]", found, drop)


# --- custom resources: structural schema semantics ----------------------------------------------------


def normalize_numbers(value: Any) -> Any:
    """Integral floats become ints, as a round trip through Go's unstructured JSON does."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    return value


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Set each absent (or null, non-nullable) property that has a `default`, recursively, top-down."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if "default" in sub and (key not in value or (value[key] is None and not sub.get("nullable"))):
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in (schema.get("properties") or {}):
                    value[key] = apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def prune(value: Any, schema: dict[str, Any], path: str = "", root: bool = True) -> list[str]:
    """Remove fields the schema does not specify (in place); returns their paths."""
    removed: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_all = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        for key in list(value):
            sub = _join(path, key)
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            if key in props:
                removed += prune(value[key], props[key], sub, False)
            elif isinstance(extra, dict):
                removed += prune(value[key], extra, sub, False)
            elif not keep_all:
                removed.append(sub)
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            removed += prune(item, schema["items"], f"{path}[{i}]", False)
    return removed


def _quote(value: Any) -> str:
    import json
    if isinstance(value, dict | list):
        return f'"{json_type(value)}"'
    return json.dumps(value)


class Invalid(list):  # type: ignore[type-arg]
    """(field path, message) pairs: one 422 Invalid response."""


def validate(value: Any, schema: dict[str, Any], old: Any = None, path: str = "") -> Invalid:
    errors = Invalid()
    _validate(value, schema, old, path, errors, has_old=old is not None)
    return errors


def _validate(value: Any, schema: dict[str, Any], old: Any, path: str, errors: Invalid, has_old: bool) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable") and (schema.get("type") or schema.get("properties")):
            errors.append((where, f"Invalid value: \"null\": {where} in body must be of type "
                                  f"{schema.get('type', 'object')}: \"null\""))
        return
    int_or_string = schema.get("x-kubernetes-int-or-string")
    kind = json_type(value)
    expected = schema.get("type")
    if int_or_string:
        if kind not in ("integer", "string"):
            errors.append((where, f"Invalid value: {_quote(value)}: {where} in body must be of type "
                                  f"integer or string: \"{kind}\""))
            return
    elif expected and not (kind == expected or (expected == "number" and kind == "integer")):
        errors.append((where, f"Invalid value: {_quote(value)}: {where} in body must be of type {expected}: "
                              f"\"{kind}\""))
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_quote(v) for v in schema["enum"])
        errors.append((where, f"Unsupported value: {_quote(value)}: supported values: {supported}"))
    if kind in ("integer", "number"):
        _check_number(value, schema, where, errors)
    if kind == "string":
        _check_string(value, schema, where, errors)
    if kind == "array":
        _check_array(value, schema, old, path, errors, has_old)
    if kind == "object":
        _check_object(value, schema, old, path, errors, has_old)
    for sub in schema.get("allOf") or []:
        _validate(value, sub, old, path, errors, has_old)
    for combinator, ok in (("anyOf", lambda n: n >= 1), ("oneOf", lambda n: n == 1)):
        if combinator in schema:
            passed = sum(1 for s in schema[combinator] if not validate(value, {**s, "nullable": True}, old, path))
            if not ok(passed):
                errors.append((where, f"Invalid value: {_quote(value)}: {where} in body must validate "
                                      f"{'any' if combinator == 'anyOf' else 'one and only one'} schema"))
    if "not" in schema and not validate(value, schema["not"], old, path):
        errors.append((where, f"Invalid value: {_quote(value)}: {where} in body should not validate the schema"))
    if schema.get("x-kubernetes-validations"):
        _check_rules(value, schema, old, where, errors, has_old)


def _check_number(value: float, schema: dict[str, Any], where: str, errors: Invalid) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        errors.append((where, f"Invalid value: {value}: must be finite"))
    for bound, word in (("minimum", "greater"), ("maximum", "less")):
        if bound not in schema:
            continue
        limit, exclusive = schema[bound], schema.get("exclusive" + bound.capitalize())
        if exclusive is True:
            bad = value <= limit if bound == "minimum" else value >= limit
            text = f"should be {word} than {limit}"
        else:
            bad = value < limit if bound == "minimum" else value > limit
            text = f"should be {word} than or equal to {limit}"
        if bad:
            errors.append((where, f"Invalid value: {_quote(value)}: {where} in body {text}"))
    multiple = schema.get("multipleOf")
    if multiple and (value / multiple) != int(value / multiple):
        errors.append((where, f"Invalid value: {_quote(value)}: {where} in body should be a multiple of {multiple}"))


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _check_string(value: str, schema: dict[str, Any], where: str, errors: Invalid) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append((where, f"Invalid value: {_quote(value)}: {where} in body should be at least "
                              f"{schema['minLength']} chars long"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append((where, f"Too long: may not be more than {schema['maxLength']} bytes"))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append((where, f"Invalid value: {_quote(value)}: {where} in body should match '{schema['pattern']}'"))
    fmt = schema.get("format")
    if fmt == "date-time" and not _DATE_TIME.match(value):
        errors.append((where, f"Invalid value: {_quote(value)}: {where} in body must be of type date-time: "
                              f"{_quote(value)}"))


def _check_array(value: list[Any], schema: dict[str, Any], old: Any, path: str, errors: Invalid,
                 has_old: bool) -> None:
    where = path or "<root>"
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append((where, f"Invalid value: {len(value)}: {where} in body should have at least "
                              f"{schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append((where, f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" or schema.get("uniqueItems"):
        for i, item in enumerate(value):
            if item in value[:i]:
                errors.append((f"{path}[{i}]", f"Duplicate value: {_quote(item)}"))
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: list[Any] = []
        for i, item in enumerate(value):
            ident = [item.get(k) if isinstance(item, dict) else None for k in keys]
            if ident in seen:
                errors.append((f"{path}[{i}]", f"Duplicate value: {_quote(dict(zip(keys, ident, strict=True)))}"))
            seen.append(ident)
    items = schema.get("items")
    if isinstance(items, dict):
        old_items = old if isinstance(old, list) else []
        for i, item in enumerate(value):
            prior = old_items[i] if i < len(old_items) and list_type != "map" else None
            _validate(item, items, prior, f"{path}[{i}]", errors, has_old and prior is not None)


def _check_object(value: dict[str, Any], schema: dict[str, Any], old: Any, path: str, errors: Invalid,
                  has_old: bool) -> None:
    where = path or "<root>"
    for key in schema.get("required") or []:
        if key not in value:
            errors.append((_join(path, key), "Required value"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append((where, f"Invalid value: {len(value)}: {where} in body should have at least "
                              f"{schema['minProperties']} properties"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append((where, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items"))
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    olds = old if isinstance(old, dict) else {}
    for key, item in value.items():
        if not path and key in ("apiVersion", "kind", "metadata"):
            continue
        sub = props.get(key) if key in props else extra if isinstance(extra, dict) else None
        if sub is not None:
            _validate(item, sub, olds.get(key), _join(path, key), errors, has_old and key in olds)
        elif extra is False:
            errors.append((_join(path, key), "Forbidden: additional property not allowed"))


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _check_rules(value: Any, schema: dict[str, Any], old: Any, where: str, errors: Invalid, has_old: bool) -> None:
    if celpy is None:
        return
    for rule in schema["x-kubernetes-validations"]:
        text = rule["rule"]
        transition = re.search(r"\boldSelf\b", text) is not None
        if transition and not has_old and not rule.get("optionalOldSelf"):
            continue
        activation = {"self": celpy.json_to_cel(copy.deepcopy(value))}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(copy.deepcopy(old))
        try:
            result = _program(text).evaluate(activation)
        except Exception as exc:  # an evaluation error fails the rule, as it does in the apiserver
            errors.append((where, f"Invalid value: \"object\": {exc}"))
            continue
        if isinstance(result, Exception) or not bool(result):
            message = rule.get("message") or f"failed rule: {text}"
            target = where + (rule.get("fieldPath") or "")
            reason = rule.get("reason", "FieldValueInvalid")
            prefix = {"FieldValueForbidden": "Forbidden", "FieldValueRequired": "Required value",
                      "FieldValueDuplicate": "Duplicate value"}.get(reason, f"Invalid value: {_quote_kind(value)}")
            errors.append((target, f"{prefix}: {message}"))


def _quote_kind(value: Any) -> str:
    return f'"{json_type(value)}"' if isinstance(value, dict | list) else _quote(value)


def compile_error(rule: str) -> str | None:
    """Why a CEL rule does not compile (None when it does, or when no CEL library is installed)."""
    if celpy is None:
        return None
    try:
        _program(rule)
    except Exception as exc:
        return str(exc)
    return None


def structural_errors(schema: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """Where a CRD schema is not structural: every specified node needs a `type` (apiextensions rule)."""
    errors: list[tuple[str, str]] = []
    if not (schema.get("type") or schema.get("x-kubernetes-int-or-string")
            or schema.get("x-kubernetes-preserve-unknown-fields")):
        errors.append((f"{path}.type", "Required value: must not be empty for specified object fields"))
    for key, sub in (schema.get("properties") or {}).items():
        errors += structural_errors(sub, f"{path}.properties[{key}]")
    if isinstance(schema.get("items"), dict):
        errors += structural_errors(schema["items"], f"{path}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        errors += structural_errors(schema["additionalProperties"], f"{path}.additionalProperties")
    for rule in schema.get("x-kubernetes-validations") or []:
        why = compile_error(rule.get("rule", ""))
        if why:
            errors.append((f"{path}.x-kubernetes-validations", f"Invalid value: {_quote(rule.get('rule'))}: "
                                                                f"compilation failed: {why}"))
    return errors


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
