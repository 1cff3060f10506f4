"""Marker genes from RNA, gene activity and BiCLUM's decoder, and their agreement."""

from __future__ import annotations

import warnings
from math import comb

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cellbridge._errors import CellBridgeInputError
from cellbridge.tl._markers import decoded_centroids, marker_agreement, marker_genes

GROUPS = ("A", "B", "C")
N_GENES = 60


def _planted(g: str) -> set[str]:
    i = GROUPS.index(g)
    return {f"g{j}" for j in range(5 * i, 5 * i + 5)}


def _counts(n: int, seed: int, fold: float):
    """Cells in 3 groups; genes g0-g4 up in A, g5-g9 in B, g10-g14 in C (``fold`` x)."""
    rng = np.random.default_rng(seed)
    labels = np.array(GROUPS)[np.arange(n) % 3]
    rates = np.tile(rng.gamma(2.0, 1.0, N_GENES), (n, 1))
    for i, g in enumerate(GROUPS):
        rates[labels == g, 5 * i:5 * i + 5] *= fold
    X = rng.poisson(rates).astype(np.float32)
    return ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"cluster": labels}, index=[f"c{seed}_{k}" for k in range(n)]),
                      var=pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)]))


@pytest.fixture
def pair():
    return _counts(150, 0, 6.0), _counts(120, 1, 3.0)  # RNA and gene activity (weaker markers)


# ------------------------------------------------------------------------------ rank sources
def test_rna_markers_are_the_planted_genes(pair):
    rna, _ = pair
    before = rna.X.toarray()
    m = marker_genes(rna, groupby="cluster", n_genes=5)
    assert list(m.columns) == ["group", "rank", "gene", "score", "logfoldchange", "pvalue", "pvalue_adj", "source"]
    for g in GROUPS:
        top = m[m.group == g]
        assert set(top.gene) == _planted(g)
        assert (top.logfoldchange > 1).all() and (top.pvalue_adj < 1e-5).all()
        assert list(top["rank"]) == [0, 1, 2, 3, 4]
    assert m.attrs["features"]["rna"] == list(rna.var_names)
    np.testing.assert_array_equal(rna.X.toarray(), before)  # normalised on a copy


def test_gene_activity_from_a_result_mudata(pair):
    import mudata as md

    rna, gam = pair
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # both modalities name their features by gene
        mdata = md.MuData({"rna": rna, "atac": gam})
    m = marker_genes(mdata, groupby="cluster", source="gene_activity", n_genes=5)
    assert (m.source == "gene_activity").all()
    for g in GROUPS:
        assert set(m[m.group == g].gene) == _planted(g)
    m_dict = marker_genes({"rna": rna, "gene_activity": gam}, groupby="cluster", source="gene_activity", n_genes=5)
    pd.testing.assert_frame_equal(m, m_dict)


def test_gene_activity_of_a_joint_result_keeps_the_input_gene_names(pair):
    import cellbridge as cb

    rna, gam = pair
    gam.obs_names = [f"atac{i}" for i in range(gam.n_obs)]
    mdata = cb.io.joint_mudata({"rna": rna.copy(), "gene_activity": gam.copy()},
                               sides={"rna": "rna", "gene_activity": "atac"})
    assert mdata["gene_activity"].var_names[0] == "gene_activity:g0"  # renamed: names collide with the RNA's
    m_rna = marker_genes(mdata, groupby="cluster", n_genes=None)
    m_gam = marker_genes(mdata, groupby="cluster", source="gene_activity", n_genes=None)
    assert m_gam.attrs["features"]["gene_activity"] == list(rna.var_names)  # the input names, not the prefixed
    assert set(m_gam[(m_gam.group == "A") & (m_gam["rank"] < 5)].gene) == _planted("A")
    agree = marker_agreement([m_rna, m_gam], n_genes=5)
    assert (agree["n_universe"] == N_GENES).all() and (agree["overlap"] == 5).all()


def test_already_normalised_values_used_as_given(pair):
    rna, _ = pair
    logged = rna.copy()
    logged.X = np.log1p(logged.X.toarray() / logged.X.toarray().sum(1, keepdims=True) * 1e4)
    m = marker_genes(logged, groupby="cluster", n_genes=5)
    for g in GROUPS:
        assert set(m[m.group == g].gene) == _planted(g)


