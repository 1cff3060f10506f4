"""Clustering of embeddings: Leiden, k-means, an estimate of the number of clusters, consensus.

Each function takes a cells x dimensions array, or an AnnData / MuData whose ``obsm[use_rep]`` holds
the embedding (scanpy's convention): labels of an array are returned, those of an AnnData / MuData
are written to ``obs[key_added]`` (in place, or on a copy with ``copy=True``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import CellBridgeInputError
from .._utils import progress_bar, sample_or_all
from .._validate import get_rep
from ..neighbors import knn_graph

__all__ = ["consensus_clusters", "estimate_n_clusters", "kmeans", "leiden"]

#: Above this many cells :func:`consensus_clusters` builds its tree on a sample (memory ~ n²).
CONSENSUS_MAX_CELLS = 10_000


Flavor = Literal["igraph", "leidenalg"]


def _annotated(data) -> bool:
    """An AnnData or MuData (labels go to its ``obs``), not an array."""
    return hasattr(data, "obsm") and hasattr(data, "obs")


def _name(data) -> str:
    """How messages call the input: ``mdata``, ``adata`` or ``emb``."""
    return "mdata" if hasattr(data, "mod") else "adata" if _annotated(data) else "emb"


def _write_labels(data, labels: np.ndarray, *, key_added: str, params: dict, copy: bool, extra: dict | None = None):
    """``obs[key_added]`` (categorical, categories in label order) and ``uns[key_added]["params"]``
    of ``data`` or of its copy; returns the copy, or None."""
    target = data.copy() if copy else data
    values = np.asarray(labels)
    target.obs[key_added] = pd.Categorical(values.astype(str), categories=[str(c) for c in np.unique(values)])
    target.uns[key_added] = {"params": {k: v for k, v in params.items() if v is not None}, **(extra or {})}
    return target if copy else None


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
    with progress_bar(total=max_steps, desc=f"Leiden resolution scan (K={n_clusters})", unit="run") as bar:
        for _ in range(max_steps):
            mid = (lo + hi) / 2
            labels = leiden_on_graph(graph, resolution=mid, seed=seed, flavor=flavor, weighted=weighted)
            bar.update()
            n = len(np.unique(labels))
            if best is None or abs(n - n_clusters) < abs(len(np.unique(best)) - n_clusters):
                best = labels
            if n == n_clusters:
                break
            lo, hi = (mid, hi) if n < n_clusters else (lo, mid)
    return best


def leiden(emb, *, resolution: float = 1.0, n_clusters: int | None = None, n_neighbors: int = 15,
           seed: int = 0, flavor: Flavor = "igraph", use_rep: str | None = None, key_added: str = "leiden",
           copy: bool = False):
    """Leiden clustering of an embedding on its kNN graph.

    Parameters
    ----------
    emb
        Cells x dimensions array (e.g. a joint or fused embedding), or an AnnData / MuData holding
        it in ``obsm[use_rep]``.
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
    use_rep
        AnnData / MuData: the ``obsm`` key of the embedding (default: the first of ``X_biclum``,
        ``X_scmdcf``, ``X_pca`` present).
    key_added
        AnnData / MuData: the ``obs`` column written (and ``uns[key_added]["params"]``).
    copy
        AnnData / MuData: write on a copy and return it instead of writing in place.

    Returns
    -------
    numpy.ndarray or AnnData or MuData or None
        For an array: integer cluster labels (0 = largest cluster). For an AnnData / MuData:
        ``None`` (or the copy with ``copy=True``), with ``obs[key_added]`` holding the labels as
        categories ``"0"``, ``"1"``...
    """
    X = get_rep(emb, use_rep, name=_name(emb))
    graph = knn_graph(X, n_neighbors=n_neighbors, weights="binary" if flavor == "leidenalg" else "umap")
    labels = leiden_on_graph(graph, resolution=resolution, n_clusters=n_clusters, seed=seed, flavor=flavor)
    if not _annotated(emb):
        return labels
    params = {"resolution": resolution, "n_clusters": n_clusters, "n_neighbors": n_neighbors, "seed": seed,
              "flavor": flavor, "use_rep": use_rep}
    return _write_labels(emb, labels, key_added=key_added, params=params, copy=copy)


def kmeans(
    emb, n_clusters: int, *, seed: int = 0, n_init: int = 20, return_centers: bool = False,
    use_rep: str | None = None, key_added: str = "kmeans", copy: bool = False,
):
    """k-means clustering (scikit-learn) of an embedding.

    Parameters
    ----------
    emb
        Cells x dimensions array, or an AnnData / MuData holding it in ``obsm[use_rep]``.
    n_clusters
        Number of clusters K (1 <= K <= number of cells).
    seed
        Random seed of the initialisation.
    n_init
        Number of k-means++ restarts; the best (lowest inertia) is kept.
    return_centers
        Array input: also return the K x dimensions centroids (e.g. to initialise DEC cluster
        centres). An AnnData / MuData always gets them in ``uns[key_added]["centers"]``.
    use_rep
        AnnData / MuData: the ``obsm`` key of the embedding (default as :func:`leiden`).
    key_added
        AnnData / MuData: the ``obs`` column written (and ``uns[key_added]``).
    copy
        AnnData / MuData: write on a copy and return it instead of writing in place.

    Returns
    -------
    numpy.ndarray or tuple or AnnData or MuData or None
        For an array: integer labels, or ``(labels, centers)`` when ``return_centers`` is true.
        For an AnnData / MuData: ``None`` (or the copy with ``copy=True``), with
        ``obs[key_added]`` and ``uns[key_added]`` (``params``, ``centers``) written.
    """
    from sklearn.cluster import KMeans

    X = get_rep(emb, use_rep, name=_name(emb))
    _check_n_clusters(n_clusters, X.shape[0], "; pass a smaller K or use `estimate_n_clusters(emb)`")
    model = KMeans(n_clusters=int(n_clusters), n_init=n_init, random_state=seed).fit(X)
    labels = model.labels_.astype(np.int64)
    if _annotated(emb):
        params = {"n_clusters": int(n_clusters), "seed": seed, "n_init": n_init, "use_rep": use_rep}
        return _write_labels(emb, labels, key_added=key_added, params=params, copy=copy,
                             extra={"centers": model.cluster_centers_})
    return (labels, model.cluster_centers_) if return_centers else labels


def _check_n_clusters(n_clusters: int, n_cells: int, hint: str = "") -> None:
    if not 1 <= int(n_clusters) <= n_cells:
        raise CellBridgeInputError(
            f"`n_clusters` must be between 1 and the number of cells ({n_cells}), got {n_clusters}{hint}."
        )


def estimate_n_clusters(
    emb, *, resolution: float = 1.0, n_neighbors: int = 15, seed: int = 0, min_size: int = 1,
    flavor: Flavor = "igraph", use_rep: str | None = None,
) -> int:
    """Estimate the number of clusters K by Leiden clustering of the kNN graph.

    Parameters
    ----------
    emb
        Cells x dimensions array, or an AnnData / MuData holding it in ``obsm[use_rep]``.
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
    use_rep
        AnnData / MuData: the ``obsm`` key of the embedding (default as :func:`leiden`).

    Returns
    -------
    int
        The number of Leiden clusters (at least 1).
    """
    X = get_rep(emb, use_rep, name=_name(emb))
    labels = leiden(X, resolution=resolution, n_neighbors=n_neighbors, seed=seed, flavor=flavor)
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
                       seed: int = 0, keys=None, key_added: str = "consensus", copy: bool = False):
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
        cells in the same order; or an AnnData / MuData whose ``obs[keys]`` hold the clusterings.
    n_clusters
        Number of consensus clusters.
    max_cells
        Largest number of cells clustered exactly.
    seed
        Seed of the sample above ``max_cells``.
    keys
        AnnData / MuData: the ``obs`` columns of the clusterings (e.g. ``["leiden", "kmeans"]``).
    key_added
        AnnData / MuData: the ``obs`` column written (and ``uns[key_added]["params"]``).
    copy
        AnnData / MuData: write on a copy and return it instead of writing in place.

    Returns
    -------
    numpy.ndarray or AnnData or MuData or None
        For label arrays: integer labels (0 = largest cluster). For an AnnData / MuData: ``None``
        (or the copy with ``copy=True``), with ``obs[key_added]`` written.
    """
    if not _annotated(labelings):
        return _consensus(labelings, n_clusters, max_cells=max_cells, seed=seed)
    keys = [keys] if isinstance(keys, str) else list(keys or [])
    missing = [k for k in keys if k not in labelings.obs]
    if not keys or missing:
        raise CellBridgeInputError(
            f"`keys` must name the `obs` columns of the clusterings to combine (missing: {missing}; "
            f"columns: {list(labelings.obs.columns)}), e.g. `keys=['leiden', 'kmeans']`."
        )
    labels = _consensus([labelings.obs[k].to_numpy() for k in keys], n_clusters, max_cells=max_cells, seed=seed)
    params = {"n_clusters": int(n_clusters), "keys": keys, "max_cells": max_cells, "seed": seed}
    return _write_labels(labelings, labels, key_added=key_added, params=params, copy=copy)


def _consensus(labelings, n_clusters: int, *, max_cells: int, seed: int) -> np.ndarray:
    """:func:`consensus_clusters` of label arrays."""
    from sklearn.cluster import AgglomerativeClustering

    codes = _label_codes(labelings, n_clusters)
    if int(n_clusters) == 1:
        return np.zeros(codes.shape[0], dtype=np.int64)
    onehot, n_runs, n = _one_hot(codes), codes.shape[1], codes.shape[0]
    rows = sample_or_all(n, max_cells, seed)
    sample = onehot[rows]
    with progress_bar(total=2, desc="consensus clustering", unit="step") as bar:
        distance = 1.0 - (sample @ sample.T).toarray().astype(np.float64) / n_runs
        bar.update()
        tree = AgglomerativeClustering(int(n_clusters), metric="precomputed",
                                       linkage="average").fit_predict(distance)
        bar.update()
    if n <= max_cells:
        return _relabel_by_size(tree)
    members = sp.csr_matrix((np.ones(tree.size), (np.arange(tree.size), tree)))
    share = (sample.T @ members).toarray() / np.bincount(tree)  # label -> fraction per cluster
    return _relabel_by_size((onehot @ share).argmax(axis=1))
