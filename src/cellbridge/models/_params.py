"""Typed, frozen hyper-parameter sets shared by the models' presets.

Each model's ``_presets.py`` defines one frozen dataclass whose fields are its hyper-parameters,
typed with ``Literal`` for choices, and builds a preset by :func:`resolve`. Every value is checked
when the preset is resolved, before any data is touched: a ``Literal`` field must hold one of its
choices, and a field may carry ``metadata={"min": ..., "max": ..., "none": bool}`` bounds.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from .._errors import CellBridgeInputError

P = TypeVar("P")


def bounded(default: Any, *, lo: float | None = None, hi: float | None = None, none: bool = False,
            integer: bool = False) -> Any:
    """A dataclass field with a default and bounds checked by :func:`validate`."""
    return dataclasses.field(default=default, metadata={"min": lo, "max": hi, "none": none, "integer": integer})


def validate(params: Any, model: str) -> None:
    """Raise :class:`CellBridgeInputError` naming the first field whose value is not allowed."""
    hints = typing.get_type_hints(type(params))
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        choices = _literal_choices(hints[f.name])
        if choices is not None and value not in choices:
            raise CellBridgeInputError(f"{model} `{f.name}` must be one of {choices}, got {value!r}.")
        meta = f.metadata
        if not meta:
            continue
        if value is None:
            if not meta["none"]:
                raise CellBridgeInputError(f"{model} `{f.name}` must be a number, got None.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CellBridgeInputError(f"{model} `{f.name}` must be a number, got {value!r}.")
        if meta["integer"] and int(value) != value:
            raise CellBridgeInputError(f"{model} `{f.name}` must be a whole number, got {value!r}.")
        lo, hi = meta["min"], meta["max"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise CellBridgeInputError(f"{model} `{f.name}` must be {span}, got {value!r}.")


def _literal_choices(hint) -> tuple | None:
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in get_args(hint):
            if get_origin(arg) is Literal:
                return (*get_args(arg), *(None for a in get_args(hint) if a is type(None)))
    return None


def resolve(cls: type[P], base: Mapping[str, Any], overrides: Mapping[str, Any], model: str, *,
            ignore_none: bool = False) -> P:
    """``cls(**base)`` with ``overrides`` applied (dict values merged into dict fields; with
    ``ignore_none`` an override of None keeps the base value), validated."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise CellBridgeInputError(f"unknown {model} parameter(s) {unknown}; known: {sorted(names)}.")
    values = dict(base)
    for key, value in overrides.items():
        if value is None and ignore_none:
            continue
        current = values[key] if key in values else _default(cls, key)  # a field the base leaves at its default
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            values[key] = {**current, **value}
        else:
            values[key] = value
    params = cls(**values)
    validate(params, model)
    return params


def _default(cls: type, name: str) -> Any:
    """The default value of field ``name`` of dataclass ``cls`` (None when it has none)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def to_json(params: Any) -> dict[str, Any]:
    """The fields as JSON values (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
            for k, v in dataclasses.asdict(params).items()}
