"""Gene-set enrichment of marker lists (cellbridge.tl._enrichment): a planted set on the simulation,
the hypergeometric p-values against decoupler's query_set, GMT reading and bad input."""

from __future__ import annotations

import gzip

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.tl._enrichment import read_gmt


@pytest.fixture(scope="module")
def markers():
    """Full marker rankings of the simulation's 3 cell types (t-test) and a GMT-like dict with a set
    planted from type_0's top markers among random sets."""
    rna = cb.datasets.simulate_multiome(240, n_types=3, n_genes=120, seed=0)["rna"]
    table = cb.tl.marker_genes(rna, groupby="cell_type", n_genes=None, method="t-test")
    top0 = table[table["group"] == "type_0"].sort_values("rank")["gene"].head(12).tolist()
    rng = np.random.default_rng(1)
    sets = {"PLANTED_TYPE_0": top0}
    sets.update({f"RANDOM_{i}": rng.choice(rna.var_names, 15, replace=False).tolist() for i in range(6)})
    return {"rna": rna, "table": table, "sets": sets}


def _write_gmt(path, sets, opener=open):
    with opener(path, "wt") as fh:
        for name, genes in sets.items():
            fh.write("\t".join([name, "description with spaces", *genes]) + "\n\n")  # blank lines are skipped


def test_public_api():
    assert cb.tl.gene_set_enrichment is cb.tl._enrichment.gene_set_enrichment


def test_planted_set_is_enriched_in_its_group_only(markers, tmp_path):
    path = tmp_path / "sets.gmt.gz"
    _write_gmt(path, markers["sets"], gzip.open)
    res = cb.tl.gene_set_enrichment(markers["table"], gene_sets=path, n_genes=20)
    assert list(res.columns) == cb.tl._enrichment.ENRICHMENT_COLUMNS
    best = res.groupby("group").head(1).set_index("group")
    assert best.loc["type_0", "gene_set"] == "PLANTED_TYPE_0" and best.loc["type_0", "fdr"] < 1e-6
    planted = res[res["gene_set"] == "PLANTED_TYPE_0"].set_index("group")
    assert planted.loc["type_0", "overlap"] == 12 and planted.loc["type_0", "genes"].count(";") == 11
    assert (planted.drop(index="type_0")["fdr"] > 0.05).all()
    row = planted.loc["type_0"]  # by hand: 12 of the 20 markers in a 12-gene set among 120 genes
    assert row["n_universe"] == 120 and row["expected"] == pytest.approx(20 * 12 / 120)
    assert row["pvalue"] == pytest.approx(stats.hypergeom.sf(11, 120, 12, 20))


def test_pvalues_match_decoupler_query_set(markers):
    dc = pytest.importorskip("decoupler")  # installed in CI (the `test` extra)
    table, sets = markers["table"], markers["sets"]
    res = cb.tl.gene_set_enrichment(table, gene_sets=sets, n_genes=20)
    net = pd.DataFrame([(k, g) for k, v in sets.items() for g in v], columns=["source", "target"])
    for group in ("type_0", "type_1"):
        genes = table[table["group"] == group].sort_values("rank")["gene"].head(20).tolist()
        theirs = dc.mt.query_set(features=genes, net=net, n_bg=120, tmin=5).set_index("source")
        ours = res[res["group"] == group].set_index("gene_set")
        np.testing.assert_allclose(ours.loc[theirs.index, "pvalue"], theirs["pval"], rtol=1e-9)
        np.testing.assert_allclose(ours.loc[theirs.index, "fdr"], theirs["padj"], rtol=1e-9)


def test_markers_from_uns_and_the_table_stored_back(markers, tmp_path):
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": markers["rna"].copy()})
    stored = cb.tl.marker_genes(mdata, groupby="cell_type", n_genes=None, method="t-test", key_added="marker_genes")
    res = cb.tl.gene_set_enrichment(mdata, gene_sets=markers["sets"], n_genes=20, key_added="enrichment")
    pd.testing.assert_frame_equal(res, cb.tl.gene_set_enrichment(stored, gene_sets=markers["sets"], n_genes=20))
    with md.set_options(pull_on_update=False):
        mdata.write(tmp_path / "r.h5mu")
        back = md.read_h5mu(tmp_path / "r.h5mu")
    pd.testing.assert_frame_equal(back.uns["enrichment"], res, check_dtype=False)
    again = cb.tl.gene_set_enrichment(back, gene_sets=markers["sets"], n_genes=20)  # universe read from uns
    pd.testing.assert_frame_equal(again, res, check_dtype=False)


def test_dict_lists_need_a_universe(markers):
    lists = {"a": markers["sets"]["PLANTED_TYPE_0"][:8]}
    with pytest.raises(CellBridgeInputError, match="universe="):
        cb.tl.gene_set_enrichment(lists, gene_sets=markers["sets"])
    res = cb.tl.gene_set_enrichment(lists, gene_sets=markers["sets"], universe=markers["rna"].var_names)
    assert res.iloc[0]["gene_set"] == "PLANTED_TYPE_0" and res.iloc[0]["overlap"] == 8
    with pytest.raises(CellBridgeInputError, match="not in the universe"):
        cb.tl.gene_set_enrichment({"a": ["NOT_A_GENE"]}, gene_sets=markers["sets"], universe=markers["rna"].var_names)


def test_read_gmt_and_bad_gene_sets(markers, tmp_path):
    path = tmp_path / "s.gmt"
    _write_gmt(path, {"A": ["x", "y", "x"], "B": ["z"]})
    assert read_gmt(path) == {"A": ["x", "y"], "B": ["z"]}
    empty = tmp_path / "empty.gmt"
    empty.write_text("\n\n")
    with pytest.raises(CellBridgeInputError, match="holds no gene set"):
        cb.tl.gene_set_enrichment(markers["table"], gene_sets=empty)
    spaces = tmp_path / "spaces.gmt"
    spaces.write_text("A description x y z\n")
    with pytest.raises(CellBridgeInputError, match="line 1 is not GMT"):
        read_gmt(spaces)
    with pytest.raises(CellBridgeInputError, match="does not exist"):
        cb.tl.gene_set_enrichment(markers["table"], gene_sets=tmp_path / "missing.gmt")
    other_species = {k: [g.lower() for g in v] for k, v in markers["sets"].items()}
    with pytest.raises(CellBridgeInputError, match="No gene set has between 5 and 500 genes.*species"):
        cb.tl.gene_set_enrichment(markers["table"], gene_sets=other_species)
    with pytest.raises(CellBridgeInputError, match=r"lacks columns \['target'\]"):
        cb.tl.gene_set_enrichment(markers["table"], gene_sets=pd.DataFrame({"source": ["A"], "gene": ["x"]}))
    with pytest.raises(CellBridgeInputError, match=r"marker table lacks columns \['gene'\]"):
        cb.tl.gene_set_enrichment(markers["table"].drop(columns="gene"), gene_sets=markers["sets"])
    with pytest.raises(CellBridgeInputError, match="no 'marker_genes'"):
        cb.tl.gene_set_enrichment(ad.AnnData(np.zeros((2, 2))), gene_sets=markers["sets"])
    with pytest.raises(CellBridgeInputError, match="key_added"):
        cb.tl.gene_set_enrichment(markers["table"], gene_sets=markers["sets"], key_added="x")
