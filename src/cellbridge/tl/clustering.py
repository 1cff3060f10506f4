"""Clustering of embeddings: kNN graph, Leiden, k-means and an estimate of the number of clusters.

The kNN graph is built here (exact kNN from scikit-learn, UMAP-style fuzzy weights computed with
numpy) instead of through ``scanpy.pp.neighbors``: it gives the same kind of weighted graph without
numba compilation, and ``n_neighbors`` counts neighbours *other than the cell itself*.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from .._errors import CellBridgeInputError

__all__ = ["knn_graph", "leiden", "kmeans", "estimate_n_clusters", "consensus_clusters"]

#: Above this many cells :func:`consensus_clusters` builds its tree on a sample (memory ~ n²).
CONSENSUS_MAX_CELLS = 10_000


def as_embedding(emb, name: str = "emb", *, min_rows: int = 1) -> np.ndarray:
    """Validate a cells x dimensions embedding and return it as a float array."""
    X = np.asarray(emb.toarray() if sp.issparse(emb) else emb)
    if X.ndim != 2:
        raise CellBridgeInputError(
            f"`{name}` must be a 2-D cells x dimensions array, got shape {X.shape}; "
            "reshape it, e.g. `x.reshape(-1, 1)` for a single dimension."
        )
    if X.shape[0] < min_rows:
        raise CellBridgeInputError(
            f"`{name}` has {X.shape[0]} cells; at least {min_rows} are needed here."
        )
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise CellBridgeInputError(
            f"`{name}` must hold finite numbers (found NaN/inf or non-numeric values); "
            "remove those cells or impute the values first."
        )
    return X.astype(np.float64, copy=False)


def knn_indices(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the ``k`` nearest neighbours of each row, the row itself excluded.

    With duplicated points the row may not come first among its neighbours; it is removed
    wherever it appears (or the farthest hit is dropped when it does not appear).
    """
    n = X.shape[0]
    k = min(k, n - 1)
    if k < 1:
        raise CellBridgeInputError(f"need at least 2 cells for a neighbour graph, got {n}.")
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return dist[keep].reshape(n, k), idx[keep].reshape(n, k)


def _fuzzy_weights(dist: np.ndarray, n_iter: int = 64) -> np.ndarray:
    """UMAP-style membership strengths exp(-(d - rho) / sigma); each row sums to log2(k + 1).

    ``k + 1`` counts the cell itself, as UMAP's ``n_neighbors`` does.
    """
    target = np.log2(dist.shape[1] + 1)
    rho = dist[:, :1]
    shifted = np.maximum(dist - rho, 0.0)
    lo, hi = np.zeros((dist.shape[0], 1)), np.full((dist.shape[0], 1), np.inf)
    sigma = np.ones((dist.shape[0], 1))
    for _ in range(n_iter):  # vectorised bisection on sigma
        total = np.exp(-shifted / sigma).sum(axis=1, keepdims=True)
        too_big = total > target
        hi = np.where(too_big, sigma, hi)
        lo = np.where(too_big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    return np.exp(-shifted / np.maximum(sigma, 1e-12))


def knn_graph(emb, *, n_neighbors: int = 15) -> sp.csr_matrix:
    """Symmetric weighted kNN graph (UMAP fuzzy union) of an embedding.

    Parameters
    ----------
    emb
        Cells x dimensions array.
    n_neighbors
        Neighbours per cell, the cell itself not counted.

    Returns
    -------
    scipy.sparse.csr_matrix
        Cells x cells connectivities in (0, 1]; the union of each cell's kNN edges.
    """
    X = as_embedding(emb, min_rows=2)
    dist, idx = knn_indices(X, n_neighbors)
    n, k = idx.shape
    weights = _fuzzy_weights(dist)
    rows = np.repeat(np.arange(n), k)
    A = sp.csr_matrix((weights.ravel(), (rows, idx.ravel())), shape=(n, n))
    product = A.multiply(A.T)
    graph = (A + A.T - product).tocsr()
    graph.eliminate_zeros()
    return graph


def _igraph(graph: sp.spmatrix):
    import igraph as ig

    upper = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=np.column_stack([upper.row, upper.col]).tolist())
    g.es["weight"] = upper.data.tolist()
    return g