# ------------------------------------------------------------------------------ agreement
def test_agreement_hand_computed():
    a = pd.DataFrame({"group": "g", "rank": [0, 1, 2], "gene": ["x1", "x2", "x3"], "source": "a"})
    b = pd.DataFrame({"group": "g", "rank": [0, 1, 2], "gene": ["x2", "x3", "x4"], "source": "b"})
    a.attrs["features"] = {"a": [f"x{i}" for i in range(10)]}
    b.attrs["features"] = {"b": [f"x{i}" for i in range(1, 11)]}  # common universe: x1..x9
    res = marker_agreement({"a": a, "b": b}, n_genes=3)
    row = res.iloc[0]
    assert (row.n_universe, row.overlap, row.n_a, row.n_b) == (9, 2, 3, 3)
    assert row.expected == pytest.approx(9 / 9)  # k^2 / N
    assert row.enrichment == pytest.approx(2.0)
    # P(overlap >= 2) for two random 3-sets of 9: [C(3,2)C(6,1) + C(3,3)] / C(9,3)
    assert row.pvalue == pytest.approx((comb(3, 2) * comb(6, 1) + 1) / comb(9, 3))
    assert row.jaccard == pytest.approx(2 / 4)


def test_agreement_planted_vs_random(pair):
    rna, gam = pair
    m_rna = marker_genes(rna, groupby="cluster", n_genes=None)
    m_gam = marker_genes(gam, groupby="cluster", source="gene_activity", n_genes=None)
    res = marker_agreement([m_rna, m_gam], n_genes=5)
    assert len(res) == 3 and (res.overlap == 5).all()
    assert res.expected.iloc[0] == pytest.approx(25 / N_GENES)
    rng = np.random.default_rng(0)
    shuffled = m_gam.assign(gene=m_gam.groupby("group").gene.transform(lambda s: rng.permutation(s.to_numpy())))
    shuffled.attrs = m_gam.attrs
    null = marker_agreement([m_rna, shuffled], n_genes=5)
    assert null.overlap.mean() < 2  # about 25/60 expected by chance


# ------------------------------------------------------------------------------ decoder
class _LinearDecoder(nn.Module):
    def __init__(self, n_features):
        super().__init__()
        self.scale = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in n_features])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in n_features])

    def decode(self, z, v, modality, features=None):
        return F.softplus(self.scale[modality]) * (z @ v.T) + self.bias[modality]


class _FakeModel:
    """Feature j of each modality points at the centroid of group j % 3 (2-D joint space)."""

    def __init__(self):
        self.module = _LinearDecoder((6, 6))
        angles = np.arange(6) % 3 * 2 * np.pi / 3
        v = np.column_stack([np.cos(angles), np.sin(angles)]) * (1 + np.arange(6)[:, None] / 10)
        self.features = {"other": pd.DataFrame(v, index=[f"p{j}" for j in range(6)]),
                         "rna": pd.DataFrame(v, index=[f"r{j}" for j in range(6)])}

    def get_feature_embeddings(self):
        return self.features

    def decode(self, z, modality="rna"):  # as BiCLUM.decode: the module's decoder at points z
        v = torch.as_tensor(self.features[modality].to_numpy(np.float32))
        with torch.no_grad():
            x = self.module.decode(torch.as_tensor(np.asarray(z, np.float32)), v, {"other": 0, "rna": 1}[modality])
        return pd.DataFrame(x.numpy(), columns=self.features[modality].index)


def test_decoder_markers_hand_checkable():
    rng = np.random.default_rng(0)
    labels = np.array(GROUPS)[np.arange(90) % 3]
    angles = np.array([GROUPS.index(g) for g in labels]) * 2 * np.pi / 3
    cells = ad.AnnData(obs=pd.DataFrame({"cluster": labels}, index=[f"c{i}" for i in range(90)]))
    cells.obsm["X_biclum"] = np.column_stack([np.cos(angles), np.sin(angles)]) + 0.05 * rng.normal(size=(90, 2))
    m = marker_genes(cells, groupby="cluster", source="decoder", model=_FakeModel(), n_genes=2)
    assert set(m.source) == {"decoder:rna", "decoder:other"}
    for i, g in enumerate(GROUPS):
        got = m[(m.group == g) & (m.source == "decoder:rna")]
        assert set(got.gene) == {f"r{i}", f"r{i + 3}"}
        assert (got.delta > 0).all()
    only_rna = marker_genes(cells, groupby="cluster", source="decoder", model=_FakeModel(), modality="rna")
    assert set(only_rna.source) == {"decoder:rna"}


