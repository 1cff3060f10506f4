import numpy as np
import pytest

from cellbridge import CellBridgeInputError
from cellbridge.pairs import PartnerSampler, feature_pairs, knn, mnn_pairs, recall_at_k


def test_mnn_pairs_hand_example():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[0.1, 1.0], [1.0, 0.1]])
    pairs = mnn_pairs(a, b, k=1, method="exact")
    # a0 <-> b1 and a1 <-> b0 are mutual; a2 points to one of them but is nobody's nearest.
    assert pairs.tolist() == [[0, 1], [1, 0]]


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(5, 20)) * 5
    return centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 20))


def test_recall_at_k_hand_example():
    exact = np.array([[0, 1], [2, 3]])
    assert recall_at_k(exact, np.array([[1, 5], [3, 2]])) == pytest.approx(0.75)  # 1/2 and 2/2


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_knn_agrees_with_exact_on_clustered_data(method):
    a, b = _clustered(300, 1), _clustered(2500, 2)  # ivf: 2 lists of ~1,250 rows, both searched
    exact = knn(b, a, 10, method="exact")
    assert recall_at_k(exact, knn(b, a, 10, method=method)) > 0.95


def test_ivf_recall_grows_with_nprobe_and_is_seeded():
    a, b = _clustered(500, 1), _clustered(20_000, 2)  # 20 lists
    exact = knn(b, a, 10, method="exact")
    recalls = [recall_at_k(exact, knn(b, a, 10, method="ivf", nprobe=p)) for p in (1, 4, 20)]
    assert recalls[0] < recalls[1] <= recalls[2] == 1.0  # all lists searched: exact
    first, second = (knn(b, a, 10, method="ivf", nprobe=2, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first, second)


def test_ivf_pads_missing_neighbours_and_mnn_drops_them():
    a, b = _clustered(2_000, 1), _clustered(30, 2)  # 2 lists of ~1,000 rows of a, one searched
    found = knn(a, b, 1_500, method="ivf", nprobe=1)
    assert (found == -1).any() and (found[:, 0] >= 0).all()
    pairs = mnn_pairs(a, b, k=1_500, method="ivf", nprobe=1)
    # every row of a has all 30 rows of b as neighbours, so the pairs are the found entries
    expected = sorted((int(i), j) for j in range(len(b)) for i in found[j] if i >= 0)
    assert pairs.tolist() == [list(p) for p in expected]


def test_auto_uses_the_chosen_ann_above_the_exact_limit(monkeypatch):
    import cellbridge.pairs as pairs

    monkeypatch.setattr(pairs, "EXACT_KNN_MAX_CELLS", 100)
    a, b = _clustered(200, 1), _clustered(1_500, 2)
    np.testing.assert_array_equal(knn(b, a, 5, ann="ivf", nprobe=1), knn(b, a, 5, method="ivf", nprobe=1))
    with pytest.raises(CellBridgeInputError, match="knn method"):
        knn(b, a, 5, ann="annoy")


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
