"""Label transfer (cellbridge.tl.transfer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.tl import transfer_labels


def test_public_api():
    assert cb.tl.transfer_labels is transfer_labels


def test_transfer_labels_separated_clusters(blobs):
    X, labels = blobs()
    names = np.array(["B", "T", "NK"], dtype=object)[labels]
    Y, _ = blobs(seed=0)
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


def test_transfer_labels_between_anndata_through_use_rep(blobs):
    import anndata as ad

    X, labels = blobs()
    names = np.array(["B", "T", "NK"], dtype=object)[labels]
    ref = ad.AnnData(np.zeros((X.shape[0], 1)), obs=pd.DataFrame({"cell_type": names}, index=[f"r{i}" for i in
                                                                                               range(len(X))]),
                     obsm={"X_biclum": X})
    query = ad.AnnData(np.zeros((X.shape[0], 1)), obsm={"X_biclum": X + 0.5})
    expected, conf = transfer_labels(X, names, X + 0.5)
    assert transfer_labels(ref, "cell_type", query) is None  # written in place, column name given positionally
    assert query.obs["cell_type_transferred"].tolist() == list(expected)
    np.testing.assert_array_equal(query.obs["cell_type_transferred_confidence"], conf)
    out = transfer_labels(ref, query_emb=query, label_key="cell_type", key_added="pred", copy=True)
    assert "pred" not in query.obs and out.obs["pred"].tolist() == list(expected)
    pred, _ = transfer_labels(ref, "cell_type", X[:3])  # AnnData reference, array query: arrays back
    assert list(pred) == list(names[:3])


def test_transfer_labels_anndata_errors(blobs):
    import anndata as ad

    X, labels = blobs()
    ref = ad.AnnData(np.zeros((X.shape[0], 1)), obsm={"X_biclum": X})
    with pytest.raises(CellBridgeInputError, match="no column 'cell_type'"):
        transfer_labels(ref, "cell_type", X)
    with pytest.raises(CellBridgeInputError, match="no reference labels"):
        transfer_labels(ref, query_emb=X)
    with pytest.raises(CellBridgeInputError, match="query_emb"):
        transfer_labels(ref, labels)
    with pytest.raises(CellBridgeInputError, match="once"):
        transfer_labels(ref, "a", X, label_key="b")
    with pytest.raises(CellBridgeInputError, match="needs an AnnData"):
        transfer_labels(X, "cell_type", X)
    with pytest.raises(CellBridgeInputError, match="no 'X_scmdcf'"):
        transfer_labels(ref, labels, X, use_rep="X_scmdcf")
