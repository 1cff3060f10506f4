"""Label transfer between embeddings by k-nearest-neighbour majority vote (arrays, or AnnData /
MuData holding the embedding in ``obsm[use_rep]`` and the labels in ``obs[label_key]``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from .._errors import CellBridgeInputError
from .._validate import get_rep

__all__ = ["transfer_labels"]


def _check_labels(labels, n: int, name: str) -> np.ndarray:
    values = np.asarray(labels.values if isinstance(labels, pd.Series) else labels, dtype=object)
    if values.ndim != 1 or values.shape[0] != n:
        raise CellBridgeInputError(
            f"`{name}` must hold one label per reference cell ({n}), got shape {values.shape}."
        )
    if pd.isna(values).any():
        raise CellBridgeInputError(
            f"`{name}` has {int(pd.isna(values).sum())} missing labels; drop those reference "
            "cells (or give them a label such as 'unknown') before transferring."
        )
    return values


def _vote(codes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote over each row of neighbour label codes (columns sorted by distance).

    Ties go to the tied label whose first neighbour is nearest.
    """
    n, k = codes.shape
    counts = np.zeros((n, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), codes.ravel()), 1)
    best = counts.max(axis=1)
    is_top = counts[np.arange(n)[:, None], codes] == best[:, None]  # neighbours voting a top label
    winner = codes[np.arange(n), is_top.argmax(axis=1)]
    return winner, best / k


def _reference_labels(ref, ref_labels, label_key):
    """The reference labels: given per cell, or read from ``ref.obs`` (a column name)."""
    if isinstance(ref_labels, str) and label_key is not None:
        raise CellBridgeInputError("pass the reference labels' column once: as `ref_labels` or as `label_key`.")
    key = ref_labels if isinstance(ref_labels, str) else label_key
    if key is None:
        if ref_labels is None:
            raise CellBridgeInputError(
                "no reference labels: pass `ref_labels` (one label per reference cell) or, for an "
                "AnnData reference, `label_key=` the `obs` column holding them."
            )
        return ref_labels, None
    if not hasattr(ref, "obs"):
        raise CellBridgeInputError(
            f"the labels' column {key!r} needs an AnnData / MuData reference; with an array pass the "
            "labels themselves as `ref_labels`."
        )
    if key not in ref.obs:
        raise CellBridgeInputError(
            f"`ref_emb.obs` has no column {key!r} (columns: {list(ref.obs.columns)}); pass the column "
            "holding the reference cells' labels."
        )
    return ref.obs[key], key


def transfer_labels(
    ref_emb, ref_labels=None, query_emb=None, *, k: int = 5, label_key: str | None = None,
    use_rep: str | None = None, key_added: str | None = None, copy: bool = False,
):
    """Predict labels of query cells from their ``k`` nearest reference cells (Euclidean).

    Both embeddings must live in the same space (e.g. the joint BiCLUM space).

    Parameters
    ----------
    ref_emb
        Reference cells x dimensions, or an AnnData / MuData holding them in ``obsm[use_rep]``.
    ref_labels
        One label per reference cell (any hashable values); for an AnnData reference also the name
        of the ``obs`` column holding them (or use ``label_key``).
    query_emb
        Query cells x dimensions (same number of dimensions), or an AnnData / MuData holding them
        in ``obsm[use_rep]``.
    k
        Number of neighbours that vote (capped at the number of reference cells).
    label_key
        ``obs`` column of an AnnData reference with the labels (instead of ``ref_labels``).
    use_rep
        ``obsm`` key of the joint embedding in an AnnData / MuData reference or query (default: the
        first of ``X_biclum``, ``X_scmdcf``, ``X_pca`` present).
    key_added
        AnnData / MuData query: the ``obs`` column written with the predicted labels (default
        ``f"{label_key}_transferred"``, or ``"transferred_label"`` without a column name), and
        ``f"{key_added}_confidence"`` with the vote fraction.
    copy
        AnnData / MuData query: write on a copy and return it instead of writing in place.

    Returns
    -------
    tuple or AnnData or MuData or None
        For an array query, ``(labels, confidence)``: the predicted label per query cell (the
        majority among its ``k`` neighbours; a tie goes to the tied label with the nearest
        neighbour) and the fraction of the ``k`` neighbours that carry it, in (0, 1]. For an
        AnnData / MuData query: ``None`` (or the copy with ``copy=True``), with both written to
        ``obs``.
    """
    if query_emb is None:
        raise CellBridgeInputError("`query_emb` is missing: pass the query cells' embedding (array or AnnData).")
    labels_in, key = _reference_labels(ref_emb, ref_labels, label_key)
    ref = get_rep(ref_emb, use_rep, name="ref_emb")
    query = get_rep(query_emb, use_rep, name="query_emb")
    if ref.shape[1] != query.shape[1]:
        raise CellBridgeInputError(
            f"`ref_emb` has {ref.shape[1]} dimensions but `query_emb` has {query.shape[1]}; "
            "both must come from the same joint embedding."
        )
    if k < 1:
        raise CellBridgeInputError(f"`k` must be at least 1, got {k}.")
    values = _check_labels(labels_in, ref.shape[0], "ref_labels")
    codes, classes = pd.factorize(values)
    k = min(k, ref.shape[0])
    idx = NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(query, return_distance=False)
    winner, confidence = _vote(codes[idx], len(classes))
    labels = np.asarray(classes, dtype=object)[winner]
    if not (hasattr(query_emb, "obs") and hasattr(query_emb, "obsm")):
        return labels, confidence
    out_key = key_added or (f"{key}_transferred" if key else "transferred_label")
    target = query_emb.copy() if copy else query_emb
    order = [str(c) for c in classes]
    target.obs[out_key] = pd.Categorical(labels.astype(str), categories=order)
    target.obs[f"{out_key}_confidence"] = confidence
    return target if copy else None
