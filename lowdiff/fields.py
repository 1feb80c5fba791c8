"""Dataclasses to and from JSON, checked: every config file lowdiff reads (config.json, plan
files, training states) goes through `from_dict`, so a wrong key or a value of the wrong type
is a ConfigError naming the field, not a traceback deep inside a network. Infinite floats are
written as the strings "inf" / "-inf" (JSON has no infinity; Python's `Infinity` is not JSON)."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from .errors import ConfigError


def jsonable(obj: Any) -> Any:
    """A copy of nested dicts / lists / tuples / dataclasses with infinite floats as strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    return obj


def from_dict(cls, data: Any, where: str, ignore: frozenset[str] = frozenset()):
    """`cls(**data)` after checking that `data` is a dict with only `cls`'s fields (keys in
    `ignore` are dropped) and that each value has its field's type; ConfigError otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object with the fields of {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names - ignore)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} ({cls.__name__} takes only the keys "
                          f"{', '.join(sorted(names))})")
    values = {k: convert(v, hints[k], f"{where}.{k}") for k, v in data.items() if k in names}
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in values
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise ConfigError(f"{where}: missing key(s) {', '.join(required)}")
    return cls(**values)


def convert(value: Any, hint: Any, where: str) -> Any:
    """`value` as type `hint` (int, float, bool, str, Any, X | None, tuple[...], list[X], dict[K, V])."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if isinstance(hint, type) and hint not in (bool, int, float, str) and isinstance(value, hint):
        return value                                     # already built (a nested config object)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise ConfigError(f"{where}: NaN is not a value; give a number")
            return float(value)
        if value in ("inf", "-inf", "Infinity", "-Infinity"):
            return math.copysign(math.inf, -1 if value.startswith("-") else 1)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                if len(value) != len(args):
                    raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
                return tuple(convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
            item = args[0] if args else Any
            out = [convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(out) if origin is tuple else out
    elif origin is dict:
        if isinstance(value, dict):
            key_hint, value_hint = args or (Any, Any)
            return {_key(k, key_hint, where): convert(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    else:
        raise TypeError(f"fields.convert: unsupported annotation {hint!r} at {where}")
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: expected {name}, got {value!r}")


def _key(key: Any, hint: Any, where: str) -> Any:
    """JSON object keys are strings; int-keyed dicts (per-resolution settings) convert them back."""
    if hint is int:
        try:
            return int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: key {key!r} is not an integer") from None
    return key
