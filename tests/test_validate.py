"""Input checks (cellbridge._validate) on hand-made AnnData objects."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellbridge import CellBridgeInputError
from cellbridge._errors import DegenerateEmbeddingError
from cellbridge._validate import (
    as_embedding,
    check_counts,
    check_label_column,
    check_modality,
    check_model_embedding,
    embedding_fault,
    is_integer_matrix,
    row_blocks,
)


def _adata(X) -> ad.AnnData:
    a = ad.AnnData(X)
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.var_names = [f"g{j}" for j in range(a.n_vars)]
    return a


def test_check_modality_returns_the_matrix_and_refuses_bad_inputs():
    a = _adata(sp.csr_matrix(np.array([[1.0, 0.0], [2.0, 3.0]], dtype=np.float32)))
    a.layers["counts"] = a.X.copy()
    assert check_modality(a, "rna", counts=True) is a.X
    assert check_modality(a, "rna", layer="counts", counts=True) is a.layers["counts"]
    with pytest.raises(CellBridgeInputError, match="`rna` must be an AnnData, got ndarray"):
        check_modality(np.zeros((2, 2)), "rna")
    with pytest.raises(CellBridgeInputError, match="`rna` is empty"):
        check_modality(a[:0].copy(), "rna")
    dup = a.copy()
    dup.var_names = ["g", "g"]
    with pytest.raises(CellBridgeInputError, match=r"`rna.var_names` has duplicated names"):
        check_modality(dup, "rna")


def test_counts_must_be_non_negative_integers():
    check_counts(np.array([[0.0, 2.0]]))
    assert is_integer_matrix(sp.csr_matrix([[1.0, 2.0]])) and not is_integer_matrix(np.array([[0.5]]))
    with pytest.raises(CellBridgeInputError, match="negative values"):
        check_counts(np.array([[-1.0, 2.0]]))
    with pytest.raises(CellBridgeInputError, match=r"non-integer values \(e.g. 0.5\).*layer=\"counts\""):
        check_counts(sp.csr_matrix([[0.5, 2.0]]))
    with pytest.raises(CellBridgeInputError, match="1 NaN or infinite"):
        check_counts(np.array([[np.inf, 2.0]]))


def test_as_embedding_and_label_column():
    X = as_embedding([[1, 2], [3, 4]])
    assert X.dtype == np.float64 and X.shape == (2, 2)
    with pytest.raises(CellBridgeInputError, match="2-D"):
        as_embedding(np.zeros(3))
    with pytest.raises(CellBridgeInputError, match="at least 3 are needed"):
        as_embedding(np.zeros((2, 2)), min_rows=3)
    with pytest.raises(CellBridgeInputError, match="finite numbers"):
        as_embedding(np.array([[np.nan, 1.0]]))
    a = _adata(np.ones((2, 2), dtype=np.float32))
    a.obs["cell_type"] = ["x", "y"]
    check_label_column(a, "cell_type")
    with pytest.raises(CellBridgeInputError, match="no column 'celltype'"):
        check_label_column(a, "celltype")


def test_row_blocks_cover_the_rows_in_order():
    X = sp.random(10, 3, density=0.5, format="csr", random_state=0)
    blocks = list(row_blocks(X, rows=4))
    assert [b.shape[0] for b in blocks] == [4, 4, 2]
    np.testing.assert_array_equal(sp.vstack(blocks).toarray(), X.toarray())


def test_embedding_fault_finds_nan_and_collapse_scale_free():
    rng = np.random.default_rng(0)
    assert embedding_fault(rng.normal(size=(5, 3))) is None
    assert embedding_fault(np.ones((1, 3))) is None  # one cell cannot collapse
    assert "2 NaN" in embedding_fault(np.array([[np.nan, 1.0], [np.inf, 0.0]]))
    for scale in (1e-6, 1.0, 1e6):
        point = np.full((4, 3), 3.0 * scale)
        assert "collapsed: all 4 cells" in embedding_fault(point)
        assert embedding_fault(point + np.eye(4, 3) * 1e-3 * scale) is None  # a spread of 1e-3 of the values
    assert "collapsed" in embedding_fault(np.zeros((3, 2)))
    # identical inputs may share a point; distinct inputs may not
    assert embedding_fault(np.ones((4, 2)), inputs=np.ones((4, 7))) is None
    assert "collapsed" in embedding_fault(np.ones((4, 2)), inputs=rng.normal(size=(4, 7)))


def test_as_embedding_distinct_and_model_embedding_check():
    with pytest.raises(CellBridgeInputError, match="collapsed: all 3 cells"):
        as_embedding(np.ones((3, 2)), "emb_a", distinct=True)
    assert as_embedding(np.ones((3, 2))).shape == (3, 2)  # allowed unless distinct
    z = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert check_model_embedding(z, model="M") is z  # returned as is (no copy, dtype kept)
    with pytest.raises(DegenerateEmbeddingError, match="M's embedding of the rna cells holds 1 NaN.*not finite"):
        check_model_embedding(np.array([[np.nan, 1.0], [0.0, 1.0]]), model="M", what="rna cells")
    with pytest.raises(DegenerateEmbeddingError, match="collapsed.*same point"):
        check_model_embedding(np.zeros((3, 2)), model="M")
