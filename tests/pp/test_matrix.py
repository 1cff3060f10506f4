"""Matrix helpers of preprocessing (cellbridge.pp._matrix), on hand-checkable matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellbridge.pp._matrix import (
    cca,
    column_mean_std,
    library_normalize_log,
    median_total,
    scale_rows,
    sparse_mean_std,
    take,
    zscore,
)


def test_column_mean_std_sparse_matches_dense():
    X = sp.random(50, 7, density=0.3, random_state=0, format="csr") * 10
    X[:, 3] = 0  # constant column -> std 1
    mean, std = column_mean_std(X)
    np.testing.assert_allclose(mean, X.toarray().mean(0), rtol=1e-5)
    dense_std = X.toarray().std(0, ddof=1)
    np.testing.assert_allclose(std, np.where(dense_std > 0, dense_std, 1), rtol=1e-5)


def test_sparse_mean_std_matches_numpy():
    X = sp.random(50, 7, density=0.3, format="csr", random_state=0, dtype=np.float32)
    X[:, 3] = 0
    mean, std = sparse_mean_std(X)
    dense = X.toarray().astype(np.float64)
    np.testing.assert_allclose(mean, dense.mean(0), rtol=1e-6)
    expected = dense.std(0)
    expected[expected == 0] = 1
    np.testing.assert_allclose(std, expected, rtol=1e-6)
    chunked = sparse_mean_std(X, chunk=3)  # the chunked passes give the same statistics
    np.testing.assert_allclose(chunked[0], mean, rtol=1e-6)
    np.testing.assert_allclose(chunked[1], std, rtol=1e-6)


def test_library_normalize_log_by_hand():
    X = np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]])
    out = library_normalize_log(X, 8.0)
    assert sp.isspmatrix_csr(out) and out.dtype == np.float32
    np.testing.assert_allclose(out.toarray(), np.log1p([[2.0, 6.0], [0.0, 0.0], [4.0, 4.0]]), rtol=1e-6)
    assert median_total(X) == 4.0  # the empty cell is not counted
    assert median_total(np.zeros((2, 2))) == 1.0


def test_zscore_and_scale_rows_agree():
    rng = np.random.default_rng(0)
    X = rng.poisson(3.0, size=(20, 4)).astype(np.float32)
    X[:, 2] = 5  # constant feature -> 0
    z = zscore(X, None)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-6)
    assert np.all(z[:, 2] == 0)
    mean, std = sparse_mean_std(sp.csr_matrix(X))
    rows = np.array([4, 0, 7])
    np.testing.assert_allclose(scale_rows(sp.csr_matrix(X), rows, mean, std, None), z[rows], atol=1e-5)
    clipped = scale_rows(X, rows, mean, std, 0.5)
    assert np.abs(clipped).max() <= 0.5
    assert np.abs(zscore(X, 0.5)).max() <= 0.5


def test_take_copies_only_when_selecting():
    X = sp.random(6, 4, density=0.5, format="csr", random_state=1)
    assert take(X, np.arange(6), np.ones(4, dtype=bool)) is X
    assert take(X) is X
    picked = take(X, [5, 0], np.array([True, False, True, False]))
    np.testing.assert_array_equal(picked.toarray(), X.toarray()[[5, 0]][:, [0, 2]])


@pytest.mark.parametrize("fmt", [np.asarray, sp.csr_matrix])
def test_column_mean_std_dense_and_sparse_agree(fmt):
    X = np.arange(12, dtype=np.float32).reshape(4, 3) ** 2
    mean, std = column_mean_std(fmt(X))
    np.testing.assert_allclose(mean, X.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, X.std(0, ddof=1), rtol=1e-5)


def _shared_signal(seed: int = 0, n: int = 400):
    """Two views of one 2-d signal, each with its own noise dimensions."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 2))
    a = signal @ rng.normal(size=(2, 12)) + 0.3 * rng.normal(size=(n, 12))
    b = signal @ rng.normal(size=(2, 20)) + 0.3 * rng.normal(size=(n, 20))
    return a, b, signal


def test_cca_finds_the_shared_signal_and_projects_any_rows():
    a, b, signal = _shared_signal()
    (wa, ma), (wb, mb), corr = cca(a, b, 2)
    assert corr.shape == (2,) and corr[0] >= corr[1] > 0.9
    pa, pb = (a - ma) @ wa, (b - mb) @ wb
    for k in range(2):  # paired projections agree, and they span the true signal
        assert abs(np.corrcoef(pa[:, k], pb[:, k])[0, 1]) > 0.9
    fit = np.linalg.lstsq(np.column_stack([pa, np.ones(len(pa))]), signal, rcond=None)[0]
    assert np.corrcoef((np.column_stack([pa, np.ones(len(pa))]) @ fit).ravel(), signal.ravel())[0, 1] > 0.95


def test_cca_ridge_shrinks_towards_the_cross_covariance_directions():
    """A larger ``reg`` lowers the canonical correlations; a huge one gives the leading singular
    vectors of the cross-covariance (partial least squares)."""
    a, b, _ = _shared_signal(seed=1)
    corrs = [cca(a, b, 1, reg=r)[2][0] for r in (0.0, 0.01, 1.0, 100.0)]
    assert all(x > y for x, y in zip(corrs, corrs[1:]))
    (wa, _), (wb, _), _ = cca(a, b, 1, reg=1e6)
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    for w, ref in ((wa[:, 0], u[:, 0]), (wb[:, 0], vt[0])):
        assert abs(w @ ref) / np.linalg.norm(w) > 0.999
