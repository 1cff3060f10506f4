"""Clustering tools (cellbridge.tl.clustering): Leiden, k-means, K estimate, consensus."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.neighbors import knn_graph
from cellbridge.tl import consensus_clusters, estimate_n_clusters, kmeans, leiden
from cellbridge.tl.clustering import leiden_on_graph


def test_public_api():
    assert cb.tl.leiden is leiden and cb.tl.kmeans is kmeans
    assert cb.tl.estimate_n_clusters is estimate_n_clusters
    assert cb.tl.consensus_clusters is consensus_clusters
    assert not hasattr(cb.tl, "knn_graph")  # the graph lives in cellbridge.neighbors


# ---------------------------------------------------------------------------- clustering


def test_leiden_recovers_blobs_deterministically_and_orders_by_size(blobs):
    X, labels = blobs()
    a = leiden(X, resolution=0.5, seed=0)
    assert adjusted_rand_score(labels, a) == 1.0
    assert np.array_equal(a, leiden(X, resolution=0.5, seed=0))
    assert list(np.bincount(a)) == [50, 40, 30]


def _three_blobs(n_per: int = 40, dim: int = 10, seed: int = 0):
    """Three well separated blobs of equal size (a clear K = 3)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=8.0, size=(3, dim))
    labels = np.repeat(np.arange(3), n_per)
    return centers[labels] + rng.normal(size=(3 * n_per, dim)), labels


@pytest.mark.parametrize("flavor", ["igraph", "leidenalg"])
def test_leiden_n_clusters_bisection_hits_k_for_both_flavors(flavor):
    X, truth = _three_blobs()
    lab = leiden(X, n_clusters=3, seed=0, flavor=flavor)
    assert len(np.unique(lab)) == 3 and set(np.unique(lab)) == {0, 1, 2}
    assert adjusted_rand_score(truth, lab) > 0.95
    sizes = np.bincount(lab)
    assert list(sizes) == sorted(sizes, reverse=True)  # 0 = largest, for both flavors
    assert np.array_equal(lab, leiden(X, n_clusters=3, seed=0, flavor=flavor))
    with pytest.raises(CellBridgeInputError, match="n_clusters"):
        leiden(X, n_clusters=0, flavor=flavor)


def test_leiden_n_clusters_four_blobs_as_scmdcf_used_it():
    # the former scMDCF leiden_n_clusters test: 4 blobs, unweighted 15-NN graph (flavor leidenalg)
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(4, 10))
    truth = np.repeat(np.arange(4), 40)
    x = centers[truth] + rng.normal(size=(160, 10))
    lab = leiden(x, n_clusters=4, flavor="leidenalg")
    assert len(np.unique(lab)) == 4
    assert adjusted_rand_score(truth, lab) > 0.95


def test_leiden_flavors_on_a_graph_and_unknown_flavor(blobs):
    X, truth = blobs()
    for flavor, weights in (("igraph", "umap"), ("leidenalg", "binary")):
        graph = knn_graph(X, n_neighbors=15, weights=weights)
        lab = leiden_on_graph(graph, resolution=0.5, seed=0, flavor=flavor)
        assert adjusted_rand_score(truth, lab) == 1.0 and list(np.bincount(lab)) == [50, 40, 30]
        assert np.array_equal(lab, leiden(X, resolution=0.5, seed=0, flavor=flavor))
    with pytest.raises(CellBridgeInputError, match="flavor"):
        leiden_on_graph(knn_graph(X), flavor="louvain")
    assert estimate_n_clusters(X, resolution=0.5, flavor="leidenalg") == 3


def test_kmeans_and_centers(blobs):
    X, labels = blobs()
    pred, centers = kmeans(X, 3, seed=0, return_centers=True)
    assert adjusted_rand_score(labels, pred) == 1.0
    assert centers.shape == (3, X.shape[1])
    assert np.array_equal(pred, kmeans(X, 3, seed=0))
    with pytest.raises(CellBridgeInputError, match="n_clusters"):
        kmeans(X, 0)


def test_estimate_n_clusters(blobs):
    X, _ = blobs()
    assert estimate_n_clusters(X, resolution=0.5) == 3
    assert estimate_n_clusters(X, resolution=0.5, min_size=35) == 2


def test_embedding_checks():
    with pytest.raises(CellBridgeInputError, match="2-D"):
        leiden(np.zeros(5))
    bad = np.zeros((5, 2))
    bad[0, 0] = np.nan
    with pytest.raises(CellBridgeInputError, match="finite"):
        kmeans(bad, 2)


# ---------------------------------------------------------------------------- AnnData / MuData in


def _annotated(X, key="X_biclum"):
    import anndata as ad

    return ad.AnnData(np.zeros((X.shape[0], 1)), obsm={key: X})