def leiden_on_graph(graph: sp.spmatrix, *, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Leiden clustering (igraph's C implementation, modularity quality) of a connectivity graph.

    Modularity with a resolution parameter is the RB-configuration quality that scanpy's Leiden
    uses; igraph's implementation is about ten times faster than ``leidenalg`` here. Iterates
    until the partition is stable. The random generator is seeded for the call only.

    Parameters
    ----------
    graph
        Symmetric cells x cells weight matrix, e.g. from :func:`knn_graph`.
    resolution
        Higher values give more clusters.
    seed
        Random seed; the result is deterministic for a given seed.

    Returns
    -------
    numpy.ndarray
        Integer cluster label per cell, 0 for the largest cluster.
    """
    import random

    import igraph as ig

    g = _igraph(graph)
    ig.set_random_number_generator(random.Random(seed))
    try:
        partition = g.community_leiden(
            objective_function="modularity", weights="weight", resolution=resolution, n_iterations=-1
        )
    finally:
        ig.set_random_number_generator(random)
    return _relabel_by_size(np.asarray(partition.membership, dtype=np.int64))


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..K-1 by decreasing size (ties: first appearance)."""
    _, first, inverse, counts = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -counts))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse].astype(np.int64)


def leiden(emb, *, resolution: float = 1.0, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """Leiden clustering of an embedding on its kNN graph.

    Parameters
    ----------
    emb
        Cells x dimensions array (e.g. a joint or fused embedding).
    resolution
        Leiden resolution; higher values give more clusters.
    n_neighbors
        Neighbours per cell in the graph (the cell itself not counted).
    seed
        Random seed; the result is deterministic for a given seed.

    Returns
    -------
    numpy.ndarray
        Integer cluster labels (0 = largest cluster).
    """
    graph = knn_graph(emb, n_neighbors=n_neighbors)
    return leiden_on_graph(graph, resolution=resolution, seed=seed)


def kmeans(
    emb, n_clusters: int, *, seed: int = 0, n_init: int = 20, return_centers: bool = False
):
    """k-means clustering (scikit-learn) of an embedding.

    Parameters
    ----------
    emb
        Cells x dimensions array.
    n_clusters
        Number of clusters K (1 <= K <= number of cells).
    seed
        Random seed of the initialisation.
    n_init
        Number of k-means++ restarts; the best (lowest inertia) is kept.
    return_centers
        Also return the K x dimensions centroids (e.g. to initialise DEC cluster centres).

    Returns
    -------
    numpy.ndarray or tuple
        Integer labels, or ``(labels, centers)`` when ``return_centers`` is true.
    """
    from sklearn.cluster import KMeans

    X = as_embedding(emb)
    _check_n_clusters(n_clusters, X.shape[0], "; pass a smaller K or use `estimate_n_clusters(emb)`")
    model = KMeans(n_clusters=int(n_clusters), n_init=n_init, random_state=seed).fit(X)
    labels = model.labels_.astype(np.int64)
    return (labels, model.cluster_centers_) if return_centers else labels


def _check_n_clusters(n_clusters: int, n_cells: int, hint: str = "") -> None:
    if not 1 <= int(n_clusters) <= n_cells:
        raise CellBridgeInputError(
            f"`n_clusters` must be between 1 and the number of cells ({n_cells}), got {n_clusters}{hint}."
        )


def estimate_n_clusters(
    emb, *, resolution: float = 1.0, n_neighbors: int = 15, seed: int = 0, min_size: int = 1
) -> int:
    """Estimate the number of clusters K by Leiden clustering of the kNN graph.

    Parameters
    ----------
    emb
        Cells x dimensions array.
    resolution
        Leiden resolution (default 1.0, scanpy's default).
    n_neighbors
        Neighbours per cell in the graph.
    seed
        Random seed.
    min_size
        Clusters with fewer cells than this are not counted (``1`` counts all).

    Returns
    -------
    int
        The number of Leiden clusters (at least 1).
    """
    labels = leiden(emb, resolution=resolution, n_neighbors=n_neighbors, seed=seed)
    sizes = np.bincount(labels)
    return max(int((sizes >= min_size).sum()), 1)


def _label_codes(labelings, n_clusters: int) -> np.ndarray:
    """Validate clusterings of the same cells; ``(cells, clusterings)`` integer codes."""
    arrays = [np.asarray(lab) for lab in labelings]
    if not arrays or any(a.ndim != 1 for a in arrays):
        raise CellBridgeInputError("`labelings` must be a non-empty list of 1-D label arrays.")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise CellBridgeInputError(
            f"all clusterings must label the same cells; got lengths {[a.shape[0] for a in arrays]}."
        )
    _check_n_clusters(n_clusters, n)
    return np.stack([np.unique(a, return_inverse=True)[1].ravel() for a in arrays], axis=1)


def _one_hot(codes: np.ndarray) -> sp.csr_matrix:
    """Cells x (all clusters of all clusterings) indicator matrix."""
    offsets = np.concatenate([[0], np.cumsum(codes.max(axis=0) + 1)])
    cols = (codes + offsets[:-1]).ravel()
    rows = np.repeat(np.arange(codes.shape[0]), codes.shape[1])
    return sp.csr_matrix((np.ones(cols.size, dtype=np.float32), (rows, cols)),
                         shape=(codes.shape[0], int(offsets[-1])))


def consensus_clusters(labelings, n_clusters: int, *, max_cells: int = CONSENSUS_MAX_CELLS,
                       seed: int = 0) -> np.ndarray:
    """Consensus of several clusterings of the same cells (evidence accumulation).

    The co-association of two cells is the fraction of the clusterings that put them in one
    cluster; cells are clustered by average linkage on ``1 - co-association`` and the tree is cut
    into ``n_clusters`` clusters (Fred & Jain, IEEE TPAMI 2005). Above ``max_cells`` cells the
    tree is built on a seeded sample of ``max_cells`` cells (the co-association matrix is
    quadratic in cells), and every cell then joins the consensus cluster with which its mean
    co-association is highest (a cluster can then come out empty).

    Parameters
    ----------
    labelings
        Sequence of label arrays (any hashable labels), one per clustering, each over the same
        cells in the same order.
    n_clusters
        Number of consensus clusters.
    max_cells
        Largest number of cells clustered exactly.
    seed
        Seed of the sample above ``max_cells``.

    Returns
    -------
    numpy.ndarray
        Integer labels (0 = largest cluster).
    """
    from sklearn.cluster import AgglomerativeClustering

    codes = _label_codes(labelings, n_clusters)
    if int(n_clusters) == 1:
        return np.zeros(codes.shape[0], dtype=np.int64)
    onehot, n_runs, n = _one_hot(codes), codes.shape[1], codes.shape[0]
    rows = np.arange(n) if n <= max_cells else \
        np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))
    sample = onehot[rows]
    distance = 1.0 - (sample @ sample.T).toarray().astype(np.float64) / n_runs
    tree = AgglomerativeClustering(int(n_clusters), metric="precomputed",
                                   linkage="average").fit_predict(distance)
    if n <= max_cells:
        return _relabel_by_size(tree)
    members = sp.csr_matrix((np.ones(tree.size), (np.arange(tree.size), tree)))
    share = (sample.T @ members).toarray() / np.bincount(tree)  # label -> fraction per cluster
    return _relabel_by_size((onehot @ share).argmax(axis=1))
