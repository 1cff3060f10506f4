import numpy as np
import pytest

from cellbridge import CellBridgeInputError
from cellbridge.pairs import PartnerSampler, feature_pairs, knn, mnn_pairs


def test_mnn_pairs_hand_example():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[0.1, 1.0], [1.0, 0.1]])
    pairs = mnn_pairs(a, b, k=1, method="exact")
    # a0 <-> b1 and a1 <-> b0 are mutual; a2 points to one of them but is nobody's nearest.
    assert pairs.tolist() == [[0, 1], [1, 0]]


def test_hnsw_agrees_with_exact_on_clustered_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 20)) * 5
    a = centres[rng.integers(0, 5, 300)] + rng.normal(size=(300, 20))
    b = centres[rng.integers(0, 5, 250)] + rng.normal(size=(250, 20))
    exact = knn(b, a, 10, method="exact")
    approx = knn(b, a, 10, method="hnsw")
    recall = np.mean([len(set(e) & set(h)) / 10 for e, h in zip(exact, approx)])
    assert recall > 0.95


def test_mnn_feature_mismatch_errors():
    with pytest.raises(CellBridgeInputError, match="same features"):
        mnn_pairs(np.ones((3, 2)), np.ones((3, 3)), k=1)


def test_feature_pairs_identity_and_mapping():
    assert feature_pairs(["A", "B", "C"], ["C", "A"]).tolist() == [[0, 1], [2, 0]]
    mapped = feature_pairs(["CD3", "CD8a", "IgG"], ["CD8A", "CD3E"], {"CD3": "CD3E", "CD8a": "CD8A"})
    assert mapped.tolist() == [[0, 1], [1, 0]]
    with pytest.raises(CellBridgeInputError, match="No feature"):
        feature_pairs(["X"], ["Y"])


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
