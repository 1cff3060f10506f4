import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.models import _biclum_train
from cellbridge.pp.rna import ExpressionTransform, column_mean_std
from cellbridge.pp.unpaired import prepare_unpaired


@pytest.fixture(scope="module")
def sim():
    return cb.datasets.simulate_multiome(400, n_genes=120, n_types=3, seed=11)


def test_column_mean_std_sparse_matches_dense():
    X = sp.random(50, 7, density=0.3, random_state=0, format="csr") * 10
    X[:, 3] = 0  # constant column -> std 1
    mean, std = column_mean_std(X)
    np.testing.assert_allclose(mean, X.toarray().mean(0), rtol=1e-5)
    dense_std = X.toarray().std(0, ddof=1)
    np.testing.assert_allclose(std, np.where(dense_std > 0, dense_std, 1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["lognorm", "clr"])
def test_transform_pca_by_sparse_product_equals_dense(sim, kind):
    X = sim["rna"].X if kind == "lognorm" else sp.csr_matrix(sim["adt"].X)
    t = ExpressionTransform(kind, [str(i) for i in range(X.shape[1])])
    Xn = t.fit(X, 10, seed=0)
    dense = ((np.asarray(Xn.toarray() if sp.issparse(Xn) else Xn) - t.mean) / t.std - t.center) @ t.components.T
    np.testing.assert_allclose(t.pca_normalized(Xn), dense, atol=1e-3)
    np.testing.assert_allclose(t.embed(X), dense, atol=1e-3)  # new cells go through the same steps


def test_subsampled_pca_fit_spans_nearly_the_same_space(sim):
    X = sim["rna"].X
    full = ExpressionTransform("lognorm", list(sim["rna"].var_names))
    full.fit(X, 5, seed=0)
    sub = ExpressionTransform("lognorm", list(sim["rna"].var_names))
    sub.fit(X, 5, seed=0, max_fit_cells=200)
    # Leading principal subspaces agree: singular values of C_full C_sub^T near 1.
    overlap = np.linalg.svd(full.components[:3] @ sub.components[:3].T, compute_uv=False)
    assert overlap.min() > 0.9


def test_sparse_row_source_matches_dense(sim, monkeypatch):
    data = prepare_unpaired(sim["rna"], sim["rna"][::-1].copy(), modality="atac")
    idx = np.array([3, 1, 1, 7])
    for kind in ("counts", "scaled"):
        dense = _biclum_train.RowSource(data.rna, kind, torch.device("cpu")).rows(idx)
        monkeypatch.setattr(_biclum_train, "DENSE_LIMIT", 0)
        sparse = _biclum_train.RowSource(data.rna, kind, torch.device("cpu")).rows(idx)
        monkeypatch.undo()
        torch.testing.assert_close(dense, sparse)


def test_shared_pca_equals_dense_joint_pca(sim):
    from sklearn.decomposition import PCA

    data = prepare_unpaired(sim["rna"], sim["rna"][::-1].copy(), modality="atac")
    a, b = data.shared_pca(5)
    stacked = np.vstack(data.shared_views())
    dense = PCA(5, random_state=0).fit(stacked).transform(stacked)
    np.testing.assert_allclose(np.abs(np.vstack([a, b])), np.abs(dense), atol=1e-3)


def test_protein_preparation_pairs_and_no_shared_protein(sim):
    data = prepare_unpaired(sim["rna"], sim["adt"], modality="protein")
    assert len(data.feature_pairs) == sim["adt"].n_vars  # the simulator's panel is fully mapped
    assert data.other.pca.shape[1] < sim["adt"].n_vars  # PCA capped below the number of proteins
    bad = sim["adt"].copy()
    bad.var_names = [f"mystery{i}" for i in range(bad.n_vars)]
    with pytest.warns(UserWarning), pytest.raises(CellBridgeInputError, match="No protein maps"):
        prepare_unpaired(sim["rna"], bad, modality="protein")
    with pytest.raises(CellBridgeInputError, match="modality"):
        prepare_unpaired(sim["rna"], bad, modality="rna")


def test_preparation_never_modifies_inputs(sim):
    rna = sim["rna"].copy()
    gam = sim["rna"][::-1].copy()
    gam.X = gam.X * 0.5  # non-integer activity scores take the `seurat` HVG path
    before = (rna.X.copy(), gam.X.copy())
    prepare_unpaired(rna, gam, modality="atac", n_top_genes=50)
    assert (rna.X != before[0]).nnz == 0 and (gam.X != before[1]).nnz == 0
