"""BiCLUM presets (cellbridge.models.biclum._presets); the validation machinery itself is tested
in tests/models/test_params.py."""

from __future__ import annotations

import dataclasses

import pytest

from cellbridge import CellBridgeInputError
from cellbridge.models.biclum import DEFAULT_CHANGES, PRESETS, BiCLUMParams, resolve_params


def test_presets_and_replace():
    assert PRESETS == ("reference", "default")
    ref, default = resolve_params("reference", "atac", {}), resolve_params("default", "atac", {})
    assert isinstance(ref, BiCLUMParams) and ref == BiCLUMParams()  # RNA+ATAC reference values
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.lr = 1.0
    assert all(getattr(default, k) == v for k, v in DEFAULT_CHANGES.items())
    protein = resolve_params("reference", "protein", {})
    assert (protein.tau_cell, protein.k_mnn, protein.n_latent, protein.target) == (100.0, 500, 25, "scaled")
    assert resolve_params("default", "atac", {"gamma": [2, 3]}).gamma == (2, 3)
    assert resolve_params("default", "atac", {"k_mnn": None}).k_mnn == 30  # None: unset
    assert default.replace(lr=1e-3).lr == 1e-3 and default.replace(max_epochs=None).max_epochs == 75
    with pytest.raises(CellBridgeInputError, match="preset must be one of"):
        resolve_params("fast", "atac", {})
    with pytest.raises(CellBridgeInputError, match="modality must be one of"):
        resolve_params("default", "rna", {})


@pytest.mark.parametrize("overrides, match", [
    ({"max_epochs": 0}, "BiCLUM `max_epochs` must be at least 1"),
    ({"batch_size": 1}, "BiCLUM `batch_size` must be at least 2"),
    ({"k_mnn": 0}, "BiCLUM `k_mnn` must be at least 1"),
    ({"tau_cell": 0}, "BiCLUM `tau_cell` must be at least 1e-06"),
    ({"tau_feature": -1.0}, "BiCLUM `tau_feature` must be at least 1e-06"),
    ({"mnn_ann": "annoy"}, r"BiCLUM `mnn_ann` must be one of \('hnsw', 'ivf'\)"),
    ({"precision": "16"}, r"BiCLUM `precision` must be one of \('32', 'bf16-mixed'\)"),
    ({"learning_rate": 1}, r"unknown BiCLUM parameter\(s\) \['learning_rate'\]"),
])
def test_invalid_values_refused_when_the_preset_is_resolved(overrides, match):
    with pytest.raises(CellBridgeInputError, match=match):
        resolve_params("default", "atac", overrides)