def test_decoder_with_a_trained_biclum(pair):
    import cellbridge as cb

    rna, gam = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cb.BiCLUM(rna, gam, modality="atac", seed=0, n_pcs=10, k_mnn=10)
        model.train(max_epochs=2, progress=False)
    data = {"rna": rna, "atac": gam}  # no obsm: the model embeds both modalities
    m = marker_genes(data, groupby="cluster", source="decoder", model=model, n_genes=10)
    n_rna = len(model.get_feature_embeddings()["rna"])
    assert m.groupby(["source", "group"]).size().eq(10).all()
    assert set(m.attrs["features"]["decoder:rna"]) <= set(rna.var_names)
    assert len(m.attrs["features"]["decoder:rna"]) == n_rna
    # the decoder is linear in z: decoding the centroid = mean of the decoded cells
    z = model.get_latent(rna, "rna")
    centroid = decoded_centroids(model, z.mean(0, keepdims=True))["rna"].to_numpy()[0]
    per_cell = decoded_centroids(model, z)["rna"].to_numpy().mean(0)
    np.testing.assert_allclose(centroid, per_cell, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ bad inputs
def test_errors(pair):
    rna, gam = pair
    with pytest.raises(CellBridgeInputError, match="has no column 'leiden'"):
        marker_genes(rna, groupby="leiden")
    with pytest.raises(CellBridgeInputError, match="source must be one of"):
        marker_genes(rna, groupby="cluster", source="peaks")
    with pytest.raises(CellBridgeInputError, match="needs `model=`"):
        marker_genes(rna, groupby="cluster", source="decoder")
    with pytest.raises(CellBridgeInputError, match="needs a modality named"):
        marker_genes({"rna": rna, "x": gam, "y": gam}, groupby="cluster", source="gene_activity")
    with pytest.raises(CellBridgeInputError, match="has no layer 'counts'"):
        marker_genes(rna, groupby="cluster", layer="counts")
    with pytest.raises(CellBridgeInputError, match="has no 'X_biclum'"):
        marker_genes(rna, groupby="cluster", source="decoder", model=_FakeModel())
    m = marker_genes(rna, groupby="cluster", n_genes=5)
    with pytest.raises(CellBridgeInputError, match="two sources"):
        marker_agreement(m)


# ------------------------------------------------------------------------------ real data
def test_mop_snare_rna_and_gene_activity_agree(shared_data):
    import cellbridge as cb

    rna = ad.read_h5ad(shared_data / "mop_snare" / "rna.h5ad")
    atac = ad.read_h5ad(shared_data / "mop_snare" / "atac.h5ad")
    idx = np.sort(np.random.default_rng(0).choice(rna.n_obs, 1500, replace=False))
    rna, atac = rna[idx].copy(), atac[idx].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gam = cb.pp.gene_activity(atac, shared_data / "annotation" / "mm10_genes.bed")
    gam = gam[:, gam.var_names.isin(rna.var_names)].copy()
    keep = rna.obs.cell_type.map(rna.obs.cell_type.value_counts()).astype(int) >= 50
    rna, gam = rna[keep.to_numpy()].copy(), gam[keep.to_numpy()].copy()
    res = marker_agreement([marker_genes(rna, groupby="cell_type", n_genes=None),
                            marker_genes(gam, groupby="cell_type", source="gene_activity", n_genes=None)])
    # same cells, two assays: the top-50 lists overlap far above chance (k^2/N ~ 1.5)
    assert res.n_universe.iloc[0] > 1000
    assert (res.enrichment > 3).mean() >= 0.7
    assert res.enrichment.median() > 5