def test_leiden_and_kmeans_on_anndata_write_obs_like_scanpy(blobs):
    X, _ = blobs()
    adata = _annotated(X)
    assert leiden(adata, resolution=0.5, seed=0) is None  # in place
    expected = leiden(X, resolution=0.5, seed=0)
    assert adata.obs["leiden"].tolist() == [str(v) for v in expected]
    assert list(adata.obs["leiden"].cat.categories) == ["0", "1", "2"]
    assert adata.uns["leiden"]["params"]["resolution"] == 0.5
    out = kmeans(adata, 3, seed=0, key_added="km", copy=True)
    assert "km" not in adata.obs and out.obs["km"].tolist() == [str(v) for v in kmeans(X, 3, seed=0)]
    assert out.uns["km"]["centers"].shape == (3, X.shape[1])
    assert estimate_n_clusters(adata, resolution=0.5) == 3


def test_leiden_on_mudata_reads_the_top_level_embedding(blobs):
    import anndata as ad
    import mudata as md

    X, truth = blobs(sizes=(30, 30), dim=3)
    rna = ad.AnnData(np.zeros((30, 1)), obsm={"X_pca": X[:30]})
    atac = ad.AnnData(np.zeros((30, 1)), obsm={"X_pca": X[30:]})
    atac.obs_names, atac.var_names = [f"a{i}" for i in range(30)], ["peak0"]
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "atac": atac})
    with pytest.raises(CellBridgeInputError, match="modalities .*rna.*atac"):  # only per modality
        leiden(mdata, use_rep="X_pca")
    mdata.obsm["X_pca"] = X
    leiden(mdata, use_rep="X_pca", resolution=0.5)
    assert adjusted_rand_score(truth, mdata.obs["leiden"].astype(int)) == 1.0


def test_use_rep_errors_name_the_keys(blobs):
    X, _ = blobs()
    adata = _annotated(X, key="X_other")
    with pytest.raises(CellBridgeInputError, match="X_biclum.*X_other"):  # default: none present
        leiden(adata)
    with pytest.raises(CellBridgeInputError, match="no 'X_umap'.*X_other"):
        kmeans(adata, 2, use_rep="X_umap")
    leiden(adata, use_rep="X_other", resolution=0.5)  # named explicitly: fine
    assert adata.obs["leiden"].nunique() == 3


# ---------------------------------------------------------------------------- consensus


def test_consensus_clusters_by_hand():
    # co-association (4 clusterings): cells 0-1 and 4-5 always together; cell 2 is with 0-1 in 3 of
    # 4 and with 3 in 2 of 4; cell 3 is with 4-5 in 3 of 4. Average linkage merges {0,1} and
    # {4,5} (distance 0), then 2 into {0,1} and 3 into {4,5} (distance 1/4), then the two
    # groups (distance above 1/2): the K = 2 cut is {0,1,2} {3,4,5}, whatever the label names.
    labelings = [["a", "a", "a", "b", "b", "b"], [0, 0, 1, 1, 1, 1], [5, 5, 5, 5, 7, 7], [1, 1, 1, 0, 0, 0]]
    assert consensus_clusters(labelings, 2).tolist() == [0, 0, 0, 1, 1, 1]
    assert len(set(consensus_clusters(labelings, 6).tolist())) == 6


def test_consensus_clusters_recovers_groups_and_samples_large_inputs():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 100)
    noisy = []
    for _ in range(5):
        lab = truth.copy()
        flip = rng.random(truth.size) < 0.1
        lab[flip] = rng.integers(0, 3, flip.sum())
        noisy.append(lab)
    exact = consensus_clusters(noisy, 3)
    sampled = consensus_clusters(noisy, 3, max_cells=60, seed=1)
    assert adjusted_rand_score(truth, exact) > 0.95
    assert adjusted_rand_score(truth, sampled) > 0.95
    assert np.max([adjusted_rand_score(truth, lab) for lab in noisy]) < adjusted_rand_score(truth, exact)
    assert np.array_equal(sampled, consensus_clusters(noisy, 3, max_cells=60, seed=1))


def test_consensus_clusters_of_obs_columns(blobs):
    X, truth = blobs()
    adata = _annotated(X)
    leiden(adata, resolution=0.5)
    kmeans(adata, 3)
    consensus_clusters(adata, 3, keys=["leiden", "kmeans"])
    assert adjusted_rand_score(truth, adata.obs["consensus"]) == 1.0
    assert adata.uns["consensus"]["params"]["keys"] == ["leiden", "kmeans"]
    with pytest.raises(CellBridgeInputError, match=r"missing: \['louvain'\]"):
        consensus_clusters(adata, 3, keys=["leiden", "louvain"])


def test_consensus_clusters_errors():
    with pytest.raises(CellBridgeInputError, match="same cells"):
        consensus_clusters([[0, 1, 1], [0, 1]], 2)
    with pytest.raises(CellBridgeInputError, match="between 1 and"):
        consensus_clusters([[0, 1, 1]], 4)
    with pytest.raises(CellBridgeInputError, match="non-empty"):
        consensus_clusters([], 2)
    assert consensus_clusters([[3]], 1).tolist() == [0]
