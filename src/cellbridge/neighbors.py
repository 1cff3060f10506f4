"""Neighbour search, the one home of it: exact, hnswlib and faiss-IVF kNN, cross-modal mutual
nearest neighbours, and the kNN graph of an embedding (for Leiden and the metrics).

The kNN graph is built here (exact kNN from scikit-learn, UMAP-style fuzzy weights computed with
numpy) instead of through ``scanpy.pp.neighbors``: it gives the same kind of weighted graph without
numba compilation, and ``n_neighbors`` counts neighbours *other than the cell itself*.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from ._errors import CellBridgeInputError
from ._utils import progress_bar, resolve_threads
from ._validate import as_embedding

logger = logging.getLogger("cellbridge")

EXACT_KNN_MAX_CELLS = 20_000
IVF_LIST_SIZE = 1_000
ANN_METHODS = ("hnsw", "ivf")


def knn(
    reference: np.ndarray,
    query: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    ann: str = "hnsw",
    seed: int = 0,
    n_threads: int = -1,
    ef: int | None = None,
    nprobe: int = 8,
) -> np.ndarray:
    """Indices (``query`` rows x ``k``) of the ``k`` cosine-nearest rows of ``reference``.

    ``method="exact"`` searches by brute force; ``"hnsw"`` an hnswlib graph (M=32,
    ef_construction=200) searched with ``ef`` candidates (None: ``max(50, k)`` as in the
    reference; the graph is built on one thread so that a seed always gives the same neighbours,
    ``n_threads`` serve the queries); ``"ivf"`` a faiss inverted file (see :func:`ivf_index`)
    searching the ``nprobe`` lists nearest to each query exactly; ``"auto"`` is exact while both
    sides have at most ``EXACT_KNN_MAX_CELLS`` rows and ``ann`` above. Rows with fewer than ``k``
    neighbours found (possible with ``"ivf"``) are padded with -1.

    Parameters
    ----------
    reference
        Rows searched (cells x dimensions).
    query
        Rows whose neighbours are looked for (cells x dimensions, as many columns as
        ``reference``).
    k
        Neighbours per query row (at most the number of ``reference`` rows).
    method
        ``"auto"``, ``"exact"``, ``"hnsw"`` or ``"ivf"`` (see above).
    ann
        The approximate method ``"auto"`` uses above ``EXACT_KNN_MAX_CELLS`` rows: ``"hnsw"``
        or ``"ivf"``.
    seed
        Random seed of the hnswlib graph or of the faiss k-means.
    n_threads
        Threads for the search (-1: all cores, or the CLI's ``--threads``).
    ef
        hnswlib search candidates (None: ``max(50, k)``).
    nprobe
        faiss-IVF lists searched per query.

    Returns
    -------
    numpy.ndarray
        Integer indices into ``reference``, ``query`` rows x ``k``, nearest first (-1: none
        found).
    """
    k = min(k, reference.shape[0])
    n_threads = resolve_threads(n_threads)
    if method == "auto":
        method = "exact" if max(len(reference), len(query)) <= EXACT_KNN_MAX_CELLS else ann
    if method == "exact":
        nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute", n_jobs=n_threads)
        return nn.fit(reference).kneighbors(query, return_distance=False)
    if method == "hnsw":  # built on one thread: hnswlib's parallel insertion order is not reproducible
        return hnsw_query(hnsw_index(reference, seed, n_threads=1), query, k, ef, n_threads)
    if method == "ivf":
        return ivf_query(ivf_index(reference, seed, n_threads=n_threads), query, k, nprobe, n_threads)
    raise CellBridgeInputError(f"knn method must be 'auto', 'exact', 'hnsw' or 'ivf', got {method!r}.")


def hnsw_index(reference: np.ndarray, seed: int = 0, n_threads: int = -1):
    """An hnswlib cosine index of the rows of ``reference`` (M=32, ef_construction=200).

    Parameters
    ----------
    reference
        Rows to index (cells x dimensions).
    seed
        Random seed of the graph construction.
    n_threads
        Threads for the insertion (-1: all cores; only one thread gives the same graph for a
        seed every time).

    Returns
    -------
    hnswlib.Index
        The index, to search with :func:`hnsw_query`.
    """
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=reference.shape[1])
    index.init_index(max_elements=len(reference), M=32, ef_construction=200, random_seed=seed)
    index.add_items(np.ascontiguousarray(reference, dtype=np.float32), num_threads=n_threads)
    return index


def hnsw_query(index, query: np.ndarray, k: int, ef: int | None = None, n_threads: int = -1) -> np.ndarray:
    """``k`` nearest indexed rows of each query row, searching ``ef`` (None: ``max(50, k)``) candidates.

    Parameters
    ----------
    index
        An index from :func:`hnsw_index`.
    query
        Rows whose neighbours are looked for (cells x dimensions).
    k
        Neighbours per query row.
    ef
        Search candidates (at least ``k``; None: ``max(50, k)``).
    n_threads
        Threads for the search (-1: all cores).

    Returns
    -------
    numpy.ndarray
        Integer indices of the indexed rows, ``query`` rows x ``k``, nearest first.
    """
    index.set_ef(max(ef or 50, k))
    labels, _ = index.knn_query(np.ascontiguousarray(query, dtype=np.float32), k=k, num_threads=n_threads)
    return labels.astype(np.int64)


def ivf_index(reference: np.ndarray, seed: int = 0, list_size: int = IVF_LIST_SIZE, n_threads: int = -1):
    """A faiss ``IndexIVFFlat`` of the unit-normalised rows of ``reference`` (inner product = cosine).

    The rows are split by k-means into ``len(reference) // list_size`` lists (faiss fits it on at
    most 256 rows per list, seeded by ``seed``), so the rows scanned per query stay constant as the
    reference grows; choosing a query's lists costs ``lists x dims``, which does grow.

    Parameters
    ----------
    reference
        Rows to index (cells x dimensions).
    seed
        Random seed of the k-means that forms the lists.
    list_size
        Rows per list on average.
    n_threads
        faiss (OpenMP) threads (-1 or 0: all cores).

    Returns
    -------
    faiss.IndexIVFFlat
        The trained index holding all rows, to search with :func:`ivf_query`.
    """
    import faiss

    _faiss_threads(n_threads)
    x = _unit_rows(reference)
    n_lists = max(1, len(x) // list_size)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], n_lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(x)
    index.add(x)
    return index


def ivf_query(index, query: np.ndarray, k: int, nprobe: int = 8, n_threads: int = -1) -> np.ndarray:
    """``k`` nearest indexed rows of each query row among the ``nprobe`` nearest lists (-1: none found).

    Parameters
    ----------
    index
        An index from :func:`ivf_index`.
    query
        Rows whose neighbours are looked for (cells x dimensions).
    k
        Neighbours per query row.
    nprobe
        Lists searched per query (at most the index's number of lists).
    n_threads
        faiss (OpenMP) threads (-1 or 0: all cores).

    Returns
    -------
    numpy.ndarray
        Integer indices of the indexed rows, ``query`` rows x ``k``, nearest first; -1 where
        fewer than ``k`` were found.
    """
    _faiss_threads(n_threads)
    index.nprobe = min(nprobe, index.nlist)
    _, labels = index.search(_unit_rows(query), k)
    return labels.astype(np.int64)


def _faiss_threads(n_threads: int) -> None:
    import faiss

    n_threads = resolve_threads(n_threads)
    faiss.omp_set_num_threads(n_threads if n_threads > 0 else os.cpu_count() or 1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float32, order="C")  # a copy: normalised in place below
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny, out=norms)


def mnn_pairs(
    a: np.ndarray,
    b: np.ndarray,
    k: int = 50,
    *,
    method: str = "auto",
    ann: str = "hnsw",
    seed: int = 0,
    ef: int | None = None,
    nprobe: int = 8,
) -> np.ndarray:
    """Mutual nearest neighbours between the rows of ``a`` and ``b`` (cosine distance).

    Returns an ``(n_pairs, 2)`` array of ``(row of a, row of b)``: ``i`` and ``j`` are a pair when
    ``j`` is among the ``k`` nearest rows of ``b`` to ``a[i]`` and ``i`` among the ``k`` nearest rows
    of ``a`` to ``b[j]``. ``method``, ``ann``, ``ef`` and ``nprobe`` are passed to :func:`knn`.

    Parameters
    ----------
    a
        First set of rows (cells x features).
    b
        Second set of rows, with the same features (columns) as ``a``.
    k
        Neighbours searched on each side.
    method
        Search method of :func:`knn`: ``"auto"``, ``"exact"``, ``"hnsw"`` or ``"ivf"``.
    ann
        The approximate method ``"auto"`` uses on large inputs (see :func:`knn`).
    seed
        Random seed of the approximate search.
    ef
        hnswlib search candidates (see :func:`knn`).
    nprobe
        faiss-IVF lists searched per query (see :func:`knn`).

    Returns
    -------
    numpy.ndarray
        ``(n_pairs, 2)`` integer array of ``(row of a, row of b)``, sorted.
    """
    if a.shape[1] != b.shape[1]:
        raise CellBridgeInputError(
            f"MNN inputs need the same features: {a.shape[1]} vs {b.shape[1]} columns."
        )
    options = dict(method=method, ann=ann, seed=seed, ef=ef, nprobe=nprobe)
    with progress_bar(total=2, desc="MNN search", unit="side") as bar:
        a_to_b = knn(b, a, k, **options)
        bar.update()
        b_to_a = knn(a, b, k, **options)
        bar.update()
    return mutual_pairs(a_to_b, b_to_a)


def smooth_over_neighbors(X: np.ndarray, neighbors: np.ndarray, self_weight: float) -> np.ndarray:
    """``self_weight * X + (1 - self_weight) * mean of X over each row's neighbours``.

    MaxFuse-style fuzzy smoothing of few, noisy linked features before cross-modal matching.
    ``neighbors`` holds row indices (rows x k) of the same matrix, e.g. from :func:`knn`.

    Parameters
    ----------
    X
        Rows x features matrix to smooth.
    neighbors
        Integer row indices of each row's neighbours in ``X`` (rows x k); -1 marks a neighbour not
        found (faiss IVF) and is left out of that row's mean.
    self_weight
        Weight of the row itself, in [0, 1]; the neighbours' mean gets ``1 - self_weight``.

    Returns
    -------
    numpy.ndarray
        The smoothed matrix (float32), the shape of ``X``. Rows are processed in blocks, so memory
        stays at a block's rows x k x features.
    """
    X = np.asarray(X, dtype=np.float32)
    out = np.empty_like(X)
    rows = max(1, (1 << 24) // max(neighbors.shape[1] * X.shape[1], 1))
    for start in range(0, X.shape[0], rows):
        idx = neighbors[start:start + rows]
        if (idx >= 0).all():
            mean = X[idx].mean(axis=1)
        else:
            found = (idx >= 0)[:, :, None]
            mean = (X[np.maximum(idx, 0)] * found).sum(axis=1) / np.maximum(found.sum(axis=1), 1)
        out[start:start + rows] = self_weight * X[start:start + rows] + (1.0 - self_weight) * mean
    return out


def mutual_pairs(a_to_b: np.ndarray, b_to_a: np.ndarray) -> np.ndarray:
    """``(row of a, row of b)`` pairs, sorted, found in both neighbour lists: ``a_to_b[i]`` holds
    rows of ``b`` near ``a[i]``, ``b_to_a[j]`` rows of ``a`` near ``b[j]`` (-1 entries ignored).

    Parameters
    ----------
    a_to_b
        Integer indices of rows of ``b`` near each row of ``a`` (rows of a x k).
    b_to_a
        Integer indices of rows of ``a`` near each row of ``b`` (rows of b x k).

    Returns
    -------
    numpy.ndarray
        ``(n_pairs, 2)`` integer array of mutual ``(row of a, row of b)`` pairs, sorted.
    """
    graph = _as_graph(a_to_b, len(b_to_a)).multiply(_as_graph(b_to_a, len(a_to_b)).T).tocoo()
    pairs = np.column_stack([graph.row, graph.col]).astype(np.int64)
    logger.info(
        "MNN (k=%d): %d pairs; %d/%d and %d/%d cells have a partner", a_to_b.shape[1], len(pairs),
        np.unique(pairs[:, 0]).size, len(a_to_b), np.unique(pairs[:, 1]).size, len(b_to_a),
    )
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours (``exact``, rows x k) found in ``approx``.

    Parameters
    ----------
    exact
        Exact neighbour indices (rows x k).
    approx
        Approximate neighbour indices of the same rows.

    Returns
    -------
    float
        Recall in [0, 1].
    """
    k = exact.shape[1]
    return float(np.mean([len(set(e) & set(h)) / k for e, h in zip(exact, approx)]))


def _as_graph(neighbours: np.ndarray, n_cols: int) -> sp.csr_matrix:
    n_rows, k = neighbours.shape
    rows = np.repeat(np.arange(n_rows), k)
    cols = neighbours.ravel()
    found = cols >= 0  # -1: fewer than k neighbours found (ivf)
    ones = np.ones(int(found.sum()), dtype=np.int8)
    return sp.csr_matrix((ones, (rows[found], cols[found])), shape=(n_rows, n_cols))


def knn_indices(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the ``k`` nearest neighbours of each row (exact, Euclidean), the
    row itself excluded, nearest first.

    scikit-learn's rule for the training points: ``k + 1`` neighbours are searched and the row
    itself removed; with duplicated points, when the row is not among them the nearest hit is
    dropped instead.

    Parameters
    ----------
    X
        Cells x dimensions array (at least 2 rows).
    k
        Neighbours per row (at most the number of rows minus one).

    Returns
    -------
    tuple of numpy.ndarray
        ``(dist, idx)``: Euclidean distances and integer indices, rows x k, nearest first.
    """
    n = X.shape[0]
    k = min(k, n - 1)
    if k < 1:
        raise CellBridgeInputError(f"need at least 2 cells for a neighbour graph, got {n}.")
    return NearestNeighbors(n_neighbors=k).fit(X).kneighbors()


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


def knn_graph(emb, *, n_neighbors: int = 15, weights: Literal["umap", "binary"] = "umap") -> sp.csr_matrix:
    """Symmetric kNN graph of an embedding.

    Parameters
    ----------
    emb
        Cells x dimensions array.
    n_neighbors
        Neighbours per cell, the cell itself not counted.
    weights
        ``"umap"``: UMAP fuzzy-union connectivities in (0, 1]; ``"binary"``: 1 for every pair of
        cells of which one is among the other's neighbours (the unweighted graph scMDCF's Leiden
        estimate of K uses).

    Returns
    -------
    scipy.sparse.csr_matrix
        Cells x cells connectivities; the union of each cell's kNN edges.
    """
    X = as_embedding(emb, min_rows=2)
    return graph_from_neighbors(*knn_indices(X, n_neighbors), weights=weights)


def graph_from_neighbors(dist: np.ndarray, idx: np.ndarray, *, weights: Literal["umap", "binary"] = "umap"
                         ) -> sp.csr_matrix:
    """The graph of :func:`knn_graph` from already computed neighbours (:func:`knn_indices`).

    Parameters
    ----------
    dist
        Distances to each cell's neighbours, nearest first (cells x k).
    idx
        Integer indices of each cell's neighbours, the cell itself excluded (cells x k).
    weights
        ``"umap"``: UMAP fuzzy-union connectivities in (0, 1]; ``"binary"``: 1 for every pair of
        cells of which one is among the other's neighbours.

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric cells x cells connectivities.
    """
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    if weights == "binary":  # rows in neighbour order, as scikit-learn's kneighbors_graph
        A = sp.csr_matrix((np.ones(n * k), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
        return ((A + A.T) > 0).astype(np.float64)
    if weights != "umap":
        raise CellBridgeInputError(f'`weights` must be "umap" or "binary", got {weights!r}.')
    A = sp.csr_matrix((_fuzzy_weights(dist).ravel(), (rows, idx.ravel())), shape=(n, n))
    product = A.multiply(A.T)
    graph = (A + A.T - product).tocsr()
    graph.eliminate_zeros()
    return graph
