"""Frozen, validated hyper-parameter sets (cellbridge.models._params)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pytest

from cellbridge import CellBridgeInputError
from cellbridge.models._params import bounded, resolve, to_json, validate


@dataclass(frozen=True)
class Toy:
    mode: Literal["fast", "exact"] = "fast"
    optional_mode: Literal["a", "b"] | None = None
    rate: float = bounded(0.5, lo=0, hi=1)
    epochs: int = bounded(10, lo=1, integer=True)
    width: int | None = bounded(None, lo=2, none=True, integer=True)
    hidden: tuple[int, ...] = (8, 4)
    weights: Mapping[str, float] = field(default_factory=lambda: {"a": 1.0, "b": 2.0})


def _resolve(**overrides) -> Toy:
    return resolve(Toy, {}, overrides, "Toy")


def test_defaults_resolve_and_are_frozen():
    params = _resolve()
    assert params == Toy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.rate = 0.1


def test_literal_choice_refused_naming_the_field_and_the_choices():
    with pytest.raises(CellBridgeInputError, match=r"Toy `mode` must be one of \('fast', 'exact'\), got 'slow'"):
        _resolve(mode="slow")
    assert _resolve(mode="exact").mode == "exact"
    # an optional Literal accepts its choices and None
    assert _resolve(optional_mode="b").optional_mode == "b" and _resolve(optional_mode=None).optional_mode is None
    with pytest.raises(CellBridgeInputError, match=r"`optional_mode` must be one of \('a', 'b', None\), got 'c'"):
        _resolve(optional_mode="c")


@pytest.mark.parametrize("name, value, message", [
    ("rate", 1.5, "Toy `rate` must be between 0 and 1, got 1.5"),
    ("rate", -0.1, "Toy `rate` must be between 0 and 1, got -0.1"),
    ("epochs", 0, "Toy `epochs` must be at least 1, got 0"),
    ("epochs", 2.5, "Toy `epochs` must be a whole number, got 2.5"),
    ("width", 1, "Toy `width` must be at least 2, got 1"),
    ("rate", "high", "Toy `rate` must be a number, got 'high'"),
    ("epochs", True, "Toy `epochs` must be a number, got True"),  # a bool is not a count
])
def test_bound_refused_with_its_range(name, value, message):
    with pytest.raises(CellBridgeInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _resolve(**{name: value})


def test_bounds_are_inclusive():
    assert _resolve(rate=0).rate == 0 and _resolve(rate=1).rate == 1 and _resolve(epochs=1).epochs == 1
    assert _resolve(epochs=3.0).epochs == 3.0  # a whole float counts as a whole number


def test_none_accepted_only_where_allowed():
    assert _resolve(width=None).width is None and _resolve(width=4).width == 4
    with pytest.raises(CellBridgeInputError, match="Toy `epochs` must be a number, got None"):
        _resolve(epochs=None)
    with pytest.raises(CellBridgeInputError, match="Toy `rate` must be a number, got None"):
        _resolve(rate=None)
    # ignore_none: an override of None keeps the base value instead
    kept = resolve(Toy, {"epochs": 5}, {"epochs": None}, "Toy", ignore_none=True)
    assert kept.epochs == 5


def test_unknown_names_refused():
    with pytest.raises(CellBridgeInputError,
                       match=r"unknown Toy parameter\(s\) \['learning_rate', 'zeta'\]; known: \['epochs'"):
        _resolve(zeta=1, learning_rate=2)


def test_dict_fields_merged():
    # merged into the field's default when the base does not set it ...
    assert _resolve(weights={"b": 5.0, "c": 1.0}).weights == {"a": 1.0, "b": 5.0, "c": 1.0}
    # ... and into the base's value when it does
    merged = resolve(Toy, {"weights": {"a": 3.0}}, {"weights": {"b": 4.0}}, "Toy")
    assert merged.weights == {"a": 3.0, "b": 4.0}
    assert Toy().weights == {"a": 1.0, "b": 2.0}  # the default itself is left alone
    # a non-dict value replaces
    assert _resolve(hidden=(3,)).hidden == (3,)


def test_validate_an_instance_and_to_json():
    validate(Toy(), "Toy")
    with pytest.raises(CellBridgeInputError, match="Toy `epochs` must be at least 1"):
        validate(Toy(epochs=0), "Toy")  # the dataclass itself does not check
    out = to_json(_resolve(width=4))
    assert out["hidden"] == [8, 4] and out["weights"] == {"a": 1.0, "b": 2.0} and out["width"] == 4
    assert json.loads(json.dumps(out)) == out
    assert resolve(Toy, {}, {**out, "hidden": tuple(out["hidden"])}, "Toy") == _resolve(width=4)
