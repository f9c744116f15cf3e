"""Is a job's spec one the controller can run? `checked_spec` says, before anything is rendered.

Data flow: `handlers.Reconciler` calls `checked_spec(job)` first in each pass: the spec with its defaults
filled in, or `InvalidSpecError` with the reason, which fails the job as InvalidSpec (the user's to fix).
A KeyError or TypeError from our own code after this point is ours, not the user's: it is retried.
"""

from __future__ import annotations

from typing import Any

from a2c.controller import spec as jobspec


class InvalidSpecError(ValueError):
    """The job's spec (or name) is one the controller cannot run: the user's to fix, not ours."""


def _check_types(value: Any, default: Any, where: str) -> None:
    """`value` has the JSON type of `default` (the filled spec against `spec.defaults()`), recursively.

    The CRD's schema says the same at admission; this holds for a job admitted under an older CRD (or none),
    so that the role configs built next meet only the types they expect, and a KeyError or TypeError after
    this point is ours. An empty object or list by default (resources, tolerations) may also be null."""
    if isinstance(default, (dict, list)) and not default and value is None:
        return
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise InvalidSpecError(f"{where} must be an object, not {json_type(value)}")
        for key, sub in default.items():
            _check_types(value.get(key), sub, f"{where}.{key}")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise InvalidSpecError(f"{where} must be a list, not {json_type(value)}")
        for i, item in enumerate(value if default else []):
            _check_types(item, default[0], f"{where}[{i}]")
    elif default is not None and json_type(value) != json_type(default):
        raise InvalidSpecError(f"{where} must be {json_type(default)}, not {json_type(value)} ({value!r})")


def json_type(value: Any) -> str:
    """What JSON calls `value`'s type (an int and a float are both numbers)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def checked_spec(job: dict[str, Any]) -> dict[str, Any]:
    """The job's spec with its defaults filled in, or InvalidSpecError saying what is wrong with it.

    Only what the user wrote raises InvalidSpecError: a bad name, a field of the wrong type, or a value `spec`'s
    role configs refuse (they raise ValueError for those: TLS mutual without a Secret, more than one GPU per
    trainer). A KeyError or TypeError from our own code is not the user's: it propagates."""
    meta = job["metadata"]
    try:
        jobspec.validate_name(meta["name"])
        raw = job.get("spec")
        if raw is not None and not isinstance(raw, dict):
            raise InvalidSpecError(f"spec must be an object, not {json_type(raw)}")
        spec = jobspec.with_defaults(raw)
        _check_types(spec, jobspec.defaults(), "spec")
        jobspec.trainer_config(meta["name"], meta["namespace"], spec)
        jobspec.player_config(meta["name"], meta["namespace"], spec)
        jobspec.run_policy(spec)
        jobspec.check_scheduling(spec)
    except InvalidSpecError:
        raise
    except ValueError as exc:  # spec.py's word for a value the user gave that cannot run
        raise InvalidSpecError(str(exc)) from exc
    return spec
