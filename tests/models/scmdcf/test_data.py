"""scMDCF's input preparation (prepare_paired): alignment, joint filtering, validation, never
modifying inputs. The generic paired helpers (infer_modality, split_mudata, align_cells) are
tested in tests/pp/test_paired.py."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp

from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge.models.scmdcf._data import prepare_paired


@pytest.mark.parametrize("fmt", [np.asarray, sp.csr_matrix, sp.csc_matrix])
def test_shapes_scaling_and_inputs_untouched(fmt, make_pair):
    rna, other = make_pair(fmt=fmt)
    before = (rna.X.copy(), other.X.copy())
    r, o = prepare_paired(rna, other)
    assert r.shape == (60, 40) and o.shape == (60, 10)
    assert np.allclose(r.X.mean(0), 0, atol=1e-5)
    assert np.allclose(r.X.std(0)[r.X.std(0) > 0], 1, atol=1e-3)
    assert r.uns["cellbridge_prepare"]["modality"] == "protein"
    for a, b in zip(before, (rna.X, other.X)):
        a, b = (a.toarray(), b.toarray()) if sp.issparse(a) else (a, b)
        assert np.array_equal(a, b)
    assert "scaled" not in rna.uns and rna.n_vars == 40


def test_shuffled_cell_order_is_aligned(make_pair):
    rna, other = make_pair()
    _, o0 = prepare_paired(rna, other)
    perm = np.random.default_rng(1).permutation(other.n_obs)
    r1, o1 = prepare_paired(rna, other[perm].copy())
    assert list(o1.obs_names) == list(r1.obs_names) == list(rna.obs_names)
    np.testing.assert_allclose(o1.X, o0.X, atol=1e-6)


def test_unpaired_cells_dropped_with_warning_and_too_few_error(make_pair):
    rna, other = make_pair()
    with pytest.warns(CellBridgeWarning, match="no partner"):
        r, o = prepare_paired(rna, other[5:].copy())
    assert r.n_obs == 55 and list(r.obs_names) == list(o.obs_names)
    renamed = other.copy()
    renamed.obs_names = [f"{n}_atac" for n in other.obs_names]
    with pytest.raises(CellBridgeInputError, match="shared"):
        prepare_paired(rna, renamed)


def test_cells_empty_in_either_modality_are_dropped_from_both(make_pair):
    rna, other = make_pair()
    rna.X[3] = 0
    other.X[7] = 0
    with pytest.warns(CellBridgeWarning, match="2 cells have no counts"):
        r, o = prepare_paired(rna, other)
    assert r.n_obs == o.n_obs == 58
    assert "c3" not in r.obs_names and "c7" not in o.obs_names


def test_all_zero_feature_columns_removed(make_pair):
    rna, other = make_pair()
    rna.X[:, [0, 5]] = 0
    other.X[:, 2] = 0
    r, o = prepare_paired(rna, other)
    assert "g0" not in r.var_names and "g5" not in r.var_names and r.n_vars == 38
    assert o.n_vars == 9 and np.isfinite(r.X).all()


def test_top_n_features(make_pair):
    rna, other = make_pair(n_genes=40)
    r, _ = prepare_paired(rna, other, n_top_rna=15)
    assert r.n_vars == 15


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_rejected(bad, make_pair):
    rna, other = make_pair()
    rna.X[0, 0] = bad
    with pytest.raises(CellBridgeInputError, match="NaN or infinite"):
        prepare_paired(rna, other)


def test_non_integer_suggests_counts_layer_and_layer_works(make_pair):
    rna, other = make_pair()
    rna.layers["counts"] = rna.X.copy()
    rna.X = np.log1p(rna.X)
    with pytest.raises(CellBridgeInputError, match='layer="counts"'):
        prepare_paired(rna, other)
    r, _ = prepare_paired(rna, other, layer_rna="counts")
    assert r.n_obs == 60


def test_empty_duplicated_and_wrong_type(make_pair):
    rna, other = make_pair()
    with pytest.raises(CellBridgeInputError, match="empty"):
        prepare_paired(rna[:, []].copy(), other)
    dup = other.copy()
    dup.obs_names = ["c0"] * dup.n_obs
    with pytest.raises(CellBridgeInputError, match="duplicated"):
        prepare_paired(rna, dup)
    with pytest.raises(CellBridgeInputError, match="AnnData"):
        prepare_paired(rna, other.X)


def test_inferred_modality_and_lsi(make_pair):
    rna, atac = make_pair(n_other=30, kind="atac")
    _, o = prepare_paired(rna, atac, atac_representation="lsi", n_lsi=5)
    assert o.uns["cellbridge_prepare"]["modality"] == "atac"  # inferred from the peak names
    assert o.shape == (60, 5) and o.uns["cellbridge_prepare"]["representation"] == "lsi"


def test_mudata_input(make_pair):
    rna, other = make_pair()
    r, o = prepare_paired(md.MuData({"rna": rna, "adt": other}))
    assert r.n_obs == o.n_obs == 60 and o.uns["cellbridge_prepare"]["modality"] == "protein"


def test_real_bmmc_multiome_counts_layer(shared_data):
    rna = ad.read_h5ad(shared_data / "bmmc_multiome_small" / "rna.h5ad")
    atac = ad.read_h5ad(shared_data / "bmmc_multiome_small" / "atac.h5ad")
    with pytest.raises(CellBridgeInputError, match="non-integer"):
        prepare_paired(rna, atac)
    r, o = prepare_paired(rna, atac, layer_rna="counts", layer_other="counts")
    assert o.uns["cellbridge_prepare"]["modality"] == "atac"
    assert r.n_obs == o.n_obs and r.n_obs > 400 and np.isfinite(o.X).all()


def test_rna_pca_representation(make_pair):
    rna, other = make_pair()
    r, _ = prepare_paired(rna, other, rna_representation="pca", n_pcs=5)
    assert r.shape == (60, 5) and r.X[:, 0].std() == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(CellBridgeInputError, match="rna_representation"):
        prepare_paired(rna, other, rna_representation="umap")
