"""BiCLUM's input preparation (cellbridge.models.biclum._data)."""

import numpy as np
import pytest
import scipy.sparse as sp

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.models.biclum._data import ExpressionTransform, PartnerSampler, prepare_unpaired


@pytest.fixture(scope="module")
def sim():
    return cb.datasets.simulate_multiome(400, n_genes=120, n_types=3, seed=11)


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


def test_partner_sampler_draws_only_mnn_partners():
    pairs = np.array([[0, 1], [0, 2], [2, 0]])  # other cell 1 and rna cell 3 have no partner
    sampler = PartnerSampler(pairs, n_other=3, n_rna=4)
    allowed = {tuple(p) for p in pairs}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        o, r, flag = sampler.draw(rng)
        assert len(o) == len(sampler) == 7
        assert flag.tolist() == [True, False, True, True, True, True, False]
        for oi, ri, f in zip(o, r, flag):
            if f:
                assert (oi, ri) in allowed
                seen.add((oi, ri))
        assert o[:3].tolist() == [0, 1, 2] and r[3:].tolist() == [0, 1, 2, 3]
    assert seen == allowed  # both partners of other cell 0 get drawn
