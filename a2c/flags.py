"""Dataclass fields as command-line flags: how `a2c.config` declares a knob (`opt`, `same_as`, `arg`) and how
a dataclass becomes flags and back (`add_arguments`, `from_namespace`, `to_flags`).

Data flow: `config` declares each knob once as a field with `opt` (its --help text, its environment variable,
and with `crd` its A2CJob field and bounds) -> `cli` adds the flags of a role's dataclass (`add_arguments`)
-> `from_namespace` builds it from the parsed flags, falling back to environment variables, then to the
defaults; `to_flags` renders it back (the launcher, the controller, the chart's tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def opt(default: Any, help: str, env: str | None = None, choices: tuple[str, ...] | None = None, *,
        crd: str | None = None, minimum: float | None = None, maximum: float | None = None,
        above: float | None = None, schema: dict[str, Any] | None = None) -> Any:
    """A dataclass field carrying its --help text and environment-variable fallback (and, with `crd`, its
    A2CJob field and the bounds that field admits; see the module docstring)."""
    meta: dict[str, Any] = {"help": help}
    extra = {"env": env, "choices": choices, "crd": crd, "minimum": minimum, "maximum": maximum, "above": above,
             "schema": schema}
    meta.update({key: value for key, value in extra.items() if value is not None})
    return field(default=default, metadata=meta)


def same_as(cls: type, name: str, default: Any, help: str) -> Any:
    """Field `name` of `cls` (its flag, variable, type and choices) with a role's own default and help."""
    base = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return field(default=default, metadata={**base.metadata, "help": help})


def arg(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple[str, ...] | None = None,
        positional: bool = False, required: bool = False, switch: bool = False, negatable: bool = False) -> Any:
    """A field of a command's flags (`a2c controller`, `render`, `eval`, `export`): no environment variable,
    `help` shown as written. `positional`: an argument without `--`; `required`: a flag that must be given;
    `switch`: a flag without a value (store_true); `negatable`: `--x` / `--no-x`."""
    meta: dict[str, Any] = {"help": help, "env": "", "positional": positional, "required": required,
                            "switch": switch, "negatable": negatable}
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(f: dataclasses.Field[Any]) -> str:
    """The environment variable a field falls back to: its `env` metadata, else A2C_<FIELD_NAME>."""
    return str(f.metadata.get("env", "A2C_" + f.name.upper()))


@functools.cache
def typed_fields(cls: type) -> dict[str, Any]:
    """Field name -> type, resolved (this module's annotations are strings under `from __future__`); an
    optional `X | None` reads as X."""
    out: dict[str, Any] = {}
    for name, t in typing.get_type_hints(cls).items():
        if isinstance(t, types.UnionType):
            t = next(a for a in typing.get_args(t) if a is not type(None))
        out[name] = t
    return out


def _group(cls: type, f: dataclasses.Field[Any]) -> type | None:
    """The config group a field holds (EnvConfig, ...), or None for a leaf."""
    t = typed_fields(cls)[f.name]
    return t if isinstance(t, type) and dataclasses.is_dataclass(t) else None


def _walk(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Any]]:
    """(field, type) of every leaf: the class's own first, then its groups' (the order of --help)."""
    fields = dataclasses.fields(cls)
    yield from ((f, typed_fields(cls)[f.name]) for f in fields if _group(cls, f) is None)
    for f in fields:
        sub = _group(cls, f)
        if sub is not None:
            yield from _walk(sub)


def typed_leaves(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    """(field, type) of every leaf field of `cls`, in the order of `leaves` (an optional `X | None` as X)."""
    return list(_walk(cls))


def leaves(cls: type) -> list[dataclasses.Field[Any]]:
    """Every leaf field of `cls`, nested groups flattened: one flag (and environment variable) each."""
    return [f for f, _ in _walk(cls)]


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


_PARSE: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, bool: _parse_bool, Path: Path}


def out_of_bounds(f: dataclasses.Field[Any], value: Any) -> str | None:
    """Why `value` is outside the bounds field `f` declares (`minimum`, `maximum`, `above`: the A2CJob field's
    too), or None when it is inside them or the field has none."""
    low, high, above = (f.metadata.get(k) for k in ("minimum", "maximum", "above"))
    if low is not None and value < low:
        return f"must be at least {low:g}, got {value!r}"
    if high is not None and value > high:
        return f"must be at most {high:g}, got {value!r}"
    if above is not None and value <= above:
        return f"must be greater than {above:g}, got {value!r}"
    return None


def _bounded(f: dataclasses.Field[Any], parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, refusing values outside the field's bounds (argparse shows the reason after the flag)."""
    if not any(k in f.metadata for k in ("minimum", "maximum", "above")):
        return parse

    def parse_bounded(text: str) -> Any:
        value = parse(text)
        problem = out_of_bounds(f, value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse_bounded.__name__ = parse.__name__  # argparse names the type in "invalid float value: 'x'"
    return parse_bounded


def _add_command_argument(parser: argparse.ArgumentParser, f: dataclasses.Field[Any], kind: Any) -> None:
    """A command's flag (`arg`): help as written, argparse's own default, no environment variable."""
    meta = f.metadata
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if "choices" in meta:
        kwargs["choices"] = meta["choices"]
    if meta["positional"]:
        parser.add_argument(f.name, type=_PARSE[kind], **kwargs)
        return
    kwargs["dest"] = f.name
    if meta["switch"]:
        kwargs["action"] = "store_true"
    elif meta["negatable"]:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _PARSE[kind]
    if meta["required"]:
        kwargs["required"] = True
    else:
        kwargs["default"] = f.default
    parser.add_argument(_flag(f.name), **kwargs)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per leaf field of `cls` (nested config groups are flattened)."""
    for f, kind in _walk(cls):
        if "positional" in f.metadata:
            _add_command_argument(parser, f, kind)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "type": _bounded(f, _PARSE[kind])}
        kwargs["help"] = f"{f.metadata.get('help', '')} (default: {f.default!r}; env {env_name(f)})"
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if kind is bool:
            kwargs["metavar"] = "BOOL"
        parser.add_argument(_flag(f.name), **kwargs)


def from_namespace(cls: type[T], ns: argparse.Namespace, environ: dict[str, str] | None = None) -> T:
    """Build `cls` from parsed flags, falling back to environment variables, then to defaults."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = _group(cls, f)
        if sub is not None:
            values[f.name] = from_namespace(sub, ns, environ)
            continue
        value = getattr(ns, f.name, None)
        env = env_name(f)
        if value is None and env and environ.get(env, "") != "":
            try:
                value = _bounded(f, _PARSE[typed_fields(cls)[f.name]])(environ[env])  # type: ignore[arg-type]
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise ValueError(f"environment variable {env}={environ[env]!r}: {exc}") from exc
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"environment variable {env}={environ[env]!r}: expected one of {list(choices)}")
        if value is not None:
            values[f.name] = value
    return cls(**values)


def to_flags(obj: Any, skip_defaults: bool = True) -> list[str]:
    """The flags that rebuild `obj` (used by the launcher, the controller and the chart's tests)."""
    out: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(to_flags(value, skip_defaults))
            continue
        if skip_defaults and value == f.default:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out.append(f"{_flag(f.name)}={text}")  # one token: values like -1e-05 must not read as flags
    return out
