"""Statistics of gene-peak links on matrices (cellbridge.tl._link_stats), checked by hand; the
planted-link tests of the whole path are in test_links.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge.tl._link_stats import _column_moments, _corr_block, _pseudobulk, _tfidf, candidate_pairs


def test_pseudobulk_sums_the_rows_of_each_group_and_leaves_out_minus_one():
    X = sp.csr_matrix(np.array([[1.0, 0], [2, 1], [0, 5], [7, 7]]))
    out = _pseudobulk(X, np.array([1, 0, 1, -1]), 2).toarray()
    np.testing.assert_array_equal(out, [[2, 1], [1, 5]])
    assert _pseudobulk(X, np.arange(4), 4) is X  # single cells: the matrix itself


def test_tfidf_by_hand():
    # cell totals 4 and 2, peak totals 3 and 3, two cells: log1p(x / row * 2 / col * 1e4)
    X = sp.csr_matrix(np.array([[3.0, 1], [0, 2]]))
    expected = np.log1p(np.array([[3 / 4 * 2 / 3, 1 / 4 * 2 / 3], [0, 2 / 2 * 2 / 3]]) * 1e4)
    np.testing.assert_allclose(_tfidf(X).toarray(), expected)


def test_correlation_block_is_pearson():
    rng = np.random.default_rng(0)
    E = sp.csr_matrix(rng.poisson(2.0, size=(30, 3)).astype(float))
    A = sp.csr_matrix(rng.poisson(1.0, size=(30, 5)).astype(float))
    mu_e, sd_e = _column_moments(E)
    mu_a, sd_a = _column_moments(A)
    np.testing.assert_allclose(mu_e, E.toarray().mean(0))
    np.testing.assert_allclose(sd_e, E.toarray().std(0))
    C = _corr_block(E, A, mu_e, sd_e, mu_a, sd_a)
    full = np.corrcoef(E.toarray().T, A.toarray().T)[:3, 3:]
    np.testing.assert_allclose(C, full, atol=1e-12)


@pytest.mark.parametrize("strand, distance", [("+", 150), ("-", -150)])
def test_candidate_pair_distance_follows_the_strand(strand, distance):
    genes = pd.DataFrame({"chrom": ["chr1"], "start": [1000], "end": [2001], "strand": [strand]})
    tss = 1000 if strand == "+" else 2000
    start = np.array([tss + 100, 5000, 10])
    pairs = candidate_pairs(genes, np.array(["chr1", "chr1", "chr2"]), start, start + 100, window=1000)
    assert pairs["peak"].tolist() == [0] and pairs["distance"].tolist() == [distance]
