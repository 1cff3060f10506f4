"""Clustering of embeddings: Leiden, k-means, an estimate of the number of clusters, consensus."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from .._errors import CellBridgeInputError
from .._utils import sample_or_all
from .._validate import as_embedding
from ..neighbors import knn_graph

__all__ = ["leiden", "kmeans", "estimate_n_clusters", "consensus_clusters"]

#: Above this many cells :func:`consensus_clusters` builds its tree on a sample (memory ~ n²).
CONSENSUS_MAX_CELLS = 10_000


Flavor = Literal["igraph", "leidenalg"]


def _igraph(graph: sp.spmatrix):
    import igraph as ig

    upper = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=np.column_stack([upper.row, upper.col]).tolist())
    g.es["weight"] = upper.data.tolist()
    return g


def leiden_on_graph(graph: sp.spmatrix, *, resolution: float = 1.0, n_clusters: int | None = None, seed: int = 0,
                    flavor: Flavor = "igraph", weighted: bool | None = None) -> np.ndarray:
    """Leiden clustering of a connectivity graph (modularity with a resolution parameter, the
    RB-configuration quality that scanpy's Leiden uses).

    Parameters
    ----------
    graph
        Symmetric cells x cells weight matrix, e.g. from :func:`cellbridge.neighbors.knn_graph`.
    resolution
        Higher values give more clusters.
    n_clusters
        When given, the resolution is bisected (12 steps over [0.01, 5]) to give this many
        clusters, or the closest count reached.
    seed
        Random seed; the result is deterministic for a given seed.
    flavor
        ``"igraph"``: igraph's C implementation, edge weights used, iterated until the partition
        is stable (about ten times faster than ``leidenalg`` here); ``"leidenalg"``: the
        ``leidenalg`` package, two iterations, edges unweighted (the estimate of K that scMDCF has
        always used).
    weighted
        Use the edge weights (None: yes for ``"igraph"``, no for ``"leidenalg"``).

    Returns
    -------
    numpy.ndarray
        Integer cluster label per cell, 0 for the largest cluster.
    """
    import random

    if n_clusters is not None:
        _check_n_clusters(n_clusters, graph.shape[0])
        return _leiden_to_k(graph, int(n_clusters), seed=seed, flavor=flavor, weighted=weighted)
    g = _igraph(graph)
    if flavor == "leidenalg":
        import leidenalg

        part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, resolution_parameter=resolution,
                                        seed=seed, n_iterations=2, weights="weight" if weighted else None)
        return _relabel_by_size(np.asarray(part.membership, dtype=np.int64))
    if flavor != "igraph":
        raise CellBridgeInputError(f'`flavor` must be "igraph" or "leidenalg", got {flavor!r}.')
    import igraph as ig

    ig.set_random_number_generator(random.Random(seed))
    try:
        partition = g.community_leiden(objective_function="modularity", weights=None if weighted is False else "weight",
                                       resolution=resolution, n_iterations=-1)
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


def _leiden_to_k(graph: sp.spmatrix, n_clusters: int, *, seed: int, flavor: Flavor, weighted: bool | None,
                 max_steps: int = 12) -> np.ndarray:
    """Leiden with the resolution bisected over [0.01, 5] to give ``n_clusters`` communities (the
    closest count found when it is never hit exactly)."""
    lo, hi, best = 0.01, 5.0, None
    for _ in range(max_steps):
        mid = (lo + hi) / 2
        labels = leiden_on_graph(graph, resolution=mid, seed=seed, flavor=flavor, weighted=weighted)
        n = len(np.unique(labels))
        if best is None or abs(n - n_clusters) < abs(len(np.unique(best)) - n_clusters):
            best = labels
        if n == n_clusters:
            break
        lo, hi = (mid, hi) if n < n_clusters else (lo, mid)
    return best


def leiden(emb, *, resolution: float = 1.0, n_clusters: int | None = None, n_neighbors: int = 15,
           seed: int = 0, flavor: Flavor = "igraph") -> np.ndarray:
    """Leiden clustering of an embedding on its kNN graph.

    Parameters
    ----------
    emb
        Cells x dimensions array (e.g. a joint or fused embedding).
    resolution
        Leiden resolution; higher values give more clusters.
    n_clusters
        When given, the resolution is bisected to give this many clusters (see
        :func:`leiden_on_graph`).
    n_neighbors
        Neighbours per cell in the graph (the cell itself not counted).
    seed
        Random seed; the result is deterministic for a given seed.
    flavor
        ``"igraph"`` (weighted UMAP-style graph) or ``"leidenalg"`` (unweighted graph, scMDCF's
        historical path); see :func:`leiden_on_graph`.

    Returns
    -------
    numpy.ndarray
        Integer cluster labels (0 = largest cluster).
    """
    graph = knn_graph(emb, n_neighbors=n_neighbors, weights="binary" if flavor == "leidenalg" else "umap")
    return leiden_on_graph(graph, resolution=resolution, n_clusters=n_clusters, seed=seed, flavor=flavor)


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
    emb, *, resolution: float = 1.0, n_neighbors: int = 15, seed: int = 0, min_size: int = 1,
    flavor: Flavor = "igraph",
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
    flavor
        Leiden implementation, see :func:`leiden`.

    Returns
    -------
    int
        The number of Leiden clusters (at least 1).
    """
    labels = leiden(emb, resolution=resolution, n_neighbors=n_neighbors, seed=seed, flavor=flavor)
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
    rows = sample_or_all(n, max_cells, seed)
    sample = onehot[rows]
    distance = 1.0 - (sample @ sample.T).toarray().astype(np.float64) / n_runs
    tree = AgglomerativeClustering(int(n_clusters), metric="precomputed",
                                   linkage="average").fit_predict(distance)
    if n <= max_cells:
        return _relabel_by_size(tree)
    members = sp.csr_matrix((np.ones(tree.size), (np.arange(tree.size), tree)))
    share = (sample.T @ members).toarray() / np.bincount(tree)  # label -> fraction per cluster
    return _relabel_by_size((onehot @ share).argmax(axis=1))
