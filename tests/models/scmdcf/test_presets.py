"""scMDCF options beyond the reference: Leiden-to-K clustering, modality weighting, ATAC PCA input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from test_paired_pp import make_pair

import cellbridge as cb
from cellbridge import CellBridgeWarning
from cellbridge.models.scmdcf import leiden_n_clusters, modality_agreement_weights
from cellbridge.models.scmdcf_presets import resolve_hyperparams
from cellbridge.pp import prepare_paired


def _blobs(n_per: int = 40, k: int = 4, dim: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=8.0, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return centers[labels] + rng.normal(size=(k * n_per, dim)), labels


def test_leiden_n_clusters_hits_k_on_blobs():
    x, truth = _blobs()
    lab = leiden_n_clusters(x, 4)
    assert len(np.unique(lab)) == 4
    assert adjusted_rand_score(truth, lab) > 0.95


def test_agreement_weights_down_weight_noise_modality():
    x, _ = _blobs(k=4, dim=30)
    noise = np.random.default_rng(1).normal(size=x.shape)
    w_rna, w_other = modality_agreement_weights(x, noise, 4)
    assert w_rna == 1.0 and w_other < 0.3
    w_rna, w_other = modality_agreement_weights(noise, x, 4)
    assert w_other == 1.0 and w_rna < 0.3


def test_agreement_weighting_scales_reconstruction_weights_only():
    rna, adt = make_pair(n=60)
    model = cb.scMDCF(rna, adt, n_clusters=3, modality_weighting="agreement", accelerator="cpu", n_models=1)
    w_rna, w_other = model.modality_weights_
    assert max(w_rna, w_other) == 1.0 and min(w_rna, w_other) > 0
    base = resolve_hyperparams("default", "protein", {})
    for phase in ("pretrain_weights", "finetune_weights"):
        hp = model.hyperparams[phase]
        assert np.isclose(hp["rec_rna"], base[phase]["rec_rna"] * w_rna)
        assert np.isclose(hp["rec_other"], base[phase]["rec_other"] * w_other)
        assert np.isclose(hp["cl"], base[phase]["cl"] * min(w_rna, w_other))
    model.train(2, 1, progress=False)
    lab = model.predict_clusters("leiden")
    assert lab.shape == (60,) and len(np.unique(lab)) >= 2
    assert base["cluster_method"] == "kmeans_dec_init"  # the default: KMeans from the DEC centroids
    lab = model.predict_clusters()
    assert lab.shape == (60,) and set(np.unique(lab)) <= {0, 1, 2}
    z, centres = model.get_latent(), model.module.centers.detach().numpy()
    nearest = ((z[:, None] - centres[None]) ** 2).sum(-1)
    refined = sum(((z[lab == j] - z[lab == j].mean(0)) ** 2).sum() for j in np.unique(lab))
    assert refined <= nearest.min(1).sum() + 1e-6  # Lloyd iterations from the centroids never increase inertia


def test_modality_below_the_floor_leaves_the_losses(monkeypatch):
    import cellbridge.models.scmdcf as scmdcf

    monkeypatch.setattr(scmdcf, "modality_agreement_weights", lambda *a, **k: (1.0, 0.6))
    rna, adt = make_pair(n=60)
    base = resolve_hyperparams("default", "protein", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", CellBridgeWarning)  # nothing left out: no warning
        kept = cb.scMDCF(rna, adt, n_clusters=3, accelerator="cpu", modality_weight_floor=0.1)
    assert np.isclose(kept.modality_weights_[1], 0.6**4)  # 0.13 >= 0.1: kept, scaled
    with pytest.warns(CellBridgeWarning, match="protein input agrees too little with RNA"):
        dropped = cb.scMDCF(rna, adt, n_clusters=3, accelerator="cpu")  # default floor 0.2
    assert dropped.modality_weights_ == (1.0, 0.0)
    for phase in ("pretrain_weights", "finetune_weights"):
        hp = dropped.hyperparams[phase]
        assert hp["rec_other"] == 0 and hp["cl"] == 0 and hp["rec_rna"] == base[phase]["rec_rna"]


def test_reference_preset_has_no_weighting():
    rna, adt = make_pair(n=60)
    model = cb.scMDCF(rna, adt, n_clusters=3, preset="reference", accelerator="cpu")
    assert model.modality_weights_ == (1.0, 1.0)
    assert model.hyperparams["cluster_method"] == "kmeans"


def test_atac_pca_representation():
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
