"""Label transfer and clustering tools."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.tl import consensus_clusters, estimate_n_clusters, kmeans, knn_graph, leiden, transfer_labels


def _blobs(sizes=(50, 40, 30), dim: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centers = rng.normal(size=(len(sizes), dim)) * 30
    return centers[labels] + rng.normal(size=(labels.size, dim)), labels


def test_public_api():
    assert cb.tl.transfer_labels is transfer_labels
    assert cb.tl.leiden is leiden and cb.tl.kmeans is kmeans
    assert cb.tl.estimate_n_clusters is estimate_n_clusters
    assert cb.tl.consensus_clusters is consensus_clusters


# ---------------------------------------------------------------------------- transfer


def test_transfer_labels_separated_clusters():
    X, labels = _blobs()
    names = np.array(["B", "T", "NK"], dtype=object)[labels]
    Y, _ = _blobs(seed=0)
    pred, conf = transfer_labels(X, pd.Series(names), Y + 0.5, k=5)
    assert list(pred) == list(names)
    assert np.all(conf == 1.0)


def test_transfer_labels_majority_and_tie_by_hand():
    ref = np.array([[0.0], [1.0], [2.0], [3.0]])
    labels = ["A", "B", "B", "A"]
    # query 1.6, k=3: neighbours 2 (B, .4), 1 (B, .6), 3 (A, 1.4) -> B with 2/3
    pred, conf = transfer_labels(ref, labels, np.array([[1.6]]), k=3)
    assert pred[0] == "B" and conf[0] == pytest.approx(2 / 3)
    # query 0.4, k=2: neighbours 0 (A, .4) and 1 (B, .6) tie -> the nearest one wins
    pred, conf = transfer_labels(ref, labels, np.array([[0.4]]), k=2)
    assert pred[0] == "A" and conf[0] == 0.5


def test_transfer_labels_caps_k_and_keeps_label_values():
    pred, conf = transfer_labels(np.zeros((2, 2)), [7, 7], np.ones((3, 2)), k=10)
    assert list(pred) == [7, 7, 7] and np.all(conf == 1.0)


def test_transfer_labels_errors():
    with pytest.raises(CellBridgeInputError, match="dimensions"):
        transfer_labels(np.zeros((3, 2)), ["a"] * 3, np.zeros((1, 3)))
    with pytest.raises(CellBridgeInputError, match="missing"):
        transfer_labels(np.zeros((3, 2)), ["a", None, "b"], np.zeros((1, 2)))
    with pytest.raises(CellBridgeInputError, match="one label per"):
        transfer_labels(np.zeros((3, 2)), ["a"], np.zeros((1, 2)))


# ---------------------------------------------------------------------------- clustering


def test_knn_graph_is_symmetric_weighted_and_covers_neighbours():
    X, _ = _blobs()
    g = knn_graph(X, n_neighbors=5)
    assert abs(g - g.T).max() < 1e-12
    assert g.data.min() > 0 and g.data.max() <= 1.0 + 1e-12
    assert g.diagonal().sum() == 0
    assert (np.diff(g.indptr) >= 5).all()  # every cell keeps at least its own 5 neighbours


def test_leiden_recovers_blobs_deterministically_and_orders_by_size():
    X, labels = _blobs()
    a = leiden(X, resolution=0.5, seed=0)
    assert adjusted_rand_score(labels, a) == 1.0
    assert np.array_equal(a, leiden(X, resolution=0.5, seed=0))
    assert list(np.bincount(a)) == [50, 40, 30]


def test_kmeans_and_centers():
    X, labels = _blobs()
    pred, centers = kmeans(X, 3, seed=0, return_centers=True)
    assert adjusted_rand_score(labels, pred) == 1.0
    assert centers.shape == (3, X.shape[1])
    assert np.array_equal(pred, kmeans(X, 3, seed=0))
    with pytest.raises(CellBridgeInputError, match="n_clusters"):
        kmeans(X, 0)


def test_estimate_n_clusters():
    X, _ = _blobs()
    assert estimate_n_clusters(X, resolution=0.5) == 3
    assert estimate_n_clusters(X, resolution=0.5, min_size=35) == 2


def test_embedding_checks():
    with pytest.raises(CellBridgeInputError, match="2-D"):
        leiden(np.zeros(5))
    bad = np.zeros((5, 2))
    bad[0, 0] = np.nan
    with pytest.raises(CellBridgeInputError, match="finite"):
        kmeans(bad, 2)


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


def test_consensus_clusters_errors():
    with pytest.raises(CellBridgeInputError, match="same cells"):
        consensus_clusters([[0, 1, 1], [0, 1]], 2)
    with pytest.raises(CellBridgeInputError, match="between 1 and"):
        consensus_clusters([[0, 1, 1]], 4)
    with pytest.raises(CellBridgeInputError, match="non-empty"):
        consensus_clusters([], 2)
    assert consensus_clusters([[3]], 1).tolist() == [0]
