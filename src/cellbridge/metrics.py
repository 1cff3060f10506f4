"""Evaluation metrics for joint embeddings and clusterings (METHODS §4).

Integration metrics follow the BiCLUM benchmark. Each metric is a public function on numpy
arrays or, scanpy style, on an AnnData / MuData with ``use_rep`` (the ``obsm`` key of the
embedding) and ``label_key`` (the ``obs`` column of the labels); :func:`integration_metrics` runs
them all on the embeddings of two modalities, and :func:`clustering_metrics` scores a clustering.
A collapsed embedding (all cells at one point) or one with NaN/inf values is refused: every
score of it would be meaningless (FOSCTTM 0 and alignment 1 by construction). Higher is better for every metric except FOSCTTM
and Davies–Bouldin.

Deviations from the reference evaluation code, all deliberate:

- neighbour queries exclude the cell itself (the reference's neighbourhood overlap counted the
  cell among its 30 "neighbours");
- the 15-NN graph of graph connectivity and of the Leiden NMI is built by
  :func:`cellbridge.neighbors.knn_graph` (15 neighbours besides the cell; scanpy counts the cell itself);
- label transfer shares the votes at the k-th distance among tied (duplicated) cells, where
  scikit-learn keeps the ones its search meets first (so the reference's score depended on the
  cell order and the BLAS thread count);
- modality ASW skips cell types whose silhouette is undefined (a type seen in one modality only,
  or too few cells); the reference scored those types as perfectly mixed (1).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import sklearn.metrics as skm
from anndata import AnnData
from scipy.sparse.csgraph import connected_components

from ._errors import CellBridgeInputError, CellBridgeWarning
from ._utils import progress_bar, sample_or_all
from ._validate import as_embedding
from .neighbors import graph_from_neighbors, knn_indices
from .tl.clustering import leiden_on_graph

__all__ = [
    "DEFAULT_RESOLUTIONS",
    "cell_type_asw",
    "clustering_metrics",
    "foscttm",
    "graph_connectivity",
    "integration_metrics",
    "leiden_nmi",
    "mean_average_precision",
    "modality_asw",
    "neighbourhood_overlap",
    "seurat_alignment_score",
    "transfer_accuracy",
]

#: Leiden resolutions scanned by :func:`leiden_nmi`: 0.1, 0.2, ..., 2.0 (20 values).
DEFAULT_RESOLUTIONS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 21))

_MAX_SILHOUETTE_CELLS = 20_000


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _labels(labels, n: int, name: str) -> np.ndarray:
    """Integer codes of one label per cell; missing labels are an error."""
    values = np.asarray(labels.values if isinstance(labels, pd.Series) else labels, dtype=object)
    if values.ndim != 1 or values.shape[0] != n:
        raise CellBridgeInputError(
            f"`{name}` must hold one label per cell ({n} cells), got shape {values.shape}."
        )
    codes, _ = pd.factorize(values)
    if (codes < 0).any():
        raise CellBridgeInputError(
            f"`{name}` has {int((codes < 0).sum())} missing labels; drop those cells before scoring."
        )
    return codes


def _kind(data) -> str | None:
    """``"AnnData"`` / ``"MuData"`` for those containers, None for arrays."""
    if isinstance(data, AnnData):
        return "AnnData"
    if type(data).__name__ == "MuData" and hasattr(data, "mod"):
        return "MuData"
    return None


def _read_rep(data, use_rep: str | None, name: str):
    """``(embedding, obs)`` of an array (obs None), an AnnData (``obsm[use_rep]``, ``"X"``: ``.X``)
    or a MuData (its own ``obsm[use_rep]``, else the modalities holding it stacked, with their
    ``obs`` stacked and a ``modality`` column naming each cell's modality)."""
    kind = _kind(data)
    if kind is None:
        if use_rep is not None:
            raise CellBridgeInputError(f"`use_rep` applies to an AnnData or MuData `{name}`; got an array, "
                                       "so drop use_rep or pass the AnnData.")
        return data, None
    if use_rep is None:
        raise CellBridgeInputError(f"`{name}` is a {kind}: pass use_rep= naming its embedding in .obsm "
                                   f"(available: {list(data.obsm)}).")
    if use_rep == "X" and kind == "AnnData":
        return data.X, data.obs
    if use_rep in data.obsm:
        return data.obsm[use_rep], data.obs
    if kind == "MuData":
        mods = [m for m, a in data.mod.items() if use_rep in a.obsm]
        if mods:
            obs = [data.mod[m].obs.assign(**({} if "modality" in data.mod[m].obs else {"modality": m}))
                   for m in mods]
            return np.vstack([np.asarray(data.mod[m].obsm[use_rep]) for m in mods]), pd.concat(obs)
    raise CellBridgeInputError(f"`{name}` has no obsm[{use_rep!r}] (available: {list(data.obsm)}); pass the "
                               "use_rep that holds the embedding.")


def _pick(given, obs, key: str | None, arg: str, key_arg: str, *, default_key: str | None = None):
    """Per-cell values: ``given`` itself, else ``obs[key]`` of the AnnData/MuData."""
    if given is not None:
        return given
    key = key if key is not None else default_key
    if key is None or obs is None:
        raise CellBridgeInputError(f"pass `{arg}` (one value per cell), or an AnnData/MuData with "
                                   f"`{key_arg}=` naming the obs column that holds them.")
    if key not in obs:
        raise CellBridgeInputError(f"no obs column {key!r} (available: {list(obs.columns)}); pass "
                                   f"`{key_arg}=` with the column holding the {arg}.")
    return obs[key].to_numpy()


def _read_pair(emb_a, emb_b, use_rep: str | None, *, paired: bool):
    """``((a, obs_a), (b, obs_b))`` from two arrays, two AnnData, or one MuData with two modalities
    holding ``obsm[use_rep]`` (``emb_b`` None); paired AnnData are aligned by cell name."""
    if emb_b is None:
        if _kind(emb_a) != "MuData":
            raise CellBridgeInputError("pass `emb_b` (the second modality's embedding), or one MuData whose "
                                       "two modalities hold obsm[use_rep].")
        if use_rep is None:
            raise CellBridgeInputError("`emb_a` is a MuData: pass use_rep= naming the embedding in its "
                                       "modalities' .obsm.")
        mods = [m for m, a in emb_a.mod.items() if use_rep in a.obsm]
        if len(mods) != 2:
            raise CellBridgeInputError(f"{len(mods)} modalities of the MuData hold obsm[{use_rep!r}] "
                                       f"({mods}); these metrics need exactly two.")
        emb_a, emb_b = (emb_a.mod[m] for m in mods)
    a, obs_a = _read_rep(emb_a, use_rep, "emb_a")
    b, obs_b = _read_rep(emb_b, use_rep, "emb_b")
    if paired and obs_a is not None and obs_b is not None and not obs_a.index.equals(obs_b.index):
        pos = obs_b.index.get_indexer(obs_a.index)
        if len(obs_a) != len(obs_b) or (pos < 0).any():
            raise CellBridgeInputError("paired metrics need the same cells in both modalities, but their "
                                       "obs_names differ; pass paired=False or align the cells.")
        b, obs_b = np.asarray(b.toarray() if sp.issparse(b) else b)[pos], obs_b.iloc[pos]
    return (a, obs_a), (b, obs_b)


def _embedding_and_labels(emb, labels, use_rep=None, label_key=None) -> tuple[np.ndarray, np.ndarray]:
    """A validated embedding of at least 2 distinct cells and the integer codes of one label per cell."""
    emb, obs = _read_rep(emb, use_rep, "emb")
    X = as_embedding(emb, min_rows=2, distinct=True)
    return X, _labels(_pick(labels, obs, label_key, "labels", "label_key"), X.shape[0], "labels")


def _joint_codes(labels_a, labels_b, n_a: int, n_b: int) -> np.ndarray:
    """Codes of both modalities' labels in one shared vocabulary, in sorted label order where the
    labels sort (so a tied k-NN vote does not depend on the order of the cells)."""
    a = np.asarray(labels_a.values if isinstance(labels_a, pd.Series) else labels_a, dtype=object)
    b = np.asarray(labels_b.values if isinstance(labels_b, pd.Series) else labels_b, dtype=object)
    _labels(a, n_a, "labels_a")
    _labels(b, n_b, "labels_b")
    both = np.concatenate([a, b])
    try:
        return pd.factorize(both, sort=True)[0]
    except TypeError:  # labels of types that do not compare
        return pd.factorize(both)[0]


def _pair(emb_a, emb_b, *, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_embedding(emb_a, "emb_a", distinct=True), as_embedding(emb_b, "emb_b", distinct=True)
    if a.shape == b.shape and np.array_equal(a, b):
        warnings.warn(
            "`emb_a` and `emb_b` are identical (one shared embedding, e.g. scMDCF's fused z written into "
            "both modalities): every cell sits on its partner, so FOSCTTM is 0, neighbourhood overlap 1 "
            "and the mixing scores perfect by construction; they say nothing about the integration.",
            CellBridgeWarning, stacklevel=3)
    if a.shape[1] != b.shape[1]:
        raise CellBridgeInputError(
            f"`emb_a` has {a.shape[1]} dimensions and `emb_b` {b.shape[1]}; both must be cells "
            "of the same joint embedding."
        )
    if paired and a.shape[0] != b.shape[0]:
        raise CellBridgeInputError(
            f"paired metrics need row i of `emb_a` to be the partner of row i of `emb_b`, but they "
            f"have {a.shape[0]} and {b.shape[0]} rows; pass `paired=False` or align the cells."
        )
    return a, b


# --------------------------------------------------------------------------------------------------
# omics mixing
# --------------------------------------------------------------------------------------------------


def graph_connectivity(emb, labels=None, *, use_rep: str | None = None, label_key: str | None = None,
                       n_neighbors: int = 15, graph: sp.spmatrix | None = None) -> float:
    """Graph connectivity of each cell type in the kNN graph of the joint embedding.

    For each cell type, the kNN graph of all cells is restricted to that type's cells; the score
    of the type is (size of its largest connected component) / (number of its cells). The
    result is the mean over types; 1 means every type forms one connected piece.

    Parameters
    ----------
    emb
        Joint embedding, cells x dimensions (both modalities stacked), or an AnnData / MuData holding it in
        ``obsm[use_rep]``.
    labels
        Cell-type label per cell.
    use_rep
        With an AnnData / MuData ``emb``: the ``obsm`` key of the embedding (``"X"``: ``.X``);
        a MuData without it at the top level stacks its modalities' ``obsm[use_rep]``.
    label_key
        With an AnnData / MuData ``emb`` and no ``labels``: the ``obs`` column of the labels.
    n_neighbors
        Neighbours per cell in the graph (the cell itself not counted).
    graph
        The kNN graph of ``emb`` when already built (:func:`cellbridge.neighbors.knn_graph`).

    Returns
    -------
    float
        Mean over cell types, in (0, 1].
    """
    X, codes = _embedding_and_labels(emb, labels, use_rep, label_key)
    graph = graph_from_neighbors(*knn_indices(X, n_neighbors)) if graph is None else graph
    scores = []
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        _, comp = connected_components(graph[members][:, members], directed=False)
        scores.append(np.bincount(comp).max() / members.size)
    return float(np.mean(scores))


def seurat_alignment_score(
    emb,
    modality=None,
    *,
    use_rep: str | None = None,
    modality_key: str = "modality",
    neighbor_frac: float = 0.01,
    n_repeats: int = 4,
    seed: int = 0,
) -> float:
    """Seurat alignment score (Butler et al. 2018) of modalities in a joint embedding.

    Each repeat subsamples every modality to the size of the smallest one, takes
    k = max(round(neighbor_frac * subsampled cells), 1) neighbours per cell, and scores
    min(1, (k - x) * M / (k * (M - 1))) where x is the mean number of same-modality neighbours and
    M the number of modalities. 1 = perfectly mixed, 0 = fully separated.

    Parameters
    ----------
    emb
        Joint embedding, cells x dimensions, or an AnnData / MuData holding it in
        ``obsm[use_rep]``.
    modality
        Modality (or batch) label per cell; at least two distinct values.
    use_rep
        With an AnnData / MuData ``emb``: the ``obsm`` key of the embedding (``"X"``: ``.X``);
        a MuData without it at the top level stacks its modalities' ``obsm[use_rep]``.
    modality_key
        With an AnnData / MuData ``emb`` and no ``modality``: the ``obs`` column of the
        modality (a MuData stacked from its modalities has one naming them).
    neighbor_frac
        Neighbours as a fraction of the subsampled cells.
    n_repeats
        Number of random subsamples averaged.
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        Mean over repeats, in [0, 1].
    """
    emb, obs = _read_rep(emb, use_rep, "emb")
    X = as_embedding(emb, min_rows=2, distinct=True)
    codes = _labels(_pick(modality, obs, modality_key, "modality", "modality_key"), X.shape[0], "modality")
    groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    if len(groups) < 2:
        raise CellBridgeInputError("`modality` has a single value; alignment needs two modalities.")
    size, M = min(g.size for g in groups), len(groups)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_repeats):
        idx = np.concatenate([rng.choice(g, size, replace=False) for g in groups])
        k = max(round(idx.size * neighbor_frac), 1)
        _, nn = knn_indices(X[idx], k)
        k = nn.shape[1]
        same = (codes[idx][nn] == codes[idx][:, None]).sum(axis=1).mean()
        scores.append(min(1.0, (k - same) * M / (k * (M - 1))))
    return float(np.mean(scores))


def modality_asw(
    emb, labels=None, modality=None, *, use_rep: str | None = None, label_key: str | None = None,
    modality_key: str = "modality", max_cells: int | None = _MAX_SILHOUETTE_CELLS, seed: int = 0
) -> float:
    """Modality average silhouette width within cell types.

    For each cell type, the silhouette of its cells with respect to modality is computed and
    scored ``mean(1 - |s|)``; the result is the mean over cell types. 1 = modalities
    indistinguishable within types. Types present in a single modality (or with too few cells
    for a silhouette) are skipped.

    Parameters
    ----------
    emb
        Joint embedding, cells x dimensions, or an AnnData / MuData holding it in
        ``obsm[use_rep]``.
    labels
        Cell-type label per cell.
    modality
        Modality label per cell.
    use_rep
        With an AnnData / MuData ``emb``: the ``obsm`` key of the embedding (``"X"``: ``.X``);
        a MuData without it at the top level stacks its modalities' ``obsm[use_rep]``.
    label_key
        With an AnnData / MuData ``emb`` and no ``labels``: the ``obs`` column of the labels.
    modality_key
        With an AnnData / MuData ``emb`` and no ``modality``: the ``obs`` column of the modality.
    max_cells
        Cell types with more cells are subsampled (seeded) to this size; ``None`` never subsamples.
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        Mean over the scored cell types, NaN when no type could be scored.
    """
    emb, obs = _read_rep(emb, use_rep, "emb")
    X = as_embedding(emb, distinct=True)
    types = _labels(_pick(labels, obs, label_key, "labels", "label_key"), X.shape[0], "labels")
    mods = _labels(_pick(modality, obs, modality_key, "modality", "modality_key"), X.shape[0], "modality")
    scores = []
    for code in np.unique(types):
        members = np.flatnonzero(types == code)
        members = members[sample_or_all(members.size, max_cells, seed)]
        n_mod = np.unique(mods[members]).size
        if n_mod < 2 or members.size <= n_mod:
            continue
        s = skm.silhouette_samples(X[members], mods[members])
        scores.append(float(np.mean(1 - np.abs(s))))
    if not scores:
        warnings.warn(
            "modality ASW: no cell type has cells of two modalities; returning NaN.",
            CellBridgeWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(np.mean(scores))


def neighbourhood_overlap(emb_a, emb_b=None, *, use_rep: str | None = None, k: int = 30,
                          neighbors: np.ndarray | None = None) -> float:
    """Fraction of cells whose true partner is among their ``k`` nearest neighbours.

    Paired data only: row i of ``emb_a`` and row i of ``emb_b`` are the same cell. Neighbours are
    searched in the joint space (both modalities stacked, the cell itself excluded); the result
    averages both directions (a cells finding their b partner and vice versa).

    Parameters
    ----------
    emb_a, emb_b
        Embeddings of the two modalities, n x d each, rows aligned; or two AnnData holding them
        in ``obsm[use_rep]`` (aligned by cell name), or one MuData ``emb_a`` whose two
        modalities do (``emb_b`` None).
    use_rep
        With AnnData / MuData inputs: the ``obsm`` key of the embedding.
    k
        Neighbourhood size.
    neighbors
        Nearest-neighbour indices of the stacked ``[emb_a; emb_b]`` (at least ``k`` per row, nearest
        first, the cell itself excluded) when already computed.

    Returns
    -------
    float
        In [0, 1]; higher is better.
    """
    (a, _), (b, _) = _read_pair(emb_a, emb_b, use_rep, paired=True)
    a, b = _pair(a, b, paired=True)
    n = a.shape[0]
    nn = knn_indices(np.vstack([a, b]), k)[1] if neighbors is None else neighbors[:, :k]
    partner = np.concatenate([np.arange(n) + n, np.arange(n)])
    return float((nn == partner[:, None]).any(axis=1).mean())


# --------------------------------------------------------------------------------------------------
# biology conservation
# --------------------------------------------------------------------------------------------------


def mean_average_precision(emb, labels=None, *, use_rep: str | None = None, label_key: str | None = None,
                           neighbor_frac: float = 0.01, neighbors: np.ndarray | None = None) -> float:
    """Mean average precision of same-label hits among each cell's nearest neighbours.

    With k = max(round(neighbor_frac * cells), 1) neighbours (the cell itself excluded) sorted by
    distance and hit indicators h_1..h_k, a cell's average precision is the mean of the precision
    at rank i over the ranks i with a hit (0 when there is none); the result is the mean over cells.

    Parameters
    ----------
    emb
        Joint embedding, cells x dimensions, or an AnnData / MuData holding it in
        ``obsm[use_rep]``.
    labels
        Cell-type label per cell.
    use_rep
        With an AnnData / MuData ``emb``: the ``obsm`` key of the embedding (``"X"``: ``.X``);
        a MuData without it at the top level stacks its modalities' ``obsm[use_rep]``.
    label_key
        With an AnnData / MuData ``emb`` and no ``labels``: the ``obs`` column of the labels.
    neighbor_frac
        Neighbours as a fraction of all cells.
    neighbors
        Nearest-neighbour indices of ``emb`` (nearest first, the cell itself excluded, at least k
        per row) when already computed.

    Returns
    -------
    float
        In [0, 1].
    """
    X, codes = _embedding_and_labels(emb, labels, use_rep, label_key)
    k = map_neighbors(X.shape[0], neighbor_frac)
    nn = knn_indices(X, k)[1] if neighbors is None else neighbors[:, :k]
    hits = codes[nn] == codes[:, None]
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    n_hits = hits.sum(axis=1)
    ap = np.divide((precision * hits).sum(axis=1), n_hits, out=np.zeros(len(n_hits)), where=n_hits > 0)
    return float(ap.mean())


def map_neighbors(n_cells: int, neighbor_frac: float = 0.01) -> int:
    """Neighbours per cell of :func:`mean_average_precision`: ``max(round(frac * cells), 1)``,
    at most ``cells - 1``."""
    return min(max(round(n_cells * neighbor_frac), 1), n_cells - 1)


def cell_type_asw(
    emb, labels=None, *, use_rep: str | None = None, label_key: str | None = None, max_cells: int | None = _MAX_SILHOUETTE_CELLS, seed: int = 0
) -> float:
    """Cell-type silhouette width rescaled to [0, 1]: (s + 1) / 2.

    Parameters
    ----------
    emb
        Joint embedding, cells x dimensions, or an AnnData / MuData holding it in
        ``obsm[use_rep]``.
    labels
        Cell-type label per cell (at least two types).
    use_rep
        With an AnnData / MuData ``emb``: the ``obsm`` key of the embedding (``"X"``: ``.X``);
        a MuData without it at the top level stacks its modalities' ``obsm[use_rep]``.
    label_key
        With an AnnData / MuData ``emb`` and no ``labels``: the ``obs`` column of the labels.
    max_cells
        Above this many cells the silhouette is computed on a seeded subsample.
    seed
        Seed of the subsample.

    Returns
    -------
    float
        In [0, 1]; 0.5 means no structure.
    """
    emb, obs = _read_rep(emb, use_rep, "emb")
    X = as_embedding(emb, distinct=True)
    codes = _labels(_pick(labels, obs, label_key, "labels", "label_key"), X.shape[0], "labels")
    if not 2 <= np.unique(codes).size <= X.shape[0] - 1:
        raise CellBridgeInputError(
            "cell-type ASW needs at least two cell types and fewer types than cells; "
            f"got {np.unique(codes).size} types for {X.shape[0]} cells."
        )
    idx = sample_or_all(X.shape[0], max_cells, seed)
    return float((skm.silhouette_score(X[idx], codes[idx]) + 1) / 2)


def leiden_nmi(
    emb,
    labels=None,
    *,
    use_rep: str | None = None,
    label_key: str | None = None,
    resolutions: Sequence[float] = DEFAULT_RESOLUTIONS,
    n_neighbors: int = 15,
    seed: int = 0,
    graph: sp.spmatrix | None = None,
) -> float:
    """Best NMI between Leiden clusterings of the embedding and the labels.

    One kNN graph is built; Leiden runs at each resolution (default 0.1, 0.2, ..., 2.0, i.e. 20
    values); the maximum NMI with the labels is returned (the OpenProblems NeurIPS 2021 and BiCLUM
    definition).

    Parameters
    ----------
    emb
        Joint embedding, cells x dimensions, or an AnnData / MuData holding it in
        ``obsm[use_rep]``.
    labels
        Cell-type label per cell.
    use_rep
        With an AnnData / MuData ``emb``: the ``obsm`` key of the embedding (``"X"``: ``.X``);
        a MuData without it at the top level stacks its modalities' ``obsm[use_rep]``.
    label_key
        With an AnnData / MuData ``emb`` and no ``labels``: the ``obs`` column of the labels.
    resolutions
        Leiden resolutions to scan.
    n_neighbors
        Neighbours per cell in the graph.
    seed
        Leiden seed.
    graph
        The kNN graph of ``emb`` when already built (:func:`cellbridge.neighbors.knn_graph`).

    Returns
    -------
    float
        In [0, 1].
    """
    X, codes = _embedding_and_labels(emb, labels, use_rep, label_key)
    if len(resolutions) == 0:
        raise CellBridgeInputError("`resolutions` is empty; pass at least one Leiden resolution.")
    graph = graph_from_neighbors(*knn_indices(X, n_neighbors)) if graph is None else graph
    return float(
        max(
            skm.normalized_mutual_info_score(codes, leiden_on_graph(graph, resolution=r, seed=seed))
            for r in progress_bar(resolutions, desc="Leiden resolution scan", unit="resolution")
        )
    )


# --------------------------------------------------------------------------------------------------
# label transfer and FOSCTTM
# --------------------------------------------------------------------------------------------------


def transfer_accuracy(train_emb, train_labels=None, test_emb=None, test_labels=None, *,
                      use_rep: str | None = None, label_key: str | None = None, k: int = 5) -> float:
    """Accuracy of a k-NN classifier trained on one modality and predicting the other.

    A uniform-weight k-NN vote, as scikit-learn's ``KNeighborsClassifier`` in the reference
    benchmark (a tied vote goes to the label that sorts first), with one difference: when several
    training cells are tied at the k-th distance (duplicated cells), the votes left after the
    strictly closer ones are shared equally among them, where scikit-learn keeps whichever its
    search met first. Distances are rounded to 1e-9 of each test cell's largest one first, so
    the result depends neither on the order of the cells nor on the BLAS thread count (which
    moves the last bits of tied distances).

    Parameters
    ----------
    train_emb, train_labels
        Embedding and labels of the modality the classifier is trained on; ``train_emb`` may be an
        AnnData (``obsm[use_rep]``, ``obs[label_key]``), or a MuData whose first modality holding
        ``obsm[use_rep]`` is the training one and whose second is the test one (``test_emb`` None).
    test_emb, test_labels
        Embedding and true labels of the modality whose labels are predicted (or an AnnData).
    use_rep
        With AnnData / MuData inputs: the ``obsm`` key of the embedding.
    label_key
        With AnnData / MuData inputs and no labels given: the ``obs`` column of the labels.
    k
        Number of neighbours.

    Returns
    -------
    float
        Fraction of test cells predicted correctly.
    """
    (train, obs_a), (test, obs_b) = _read_pair(train_emb, test_emb, use_rep, paired=False)
    train, test = _pair(train, test, paired=False)
    train_labels = _pick(train_labels, obs_a, label_key, "train_labels", "label_key")
    test_labels = _pick(test_labels, obs_b, label_key, "test_labels", "label_key")
    codes = _joint_codes(train_labels, test_labels, train.shape[0], test.shape[0])
    y_train, y_test = codes[: train.shape[0]], codes[train.shape[0]:]
    return float(np.mean(_knn_vote(train, y_train, test, min(k, train.shape[0])) == y_test))


def _knn_vote(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, k: int,
              max_values: int = 1 << 22) -> np.ndarray:
    """Majority label of each test row's ``k`` nearest training rows (Euclidean). Distances are
    rounded to 1e-9 of the row's largest; the rows tied at the k-th distance share the votes
    left by the closer ones; a tied vote goes to the smallest label code."""
    train, test = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)
    n_classes = int(y_train.max()) + 1
    pred = np.empty(test.shape[0], dtype=np.int64)
    chunk = max(1, max_values // max(train.shape[0], 1))
    for start in range(0, test.shape[0], chunk):
        d = skm.pairwise_distances(test[start:start + chunk], train, metric="euclidean")
        d = np.round(d / np.maximum(d.max(axis=1, keepdims=True), np.finfo(float).tiny) * 1e9)
        kth = np.partition(d, k - 1, axis=1)[:, k - 1:k]
        closer, tied = d < kth, d == kth
        left = (k - closer.sum(axis=1)) / tied.sum(axis=1)  # each tied row's share of a vote
        weights = closer + tied * left[:, None]
        counts = np.zeros((d.shape[0], n_classes))
        for label in range(n_classes):
            counts[:, label] = weights[:, y_train == label].sum(axis=1)
        pred[start:start + d.shape[0]] = counts.argmax(axis=1)
    return pred


def _closer_than_partner(query: np.ndarray, target: np.ndarray, chunk_size: int) -> np.ndarray:
    """For each query row i: fraction of target rows closer to it than target row i."""
    n = query.shape[0]
    out = np.empty(n)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        d = skm.pairwise_distances(query[start:stop], target, metric="euclidean")
        own = d[np.arange(stop - start), np.arange(start, stop)]
        out[start:stop] = (d < own[:, None]).mean(axis=1)
    return out


def foscttm(emb_a, emb_b=None, *, use_rep: str | None = None, chunk_size: int | None = None) -> float:
    """Fraction of samples closer than the true match (Euclidean), averaged over both directions.

    Paired data only. For cell i of modality a, the fraction of the n cells of modality b that
    are closer to a_i than its partner b_i (and vice versa); the result is the mean over all 2n
    values. 0 = every partner is the nearest cell; about 0.5 = random. Distances are computed in
    row chunks, so memory stays at ``chunk_size`` x n.

    Parameters
    ----------
    emb_a, emb_b
        Embeddings of the two modalities, n x d each, rows aligned; or two AnnData holding them
        in ``obsm[use_rep]`` (aligned by cell name), or one MuData ``emb_a`` whose two
        modalities do (``emb_b`` None).
    use_rep
        With AnnData / MuData inputs: the ``obsm`` key of the embedding.
    chunk_size
        Rows per chunk; default keeps each chunk near 8 million distances.

    Returns
    -------
    float
        In [0, 1); lower is better.
    """
    (a, _), (b, _) = _read_pair(emb_a, emb_b, use_rep, paired=True)
    a, b = _pair(a, b, paired=True)
    n = a.shape[0]
    chunk = chunk_size or max(1, 8_000_000 // max(n, 1))
    both = np.concatenate([_closer_than_partner(a, b, chunk), _closer_than_partner(b, a, chunk)])
    return float(both.mean())


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def integration_metrics(
    emb_a, emb_b=None, labels_a=None, labels_b=None, *, use_rep: str | None = None,
    label_key: str | None = None, paired: bool = False, seed: int = 0
) -> dict[str, float]:
    """All integration metrics of METHODS §4 for a joint embedding of two modalities.

    Parameters
    ----------
    emb_a, emb_b
        Embeddings of modality a and b (cells x d each) in one shared space; or two AnnData
        holding them in ``obsm[use_rep]``, or one MuData ``emb_a`` whose two modalities do
        (``emb_b`` None).
    labels_a, labels_b
        Cell-type label per cell of each modality (None: ``obs[label_key]`` of the AnnData).
    use_rep
        With AnnData / MuData inputs: the ``obsm`` key of the embedding.
    label_key
        With AnnData / MuData inputs and no labels given: the ``obs`` column of the cell types.
    paired
        Row i of ``emb_a`` and row i of ``emb_b`` are the same cell: adds neighbourhood overlap
        (to omics mixing) and FOSCTTM. Otherwise those two are NaN.
    seed
        Seed of the alignment-score subsampling, silhouette subsampling and Leiden.

    Returns
    -------
    dict[str, float]
        ``graph_connectivity``, ``seurat_alignment_score``, ``modality_asw``,
        ``neighbourhood_overlap``, ``omics_mixing`` (mean of the available mixing metrics),
        ``map``, ``cell_type_asw``, ``nmi``, ``biology_conservation`` (their mean),
        ``transfer_accuracy_a_to_b`` (trained on a, predicting b), ``transfer_accuracy_b_to_a``,
        ``transfer_accuracy`` (mean of both directions) and ``foscttm``.
    """
    (a, obs_a), (b, obs_b) = _read_pair(emb_a, emb_b, use_rep, paired=paired)
    a, b = _pair(a, b, paired=paired)
    labels_a = _pick(labels_a, obs_a, label_key, "labels_a", "label_key")
    labels_b = _pick(labels_b, obs_b, label_key, "labels_b", "label_key")
    labels = _joint_codes(labels_a, labels_b, a.shape[0], b.shape[0])
    X = np.vstack([a, b])
    modality = np.repeat([0, 1], [a.shape[0], b.shape[0]])
    # One neighbour search of the joint embedding serves the graph metrics, MAP and the overlap.
    dist, nn = knn_indices(X, max(15, 30 if paired else 0, map_neighbors(X.shape[0])))
    graph = graph_from_neighbors(dist[:, :15], nn[:, :15])
    out: dict[str, float] = {
        "graph_connectivity": graph_connectivity(X, labels, graph=graph),
        "seurat_alignment_score": seurat_alignment_score(X, modality, seed=seed),
        "modality_asw": modality_asw(X, labels, modality, seed=seed),
        "neighbourhood_overlap": neighbourhood_overlap(a, b, neighbors=nn) if paired else float("nan"),
    }
    mixing = [out[key] for key in list(out) if not np.isnan(out[key])]
    out["omics_mixing"] = float(np.mean(mixing)) if mixing else float("nan")
    out["map"] = mean_average_precision(X, labels, neighbors=nn)
    out["cell_type_asw"] = cell_type_asw(X, labels, seed=seed)
    out["nmi"] = leiden_nmi(X, labels, seed=seed, graph=graph)
    out["biology_conservation"] = float(np.mean([out["map"], out["cell_type_asw"], out["nmi"]]))
    la, lb = labels[: a.shape[0]], labels[a.shape[0]:]
    out["transfer_accuracy_a_to_b"] = transfer_accuracy(a, la, b, lb)
    out["transfer_accuracy_b_to_a"] = transfer_accuracy(b, lb, a, la)
    out["transfer_accuracy"] = (out["transfer_accuracy_a_to_b"] + out["transfer_accuracy_b_to_a"]) / 2
    out["foscttm"] = foscttm(a, b) if paired else float("nan")
    return out


# --------------------------------------------------------------------------------------------------
# clustering metrics (scMDCF)
# --------------------------------------------------------------------------------------------------


def _label_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    h, c, v = skm.homogeneity_completeness_v_measure(true, pred)
    return {
        "nmi": skm.normalized_mutual_info_score(true, pred),
        "ari": skm.adjusted_rand_score(true, pred),
        "ami": skm.adjusted_mutual_info_score(true, pred),
        "fmi": skm.fowlkes_mallows_score(true, pred),
        "homogeneity": h,
        "completeness": c,
        "v_measure": v,
    }


def _internal_metrics(pred: np.ndarray, X, max_cells: int | None, seed: int) -> dict[str, float]:
    X = as_embedding(X, "X", distinct=True)
    if X.shape[0] != pred.shape[0]:
        raise CellBridgeInputError(
            f"`X` has {X.shape[0]} rows but `labels_pred` {pred.shape[0]} labels; pass the "
            "embedding of the clustered cells, in the same order."
        )
    n_clusters = np.unique(pred).size
    if not 2 <= n_clusters <= X.shape[0] - 1:
        warnings.warn(
            f"{n_clusters} cluster(s) for {X.shape[0]} cells: Davies–Bouldin, Calinski–Harabasz "
            "and silhouette need 2 <= clusters < cells; returning NaN for them.",
            CellBridgeWarning,
            stacklevel=3,
        )
        return dict.fromkeys(("davies_bouldin", "calinski_harabasz", "silhouette"), float("nan"))
    idx = sample_or_all(X.shape[0], max_cells, seed)
    sil = skm.silhouette_score(X[idx], pred[idx]) if np.unique(pred[idx]).size > 1 else np.nan
    return {
        "davies_bouldin": skm.davies_bouldin_score(X, pred),
        "calinski_harabasz": skm.calinski_harabasz_score(X, pred),
        "silhouette": sil,
    }


def clustering_metrics(
    labels_pred,
    labels_true=None,
    X=None,
    *,
    cluster_key: str | None = None,
    label_key: str | None = None,
    use_rep: str | None = None,
    silhouette_max_cells: int | None = _MAX_SILHOUETTE_CELLS,
    seed: int = 0,
) -> dict[str, float]:
    """Score a clustering against labels and/or on the data it clusters (scikit-learn).

    Parameters
    ----------
    labels_pred
        Cluster label per cell, or an AnnData / MuData holding them in ``obs[cluster_key]``.
    labels_true
        Reference labels: gives ``nmi``, ``ari``, ``ami``, ``fmi``, ``homogeneity``,
        ``completeness``, ``v_measure`` (all invariant to renaming the clusters).
    X
        Cells x dimensions data or embedding: gives ``davies_bouldin`` (lower is better),
        ``calinski_harabasz`` and ``silhouette``.
    cluster_key
        With an AnnData / MuData ``labels_pred``: the ``obs`` column of the clusters.
    label_key
        With an AnnData / MuData ``labels_pred`` and no ``labels_true``: the ``obs`` column of
        the reference labels (None: no label-based metrics).
    use_rep
        With an AnnData / MuData ``labels_pred`` and no ``X``: the ``obsm`` key of the data or
        embedding for the internal metrics (``"X"``: ``.X``; None: none).
    silhouette_max_cells
        Above this many cells the silhouette uses a seeded subsample of this size.
    seed
        Seed of that subsample.

    Returns
    -------
    dict[str, float]
        The metrics that the given inputs allow.
    """
    if _kind(labels_pred) is not None:
        data, obs = labels_pred, labels_pred.obs
        labels_pred = _pick(None, obs, cluster_key, "labels_pred", "cluster_key")
        if labels_true is None and label_key is not None:
            labels_true = _pick(None, obs, label_key, "labels_true", "label_key")
        if X is None and use_rep is not None:
            X = _read_rep(data, use_rep, "labels_pred")[0]
    elif cluster_key is not None or label_key is not None or use_rep is not None:
        raise CellBridgeInputError("cluster_key, label_key and use_rep apply to an AnnData or MuData "
                                   "`labels_pred`; with arrays pass labels_true= and X= directly.")
    if labels_true is None and X is None:
        raise CellBridgeInputError(
            "clustering_metrics needs `labels_true` (label-based metrics) and/or `X` "
            "(internal metrics); pass at least one."
        )
    pred_values = np.asarray(labels_pred, dtype=object)
    pred = _labels(pred_values, pred_values.shape[0], "labels_pred")
    out: dict[str, float] = {}
    if labels_true is not None:
        out.update(_label_metrics(pred, _labels(labels_true, pred.shape[0], "labels_true")))
    if X is not None:
        X = X.toarray() if sp.issparse(X) else X
        out.update(_internal_metrics(pred, X, silhouette_max_cells, seed))
    return {key: float(value) for key, value in out.items()}
