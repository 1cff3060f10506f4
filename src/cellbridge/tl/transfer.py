"""Label transfer between embeddings by k-nearest-neighbour majority vote."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from .._errors import CellBridgeInputError
from .clustering import as_embedding

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


def transfer_labels(
    ref_emb, ref_labels, query_emb, *, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Predict labels of query cells from their ``k`` nearest reference cells (Euclidean).

    Both embeddings must live in the same space (e.g. the joint BiCLUM space).

    Parameters
    ----------
    ref_emb
        Reference cells x dimensions.
    ref_labels
        One label per reference cell (any hashable values).
    query_emb
        Query cells x dimensions (same number of dimensions).
    k
        Number of neighbours that vote (capped at the number of reference cells).

    Returns
    -------
    labels : numpy.ndarray
        Predicted label per query cell (the majority among its ``k`` neighbours; a tie goes to
        the tied label with the nearest neighbour).
    confidence : numpy.ndarray
        Fraction of the ``k`` neighbours that carry the predicted label, in (0, 1].
    """
    ref = as_embedding(ref_emb, "ref_emb")
    query = as_embedding(query_emb, "query_emb")
    if ref.shape[1] != query.shape[1]:
        raise CellBridgeInputError(
            f"`ref_emb` has {ref.shape[1]} dimensions but `query_emb` has {query.shape[1]}; "
            "both must come from the same joint embedding."
        )
    if k < 1:
        raise CellBridgeInputError(f"`k` must be at least 1, got {k}.")
    values = _check_labels(ref_labels, ref.shape[0], "ref_labels")
    codes, classes = pd.factorize(values)
    k = min(k, ref.shape[0])
    idx = NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(query, return_distance=False)
    winner, confidence = _vote(codes[idx], len(classes))
    return np.asarray(classes, dtype=object)[winner], confidence
