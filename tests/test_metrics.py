"""Metrics on small, hand-checkable embeddings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.metrics as skm

from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge import metrics as M


def _blobs(n_per: int, n_types: int = 3, dim: int = 5, spread: float = 20.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_types), n_per)
    centers = rng.normal(size=(n_types, dim)) * spread
    return centers[labels] + rng.normal(size=(labels.size, dim)), labels


# ---------------------------------------------------------------------------- FOSCTTM


def test_foscttm_zero_for_identical_embeddings_with_a_warning():
    X, _ = _blobs(30)
    with pytest.warns(CellBridgeWarning, match="identical"):
        assert M.foscttm(X, X) == 0.0


def test_foscttm_three_point_example():
    # a = [0, 1, 3], b = [0.2, 2.5, 1.2] (1-D). Cells closer than the partner:
    # a->b: a0: none; a1 (partner at 1.5): b0 at 0.8, b2 at 0.2; a2 (partner 1.8): b1 at 0.5
    # b->a: b0: none; b1 (partner 1.5): a2 at 0.5; b2 (partner 1.8): a0 at 1.2, a1 at 0.2
    # fractions (of 3): 0, 2, 1 | 0, 1, 2  -> mean = 6 / 18 = 1/3
    a = np.array([[0.0], [1.0], [3.0]])
    b = np.array([[0.2], [2.5], [1.2]])
    assert M.foscttm(a, b) == pytest.approx(1 / 3)


def test_foscttm_chunking_does_not_change_the_result():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(57, 4)), rng.normal(size=(57, 4))
    assert M.foscttm(a, b, chunk_size=1) == pytest.approx(M.foscttm(a, b, chunk_size=1000))
    assert 0.3 < M.foscttm(a, b) < 0.7  # random pairs score about 0.5


def test_foscttm_needs_aligned_cells():
    with pytest.raises(CellBridgeInputError, match="paired"):
        M.foscttm(np.arange(6.0).reshape(3, 2), np.arange(8.0).reshape(4, 2))


# ---------------------------------------------------------------------------- omics mixing


def test_graph_connectivity_connected_and_split_types():
    rng = np.random.default_rng(0)
    one = rng.normal(size=(40, 2)) + [50, 0]  # type 1: one blob
    split = np.vstack([rng.normal(size=(20, 2)), rng.normal(size=(20, 2)) + [100, 0]])  # type 0
    labels = np.repeat([0, 1], 40)
    assert M.graph_connectivity(np.vstack([split, one]), labels) == pytest.approx((0.5 + 1.0) / 2)
    assert M.graph_connectivity(one, np.zeros(40)) == 1.0


def test_seurat_alignment_perfect_and_separated():
    x = np.arange(200, dtype=float)[:, None]  # alternating modalities on a line, k = 2
    alternating = np.arange(200) % 2
    assert M.seurat_alignment_score(x, alternating) == 1.0
    halves = (np.arange(200) >= 100).astype(int)
    # only cells 99 and 100 have one other-modality neighbour: mean same = 398 / 200
    assert M.seurat_alignment_score(x, halves) == pytest.approx((2 - 398 / 200) * 2 / 2)
    far = x + 1000 * halves[:, None]  # no other-modality neighbour at all
    assert M.seurat_alignment_score(far, halves) == 0.0


def test_seurat_alignment_hand_computed_blocks():
    # 240 cells on a line in blocks aaabbb..., k = round(2.4) = 2 neighbours.
    # Per block of 6: 4 edge cells with 1 same-modality neighbour, 2 middle cells with 2;
    # the two ends of the line have 2 instead of 1 -> mean = (40 * 8 + 2) / 240 = 322 / 240.
    x = np.arange(240, dtype=float)[:, None]
    modality = (np.arange(240) // 3) % 2
    expected = (2 - 322 / 240) * 2 / (2 * 1)
    assert M.seurat_alignment_score(x, modality) == pytest.approx(expected)


def test_modality_asw_identical_and_separated():
    X, labels = _blobs(50)
    same = M.modality_asw(np.vstack([X, X]), np.tile(labels, 2), np.repeat([0, 1], X.shape[0]))
    # a duplicated point: a(i) = S/(n-1), b(i) = S/n -> s = -1/n, score 1 - 1/n with n = 50
    assert same == pytest.approx(1 - 1 / 50)
    far = M.modality_asw(np.vstack([X, X + 1e4]), np.tile(labels, 2), np.repeat([0, 1], X.shape[0]))
    assert far < 0.01


def test_modality_asw_skips_types_seen_in_one_modality():
    X, labels = _blobs(50)
    modality = np.repeat([0, 1], X.shape[0])
    base = M.modality_asw(np.vstack([X, X]), np.tile(labels, 2), modality)
    extra = np.full((10, X.shape[1]), 500.0) + np.arange(10)[:, None]
    with_extra = M.modality_asw(
        np.vstack([X, X, extra]), np.concatenate([labels, labels, np.full(10, 9)]),
        np.concatenate([modality, np.zeros(10, int)]),
    )
    assert with_extra == pytest.approx(base)


def test_neighbourhood_overlap():
    X, _ = _blobs(40)
    rng = np.random.default_rng(2)
    assert M.neighbourhood_overlap(X, X + 1e-3 * rng.normal(size=X.shape)) == 1.0
    assert M.neighbourhood_overlap(X, X + 1e4) == 0.0


# ---------------------------------------------------------------------------- biology conservation


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # x = 0, 1, 3, 7, 12; k = round(0.4 * 5) = 2 neighbours.
        # A B A B A: hits [0,1] (AP .5), [0,0], [0,1] (.5), [0,0], [0,1] (.5) -> 1.5 / 5
        (["A", "B", "A", "B", "A"], 0.3),
        # A A A B A: [1,1] (1), [1,1] (1), [1,1] (1), [0,0] (0), [0,1] (.5) -> 3.5 / 5
        (["A", "A", "A", "B", "A"], 0.7),
    ],
)
def test_mean_average_precision_by_hand(labels, expected):
    x = np.array([0.0, 1.0, 3.0, 7.0, 12.0])[:, None]
    assert M.mean_average_precision(x, np.array(labels), neighbor_frac=0.4) == pytest.approx(expected)


def test_cell_type_asw_by_hand():
    # x = 0, 1 (A) and 10, 11 (B): s = 9.5/10.5 and 8.5/9.5 for each pair (symmetric)
    x = np.array([0.0, 1.0, 10.0, 11.0])[:, None]
    s = (9.5 / 10.5 + 8.5 / 9.5) / 2
    assert M.cell_type_asw(x, ["A", "A", "B", "B"]) == pytest.approx((s + 1) / 2)


def test_leiden_nmi_recovers_separated_types():
    X, labels = _blobs(40)
    assert M.leiden_nmi(X, labels, resolutions=(0.1, 0.5, 1.0)) == pytest.approx(1.0)


def test_transfer_accuracy():
    X, labels = _blobs(30)
    Y, _ = _blobs(30, seed=0)
    assert M.transfer_accuracy(X, labels, Y + 0.1, labels) == 1.0
    wrong = (labels + 1) % 3
    assert M.transfer_accuracy(X, labels, Y, wrong) == 0.0


@pytest.mark.filterwarnings("ignore:`emb_a` and `emb_b` are identical")
def test_transfer_accuracy_labels_of_different_types_match_as_values():
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    names = ["t", "t", "b", "b"]
    acc = M.transfer_accuracy(x, np.array(names, dtype=object), x, names, k=1)
    assert acc == 1.0


def test_transfer_accuracy_shares_votes_among_tied_duplicates():
    # three copies of one cell (labels a, a, b) and one far cell (c); k=2 from the copies' point:
    # no cell is strictly closer, so the 3 tied copies share the 2 votes: a 4/3, b 2/3 -> a
    train = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [9.0, 9.0]])
    test = np.array([[0.0, 0.0]])
    for order in ([0, 1, 2, 3], [2, 0, 1, 3], [2, 3, 1, 0]):
        labels = np.array(["a", "a", "b", "c"])[order]
        assert M.transfer_accuracy(train[order], labels, test, ["a"], k=2) == 1.0
        assert M.transfer_accuracy(train[order], labels, test, ["b"], k=2) == 0.0


def test_transfer_accuracy_does_not_depend_on_cell_order_with_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 5))
    train = base[rng.integers(0, 20, size=200)]  # many exact duplicates
    labels = rng.integers(0, 4, size=200)
    test, truth = rng.normal(size=(50, 5)), rng.integers(0, 4, size=50)
    perm = rng.permutation(200)
    acc = M.transfer_accuracy(train, labels, test, truth)
    assert acc == M.transfer_accuracy(train[perm], labels[perm], test, truth)
    # without ties it is scikit-learn's 5-NN classifier
    from sklearn.neighbors import KNeighborsClassifier
    distinct = rng.normal(size=(200, 5))
    expected = np.mean(KNeighborsClassifier(5).fit(distinct, labels).predict(test) == truth)
    assert M.transfer_accuracy(distinct, labels, test, truth) == pytest.approx(expected)


# ---------------------------------------------------------------------------- entry point


def test_integration_metrics_paired_well_mixed():
    X, labels = _blobs(60)
    rng = np.random.default_rng(3)
    out = M.integration_metrics(X, X + 0.01 * rng.normal(size=X.shape), labels, labels, paired=True)
    expected_keys = {
        "graph_connectivity", "seurat_alignment_score", "modality_asw", "neighbourhood_overlap",
        "omics_mixing", "map", "cell_type_asw", "nmi", "biology_conservation",
        "transfer_accuracy_a_to_b", "transfer_accuracy_b_to_a", "transfer_accuracy", "foscttm",
    }
    assert set(out) == expected_keys
    assert out["foscttm"] == 0.0
    assert out["neighbourhood_overlap"] == 1.0
    assert out["transfer_accuracy"] == 1.0
    assert out["map"] == 1.0
    keys = ("graph_connectivity", "seurat_alignment_score", "modality_asw", "neighbourhood_overlap")
    mixing = [out[k] for k in keys]
    assert out["omics_mixing"] == pytest.approx(np.mean(mixing))
    biology = [out["map"], out["cell_type_asw"], out["nmi"]]
    assert out["biology_conservation"] == pytest.approx(np.mean(biology))


def test_integration_metrics_unpaired_separated_modalities():
    X, labels = _blobs(40)
    Y, labels_b = _blobs(30, seed=0)
    out = M.integration_metrics(X, Y + 1e4, labels, labels_b, paired=False)
    assert np.isnan(out["foscttm"]) and np.isnan(out["neighbourhood_overlap"])
    assert out["seurat_alignment_score"] == 0.0
    assert out["omics_mixing"] == pytest.approx(
        np.mean([out["graph_connectivity"], out["seurat_alignment_score"], out["modality_asw"]])
    )
    assert out["omics_mixing"] < 0.6


@pytest.mark.filterwarnings("ignore:`emb_a` and `emb_b` are identical")
def test_integration_metrics_input_errors():
    X, labels = _blobs(10)
    with pytest.raises(CellBridgeInputError, match="dimensions"):
        M.integration_metrics(X, X[:, :2], labels, labels)
    with pytest.raises(CellBridgeInputError, match="labels_b"):
        M.integration_metrics(X, X, labels, labels[:-1])
    bad = labels.astype(object)
    bad[0] = None
    with pytest.raises(CellBridgeInputError, match="missing"):
        M.integration_metrics(X, X, bad, labels)


# ---------------------------------------------------------------------------- clustering metrics


def test_clustering_metrics_match_sklearn_and_ignore_label_names():
    X, truth = _blobs(30)
    rng = np.random.default_rng(4)
    pred = truth.copy()
    pred[rng.choice(pred.size, 15, replace=False)] = rng.integers(0, 3, 15)
    out = M.clustering_metrics(pred, truth, X)
    assert out["nmi"] == pytest.approx(skm.normalized_mutual_info_score(truth, pred))
    assert out["ari"] == pytest.approx(skm.adjusted_rand_score(truth, pred))
    assert out["ami"] == pytest.approx(skm.adjusted_mutual_info_score(truth, pred))
    assert out["fmi"] == pytest.approx(skm.fowlkes_mallows_score(truth, pred))
    assert out["v_measure"] == pytest.approx(skm.v_measure_score(truth, pred))
    assert out["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(X, pred))
    assert out["silhouette"] == pytest.approx(skm.silhouette_score(X, pred))
    renamed = np.array(["c", "a", "b"], dtype=object)[pred]  # a permutation of the cluster names
    assert M.clustering_metrics(renamed, truth, X) == pytest.approx(out)


def test_clustering_metrics_perfect_and_partial_inputs():
    _, truth = _blobs(10)
    out = M.clustering_metrics((truth + 1) % 3, truth)
    assert out["ari"] == 1.0 and out["homogeneity"] == 1.0 and out["completeness"] == 1.0
    assert "silhouette" not in out
    with pytest.raises(CellBridgeInputError, match="labels_true"):
        M.clustering_metrics(truth)


def test_clustering_metrics_single_cluster_gives_nan_with_warning():
    X, _ = _blobs(10)
    with pytest.warns(CellBridgeWarning, match="cluster"):
        out = M.clustering_metrics(np.zeros(X.shape[0]), X=X)
    assert np.isnan(out["silhouette"]) and np.isnan(out["davies_bouldin"])


def test_clustering_metrics_subsampled_silhouette_is_seeded():
    X, truth = _blobs(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = M.clustering_metrics(truth, X=X, silhouette_max_cells=120, seed=1)
        b = M.clustering_metrics(truth, X=X, silhouette_max_cells=120, seed=1)
    assert a["silhouette"] == b["silhouette"]
    assert a["silhouette"] == pytest.approx(skm.silhouette_score(X, truth), abs=0.05)


def test_precomputed_neighbours_give_the_same_scores():
    from cellbridge.neighbors import graph_from_neighbors, knn_indices

    X, labels = _blobs(40)
    dist, nn = knn_indices(X, 30)
    graph = graph_from_neighbors(dist[:, :15], nn[:, :15])
    assert M.graph_connectivity(X, labels, graph=graph) == M.graph_connectivity(X, labels)
    assert M.leiden_nmi(X, labels, graph=graph) == M.leiden_nmi(X, labels)
    assert M.mean_average_precision(X, labels, neighbor_frac=0.2, neighbors=nn) == \
        M.mean_average_precision(X, labels, neighbor_frac=0.2)
    a, b = X[:60], X[60:] + 0.1
    _, joint = knn_indices(np.vstack([a, b]), 30)
    assert M.neighbourhood_overlap(a, b, k=5, neighbors=joint) == M.neighbourhood_overlap(a, b, k=5)


def test_map_neighbors():
    assert M.map_neighbors(1000) == 10 and M.map_neighbors(1000, 0.05) == 50
    assert M.map_neighbors(20) == 1  # at least one neighbour
    assert M.map_neighbors(3, 1.0) == 2  # at most cells - 1


def test_integration_metrics_equal_the_metrics_computed_one_by_one():
    """The shared neighbour search of integration_metrics changes no value."""
    X, labels = _blobs(50, spread=3.0)
    rng = np.random.default_rng(4)
    Y = X + rng.normal(size=X.shape)
    out = M.integration_metrics(X, Y, labels, labels, paired=True, seed=1)
    joint, both = np.vstack([X, Y]), np.concatenate([labels, labels])
    modality = np.repeat([0, 1], len(X))
    assert out["graph_connectivity"] == M.graph_connectivity(joint, both)
    assert out["seurat_alignment_score"] == M.seurat_alignment_score(joint, modality, seed=1)
    assert out["modality_asw"] == M.modality_asw(joint, both, modality, seed=1)
    assert out["neighbourhood_overlap"] == M.neighbourhood_overlap(X, Y)
    assert out["map"] == M.mean_average_precision(joint, both)
    assert out["cell_type_asw"] == M.cell_type_asw(joint, both, seed=1)
    assert out["nmi"] == M.leiden_nmi(joint, both, seed=1)
    assert out["foscttm"] == M.foscttm(X, Y)


# ---------------------------------------------------------------------------- AnnData / MuData inputs


def _annotated(n_per: int = 20, seed: int = 0):
    """Two modalities of the same 3 x n_per cells (rows aligned) as AnnData with obsm["X_emb"]."""
    import anndata as ad
    import pandas as pd

    X, labels = _blobs(n_per, seed=seed)
    rng = np.random.default_rng(seed + 1)
    names = [f"c{i}" for i in range(X.shape[0])]
    out = []
    for mod, emb in (("rna", X), ("adt", X + rng.normal(scale=0.5, size=X.shape))):
        a = ad.AnnData(np.zeros((X.shape[0], 1), dtype=np.float32),
                       obs=pd.DataFrame({"cell_type": labels.astype(str), "modality": mod}, index=names),
                       var=pd.DataFrame(index=[f"{mod}_feature"]))
        a.obsm["X_emb"] = emb
        out.append(a)
    return out


def test_metrics_accept_anndata_and_mudata_like_scanpy():
    import anndata as ad
    import mudata as md

    a, b = _annotated()
    za, zb = a.obsm["X_emb"], b.obsm["X_emb"]
    la = a.obs["cell_type"].to_numpy()
    assert M.foscttm(a, b, use_rep="X_emb") == M.foscttm(za, zb)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": a, "adt": b})
    assert M.foscttm(mdata, use_rep="X_emb") == M.foscttm(za, zb)
    assert M.neighbourhood_overlap(mdata, use_rep="X_emb", k=5) == M.neighbourhood_overlap(za, zb, k=5)
    assert M.transfer_accuracy(a, test_emb=b, use_rep="X_emb", label_key="cell_type") == \
        M.transfer_accuracy(za, la, zb, la)
    assert M.mean_average_precision(a, use_rep="X_emb", label_key="cell_type") == M.mean_average_precision(za, la)
    assert M.cell_type_asw(a, use_rep="X_emb", label_key="cell_type") == M.cell_type_asw(za, la)
    assert M.graph_connectivity(a, use_rep="X_emb", label_key="cell_type") == M.graph_connectivity(za, la)
    # a MuData without a joint obsm stacks its modalities, with obs["modality"] for the mixing scores
    stacked, modality = np.vstack([za, zb]), np.repeat(["rna", "adt"], len(za))
    assert M.seurat_alignment_score(mdata, use_rep="X_emb") == M.seurat_alignment_score(stacked, modality)
    assert M.modality_asw(mdata, use_rep="X_emb", label_key="cell_type") == \
        M.modality_asw(stacked, np.concatenate([la, la]), modality)
    joint = ad.concat([a, b], index_unique="-")
    assert M.leiden_nmi(joint, use_rep="X_emb", label_key="cell_type", resolutions=(0.5,)) == \
        M.leiden_nmi(stacked, np.concatenate([la, la]), resolutions=(0.5,))
    full = M.integration_metrics(mdata, use_rep="X_emb", label_key="cell_type", paired=True)
    assert full == M.integration_metrics(za, zb, la, la, paired=True)
    a.obs["cluster"] = la
    assert M.clustering_metrics(a, cluster_key="cluster", label_key="cell_type", use_rep="X_emb") == \
        M.clustering_metrics(la, la, za)


def test_paired_anndata_are_aligned_by_cell_name():
    a, b = _annotated()
    shuffled = b[np.random.default_rng(0).permutation(b.n_obs)].copy()
    assert M.foscttm(a, shuffled, use_rep="X_emb") == M.foscttm(a.obsm["X_emb"], b.obsm["X_emb"])
    other = shuffled.copy()
    other.obs_names = [f"x{i}" for i in range(other.n_obs)]
    with pytest.raises(CellBridgeInputError, match="same cells"):
        M.foscttm(a, other, use_rep="X_emb")


def test_annotated_input_errors_name_the_fix():
    a, _ = _annotated()
    with pytest.raises(CellBridgeInputError, match=r"pass use_rep=.*available: \['X_emb'\]"):
        M.cell_type_asw(a, label_key="cell_type")
    with pytest.raises(CellBridgeInputError, match="no obsm\\['X_pca'\\]"):
        M.cell_type_asw(a, use_rep="X_pca", label_key="cell_type")
    with pytest.raises(CellBridgeInputError, match="no obs column 'celltype'"):
        M.cell_type_asw(a, use_rep="X_emb", label_key="celltype")
    with pytest.raises(CellBridgeInputError, match="label_key="):
        M.cell_type_asw(a, use_rep="X_emb")
    with pytest.raises(CellBridgeInputError, match="applies to an AnnData"):
        M.cell_type_asw(a.obsm["X_emb"], a.obs["cell_type"], use_rep="X_emb")
    with pytest.raises(CellBridgeInputError, match="emb_b"):
        M.foscttm(a, use_rep="X_emb")


def test_collapsed_or_one_sided_collapse_is_refused():
    X, labels = _blobs(20)
    with pytest.raises(CellBridgeInputError, match="`emb_b` has collapsed"):
        M.foscttm(X, np.zeros_like(X))
    with pytest.raises(CellBridgeInputError, match="collapsed"):
        M.cell_type_asw(np.full_like(X, 7.0), labels)
    with pytest.raises(CellBridgeInputError, match="collapsed"):
        M.clustering_metrics(labels, X=np.ones_like(X))
