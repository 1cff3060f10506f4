"""scMDCF presets and options beyond the reference: modality weighting, ATAC PCA input, validation.

Leiden with the resolution bisected to K (formerly ``leiden_n_clusters`` here) is tested in
tests/tl/test_clustering.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import cellbridge as cb
from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge.models.scmdcf import ScMDCFParams, resolve_params
from cellbridge.models.scmdcf._data import modality_agreement_weights, prepare_paired


def _blobs(n_per: int = 40, k: int = 4, dim: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=8.0, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return centers[labels] + rng.normal(size=(k * n_per, dim)), labels


def test_agreement_weights_down_weight_noise_modality():
    x, _ = _blobs(k=4, dim=30)
    noise = np.random.default_rng(1).normal(size=x.shape)
    w_rna, w_other = modality_agreement_weights(x, noise, 4)
    assert w_rna == 1.0 and w_other < 0.3
    w_rna, w_other = modality_agreement_weights(noise, x, 4)
    assert w_other == 1.0 and w_rna < 0.3


def test_agreement_weighting_scales_reconstruction_weights_only(make_pair):
    rna, adt = make_pair(n=60)
    model = cb.scMDCF(rna, adt, n_clusters=3, modality_weighting="agreement", accelerator="cpu", n_models=1)
    w_rna, w_other = model.modality_weights_
    assert max(w_rna, w_other) == 1.0 and min(w_rna, w_other) > 0
    base = resolve_params("default", "protein", {})
    for phase in ("pretrain_weights", "finetune_weights"):
        hp = getattr(model.params, phase)
        assert np.isclose(hp["rec_rna"], getattr(base, phase)["rec_rna"] * w_rna)
        assert np.isclose(hp["rec_other"], getattr(base, phase)["rec_other"] * w_other)
        assert np.isclose(hp["cl"], getattr(base, phase)["cl"] * min(w_rna, w_other))
    model.train(2, 1, progress=False)
    lab = model.predict_clusters("leiden")
    assert lab.shape == (60,) and len(np.unique(lab)) >= 2
    assert base.cluster_method == "kmeans_dec_init"  # the default: KMeans from the DEC centroids
    lab = model.predict_clusters()
    assert lab.shape == (60,) and set(np.unique(lab)) <= {0, 1, 2}
    z, centres = model.get_latent(), model.module.centers.detach().numpy()
    nearest = ((z[:, None] - centres[None]) ** 2).sum(-1)
    refined = sum(((z[lab == j] - z[lab == j].mean(0)) ** 2).sum() for j in np.unique(lab))
    assert refined <= nearest.min(1).sum() + 1e-6  # Lloyd iterations from the centroids never increase inertia


def test_modality_below_the_floor_leaves_the_losses(monkeypatch, make_pair):
    import cellbridge.models.scmdcf._model as scmdcf

    monkeypatch.setattr(scmdcf, "modality_agreement_weights", lambda *a, **k: (1.0, 0.6))
    rna, adt = make_pair(n=60)
    base = resolve_params("default", "protein", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", CellBridgeWarning)  # nothing left out: no warning
        kept = cb.scMDCF(rna, adt, n_clusters=3, accelerator="cpu", modality_weight_floor=0.1)
    assert np.isclose(kept.modality_weights_[1], 0.6**4)  # 0.13 >= 0.1: kept, scaled
    with pytest.warns(CellBridgeWarning, match="protein input agrees too little with RNA"):
        dropped = cb.scMDCF(rna, adt, n_clusters=3, accelerator="cpu")  # default floor 0.2
    assert dropped.modality_weights_ == (1.0, 0.0)
    for phase in ("pretrain_weights", "finetune_weights"):
        hp = getattr(dropped.params, phase)
        assert hp["rec_other"] == 0 and hp["cl"] == 0 and hp["rec_rna"] == getattr(base, phase)["rec_rna"]


def test_reference_preset_has_no_weighting(make_pair):
    rna, adt = make_pair(n=60)
    model = cb.scMDCF(rna, adt, n_clusters=3, preset="reference", accelerator="cpu")
    assert model.modality_weights_ == (1.0, 1.0)
    assert model.params.cluster_method == "kmeans"


def test_atac_pca_representation(make_pair):
    rna, atac = make_pair(n=60, n_other=30, kind="atac")
    _, p_atac = prepare_paired(rna, atac, atac_representation="pca", n_pcs=5)
    assert p_atac.shape == (60, 5) and p_atac.uns["cellbridge_prepare"]["representation"] == "pca"
    assert np.isclose(p_atac.X[:, 0].std(), 1.0, atol=1e-3)


def test_agreement_weights_sparse_and_sampled():
    import scipy.sparse as sp

    x, _ = _blobs(n_per=60, k=4, dim=30)
    noise = np.random.default_rng(2).normal(size=x.shape)
    w_rna, w_other = modality_agreement_weights(sp.csr_matrix(x), noise, 4, max_cells=150)
    assert w_rna == 1.0 and w_other < 0.3


def test_presets_resolve_to_frozen_params():
    import dataclasses

    ref, default = resolve_params("reference", "atac", {}), resolve_params("default", "atac", {})
    assert isinstance(ref, ScMDCFParams) and ref == ScMDCFParams()  # the reference values for RNA+ATAC
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.lamb = 1.0
    cite = resolve_params("reference", "protein", {})
    assert cite.enc_hidden == (512, 64, 8) and cite.fusion_hidden == () and cite.lamb == 0.5
    assert cite.n_top_rna == 1000 and cite.n_top_other is None
    assert default.cluster_method == "kmeans_dec_init" and default.n_models == 5 and default.batch_size == 256
    over = resolve_params("default", "atac", {"enc_hidden": [128, 16], "pretrain_weights": {"cl": 0.5}})
    assert over.enc_hidden == (128, 16)  # lists become tuples
    assert over.pretrain_weights == {"rec_rna": 1.0, "rec_other": 1.0, "cl": 0.5}  # merged into the preset's
    assert over.replace(lamb=2.0).lamb == 2.0 and over.lamb == 10.0


def test_effective_sizes_and_sparse_threshold():
    p = resolve_params("default", "atac", {})
    assert p.effective_batch_size(20_000) is None and p.effective_batch_size(20_001) == 256
    assert p.effective_n_models(5_000) == 5 and p.effective_n_models(5_001) == 1
    assert p.sparse_threshold() == 20_000
    ref = resolve_params("reference", "atac", {})
    assert ref.effective_batch_size(10**6) is None and ref.sparse_threshold() is None
    assert ref.replace(batch_size=64).sparse_threshold() == 0  # no full-batch limit: always mini-batches


@pytest.mark.parametrize("overrides, match", [
    ({"pretrain_epochs": -1}, "`pretrain_epochs` must be at least 0"),
    ({"finetune_epochs": 1.5}, "`finetune_epochs` must be a whole number"),
    ({"rho": 1.5}, "`rho` must be between 0 and 1"),
    ({"dec_target": "soft"}, r"`dec_target` must be one of \('live', 'fixed'\)"),
    ({"batch_size": 1}, "`batch_size` must be at least 2"),
    ({"z_dim": None}, "`z_dim` must be a number, got None"),
    ({"learning_rate": 1}, r"unknown scMDCF parameter\(s\) \['learning_rate'\]"),
])
def test_invalid_values_are_refused_when_resolved(overrides, match):
    with pytest.raises(CellBridgeInputError, match=match):
        resolve_params("default", "atac", overrides)
    assert resolve_params("default", "atac", {"pretrain_epochs": 0}).pretrain_epochs == 0  # 0 skips a phase
    assert resolve_params("default", "atac", {"batch_size": None}).batch_size is None  # None: full batch
    with pytest.raises(CellBridgeInputError, match="Unknown scMDCF preset"):
        resolve_params("fast", "atac", {})
