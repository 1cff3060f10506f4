"""Protein -> gene mapping and CLR normalisation."""

from __future__ import annotations

import re
import warnings
from importlib import resources

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cellbridge as cb
from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge.pp.protein import builtin_protein_table, clr, is_isotype_control, protein_to_gene

pytestmark = pytest.mark.filterwarnings("ignore::anndata.OldFormatWarning")  # old shared .h5ad files


def _quiet(proteins, **kwargs) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellBridgeWarning)
        return protein_to_gene(proteins, **kwargs)


# ---------------------------------------------------------------------------- built-in table


def test_builtin_table_ships_with_the_package():
    path = resources.files("cellbridge").joinpath("data/protein_gene_map.tsv")
    table = pd.read_csv(path, sep="\t", dtype=str)
    assert list(table.columns) == ["protein", "gene"]
    assert len(table) >= 300
    assert table["gene"].str.fullmatch(r"[A-Z0-9\-]+").all()  # HGNC-style symbols
    assert cb.pp.protein_to_gene is protein_to_gene and cb.pp.clr is clr


def test_builtin_table_keys_do_not_conflict():
    from cellbridge.pp.protein import _key, _strip_affixes

    table = builtin_protein_table()
    keys = table["protein"].map(lambda p: _key(_strip_affixes(p)))
    assert keys.is_unique


@pytest.mark.parametrize(
    ("name", "gene"),
    [
        ("CD8a", "CD8A"), ("CD8", "CD8A"), ("HLA-DR", "HLA-DRA"), ("HLA.DR", "HLA-DRA"),
        ("hla_dr", "HLA-DRA"), ("CD45RA", "PTPRC"), ("CD45RO", "PTPRC"), ("CD45", "PTPRC"),
        ("CD16", "FCGR3A"), ("CD56", "NCAM1"), ("CD3", "CD3E"), ("CD11c", "ITGAX"),
        ("CD11b", "ITGAM"), ("IgD", "IGHD"), ("IgM", "IGHM"), ("KLRG1", "KLRG1"),
        ("FceRI", "FCER1A"), ("CD269", "TNFRSF17"), ("CD3_TotalSeqB", "CD3E"),
        ("CD4-ADT", "CD4"), ("ADT_CD19", "CD19"), ("CD14 (TotalSeq-C)", "CD14"),
        ("CD4_RPA-T4", "CD4"), ("TCR α/β", "TRAC"), ("TCR.Va7.2", "TRAV1-2"),
        ("CD3.1", "CD3E"), ("CD31", "PECAM1"), ("B220 (CD45R)", "PTPRC"), ("PTPRC", "PTPRC"),
    ],
)
def test_tolerant_matching(name, gene):
    assert _quiet([name]).iloc[0] == gene


def test_family_prefix_is_not_a_match():
    assert pd.isna(_quiet(["TCR Vb99"]).iloc[0])  # not silently mapped to the TCR a/b chain


@pytest.mark.parametrize(
    "name",
    ["IgG1.K.Isotype.Control", "Mouse IgG1, κ isotype Ctrl", "IgG2a", "Rat_IgG2b_k", "isotype_ctrl"],
)
def test_isotype_controls_are_recognised(name):
    assert is_isotype_control(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CellBridgeWarning)  # isotypes are not "unmapped"
        assert pd.isna(protein_to_gene([name]).iloc[0])


@pytest.mark.parametrize("name", ["IgD", "IgM", "CD3", "HLA-DR"])
def test_real_markers_are_not_isotypes(name):
    assert not is_isotype_control(name)


# ---------------------------------------------------------------------------- real panels


