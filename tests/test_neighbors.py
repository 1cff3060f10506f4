"""Neighbour search (cellbridge.neighbors): exact / approximate kNN, MNN pairs, kNN graphs."""

import numpy as np
import pytest

from cellbridge import CellBridgeInputError
from cellbridge.neighbors import graph_from_neighbors, knn, knn_graph, knn_indices, mnn_pairs, recall_at_k


def test_mnn_pairs_hand_example():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[0.1, 1.0], [1.0, 0.1]])
    pairs = mnn_pairs(a, b, k=1, method="exact")
    # a0 <-> b1 and a1 <-> b0 are mutual; a2 points to one of them but is nobody's nearest.
    assert pairs.tolist() == [[0, 1], [1, 0]]


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(5, 20)) * 5
    return centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 20))


def test_recall_at_k_hand_example():
    exact = np.array([[0, 1], [2, 3]])
    assert recall_at_k(exact, np.array([[1, 5], [3, 2]])) == pytest.approx(0.75)  # 1/2 and 2/2


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_knn_agrees_with_exact_on_clustered_data(method):
    a, b = _clustered(300, 1), _clustered(2500, 2)  # ivf: 2 lists of ~1,250 rows, both searched
    exact = knn(b, a, 10, method="exact")
    assert recall_at_k(exact, knn(b, a, 10, method=method)) > 0.95


def test_ivf_recall_grows_with_nprobe_and_is_seeded():
    a, b = _clustered(500, 1), _clustered(20_000, 2)  # 20 lists
    exact = knn(b, a, 10, method="exact")
    recalls = [recall_at_k(exact, knn(b, a, 10, method="ivf", nprobe=p)) for p in (1, 4, 20)]
    assert recalls[0] < recalls[1] <= recalls[2] == 1.0  # all lists searched: exact
    first, second = (knn(b, a, 10, method="ivf", nprobe=2, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first, second)


def test_ivf_pads_missing_neighbours_and_mnn_drops_them():
    a, b = _clustered(2_000, 1), _clustered(30, 2)  # 2 lists of ~1,000 rows of a, one searched
    found = knn(a, b, 1_500, method="ivf", nprobe=1)
    assert (found == -1).any() and (found[:, 0] >= 0).all()
    pairs = mnn_pairs(a, b, k=1_500, method="ivf", nprobe=1)
    # every row of a has all 30 rows of b as neighbours, so the pairs are the found entries
    expected = sorted((int(i), j) for j in range(len(b)) for i in found[j] if i >= 0)
    assert pairs.tolist() == [list(p) for p in expected]


def test_auto_uses_the_chosen_ann_above_the_exact_limit(monkeypatch):
    import cellbridge.neighbors as pairs

    monkeypatch.setattr(pairs, "EXACT_KNN_MAX_CELLS", 100)
    a, b = _clustered(200, 1), _clustered(1_500, 2)
    np.testing.assert_array_equal(knn(b, a, 5, ann="ivf", nprobe=1), knn(b, a, 5, method="ivf", nprobe=1))
    with pytest.raises(CellBridgeInputError, match="knn method"):
        knn(b, a, 5, ann="annoy")


def test_mnn_feature_mismatch_errors():
    with pytest.raises(CellBridgeInputError, match="same features"):
        mnn_pairs(np.ones((3, 2)), np.ones((3, 3)), k=1)


# ---------------------------------------------------------------------------- kNN graph


def test_knn_graph_is_symmetric_weighted_and_covers_neighbours(blobs):
    X, _ = blobs()
    g = knn_graph(X, n_neighbors=5)
    assert abs(g - g.T).max() < 1e-12
    assert g.data.min() > 0 and g.data.max() <= 1.0 + 1e-12
    assert g.diagonal().sum() == 0
    assert (np.diff(g.indptr) >= 5).all()  # every cell keeps at least its own 5 neighbours


def test_binary_knn_graph_is_the_union_of_neighbour_lists(blobs):
    X, _ = blobs()
    _, idx = knn_indices(X, 5)
    g = knn_graph(X, n_neighbors=5, weights="binary")
    assert set(np.unique(g.data)) == {1.0} and abs(g - g.T).max() == 0 and g.diagonal().sum() == 0
    edges = {(i, int(j)) for i in range(len(X)) for j in idx[i]}
    edges |= {(j, i) for i, j in edges}
    rows, cols = g.nonzero()
    assert set(zip(rows.tolist(), cols.tolist())) == edges
    umap = knn_graph(X, n_neighbors=5)
    assert np.array_equal((umap > 0).toarray(), (g > 0).toarray())  # same edges, other weights
    with pytest.raises(CellBridgeInputError, match="weights"):
        knn_graph(X, n_neighbors=5, weights="gaussian")


def test_graph_from_neighbors_equals_knn_graph(blobs):
    X, _ = blobs()
    dist, idx = knn_indices(X, 7)
    assert idx.shape == (120, 7) and not (idx == np.arange(120)[:, None]).any()  # self excluded
    assert abs(graph_from_neighbors(dist, idx) - knn_graph(X, n_neighbors=7)).max() == 0


def test_knn_indices_with_duplicates_and_too_few_cells():
    X = np.array([[0.0], [0.0], [0.0], [5.0]])  # three identical points
    _, idx = knn_indices(X, 2)
    assert not (idx == np.arange(4)[:, None]).any()
    with pytest.raises(CellBridgeInputError, match="at least 2 cells"):
        knn_indices(np.zeros((1, 2)), 3)


def test_smooth_over_neighbors_by_hand_and_missing_neighbours():
    from cellbridge.neighbors import smooth_over_neighbors

    X = np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]], dtype=np.float32)
    nbrs = np.array([[1, 2], [0, 2], [1, -1]])  # -1: not found (faiss IVF), left out of the mean
    out = smooth_over_neighbors(X, nbrs, 0.5)
    np.testing.assert_allclose(out, [[1.5, 3.0], [2.0, 4.0], [3.0, 6.0]])
    np.testing.assert_array_equal(smooth_over_neighbors(X, nbrs, 1.0), X)