def test_teaseq_panel_maps_every_non_isotype(shared_data):
    adt = ad.read_h5ad(shared_data / "teaseq_pbmc" / "adt.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CellBridgeWarning)
        genes = protein_to_gene(adt)
    assert list(genes.index) == list(adt.var_names)
    isotype = np.array([is_isotype_control(p) for p in genes.index])
    assert isotype.sum() == 1
    assert genes[~isotype].notna().all()
    assert genes["CD8a"] == "CD8A" and genes["HLA.DR"] == "HLA-DRA" and genes["TCR.g.d"] == "TRDC"


def test_bmmc_cite_panel_high_mapping_rate(shared_data):
    adt = ad.read_h5ad(shared_data / "bmmc_cite_small" / "adt.h5ad")
    genes = _quiet(adt)
    assert genes.notna().mean() >= 0.95
    assert genes["HLA-A-B-C"] == "HLA-A" and genes["FceRIa"] == "FCER1A"
    assert genes["CD158e1"] == "KIR3DL1"


def test_agreement_with_public_antigen_table(shared_data):
    """Check (not copy) the curated table against the public antigen -> gene table."""
    ref = pd.read_csv(shared_data / "protein_gene_map" / "antigen_to_gene.tsv", sep="\t", dtype=str)
    ours = _quiet(list(ref["Antigen"]))
    both = ours.notna().to_numpy() & ref["HGNC_SYMBOL"].notna().to_numpy()
    listed = [
        gene in re.split(r",\s*", symbols)
        for gene, symbols in zip(ours.to_numpy()[both], ref["HGNC_SYMBOL"].to_numpy()[both])
    ]
    assert both.mean() >= 0.9  # coverage of the public antigens
    assert np.mean(listed) >= 0.9  # our gene is the/one of the public table's genes


# ---------------------------------------------------------------------------- user tables, warnings


def test_user_table_overrides_builtin(tmp_path):
    assert _quiet(["CD3"], table={"CD3": "CD3D"}).iloc[0] == "CD3D"
    frame = pd.DataFrame({"protein": ["MyAntigen", "CD4"], "gene": ["GENE1", ""]})
    out = _quiet(["my-antigen", "CD4", "CD8"], table=frame)
    assert out.iloc[0] == "GENE1" and pd.isna(out.iloc[1]) and out.iloc[2] == "CD8A"
    path = tmp_path / "map.tsv"
    frame.to_csv(path, sep="\t", index=False)
    assert _quiet(["MyAntigen", "CD8"], table=path, use_builtin=False).tolist()[0] == "GENE1"
    assert pd.isna(_quiet(["CD8"], table=str(path), use_builtin=False).iloc[0])


def test_user_table_errors(tmp_path):
    with pytest.raises(CellBridgeInputError, match="protein"):
        protein_to_gene(["CD3"], table=pd.DataFrame({"antigen": ["CD3"], "symbol": ["CD3E"]}))
    with pytest.raises(CellBridgeInputError, match="does not exist"):
        protein_to_gene(["CD3"], table=tmp_path / "missing.tsv")
    with pytest.raises(CellBridgeInputError, match="list"):
        protein_to_gene("CD3")


def test_unmapped_proteins_are_warned_by_name():
    with pytest.warns(CellBridgeWarning, match=r"\['NotAProtein'\]"):
        out = protein_to_gene(["CD4", "NotAProtein", "IgG1.K.Isotype.Control"])
    assert out.tolist()[0] == "CD4" and out.isna().tolist() == [False, True, True]


# ---------------------------------------------------------------------------- CLR


def _counts():
    return np.array([[0.0, 3.0, 1.0], [5.0, 0.0, 2.0]])


def test_clr_by_hand():
    X = _counts()
    g0 = np.exp((np.log(4.0) + np.log(2.0)) / 3)  # log1p of 0, 3, 1
    expected_row0 = np.log1p(np.array([0.0, 3.0, 1.0]) / g0)
    out = clr(X)
    assert np.allclose(out[0], expected_row0)
    g_col2 = np.exp((np.log(2.0) + np.log(3.0)) / 2)  # feature 2 across cells: 1, 2
    assert np.allclose(clr(X, axis="features")[:, 2], np.log1p(np.array([1.0, 2.0]) / g_col2))


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", ["cells", "features"])
def test_clr_sparse_matches_dense(fmt, axis):
    X = _counts()
    out = clr(sp.csr_matrix(X).asformat(fmt), axis=axis)
    assert sp.issparse(out) and out.format == fmt
    assert np.allclose(out.toarray(), clr(X, axis=axis))


def test_clr_anndata_copy_and_inplace():
    adata = ad.AnnData(_counts().astype(np.float32), layers={"counts": _counts()})
    before = adata.X.copy()
    new = clr(adata, copy=True)
    assert np.array_equal(adata.X, before)  # input untouched
    assert np.allclose(new.X, clr(_counts()), atol=1e-6) and new.X.dtype == np.float32
    assert clr(adata, layer="counts") is None
    assert np.allclose(adata.layers["counts"], clr(_counts()))
    assert np.array_equal(adata.X, before)


def test_clr_errors():
    with pytest.raises(CellBridgeInputError, match="negative"):
        clr(np.array([[1.0, -1.0]]))
    with pytest.raises(CellBridgeInputError, match="axis"):
        clr(_counts(), axis="rows")
    with pytest.raises(CellBridgeInputError, match="layer"):
        clr(ad.AnnData(_counts()), layer="nope")
