"""Result tables stored in ``uns`` (cellbridge.tl._tables): the links, markers and read-out tables of a
result written to .h5mu and read back unchanged, with their attrs."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.tl._tables import check_store, store_table


def _round_trip(mdata, path):
    with md.set_options(pull_on_update=False):
        mdata.write(path)
        return md.read_h5mu(path)


def test_table_with_missing_text_bools_categories_and_attrs_round_trips(tmp_path):
    table = pd.DataFrame({"group": pd.Categorical(["a", "a", "b"]), "gene": ["G1", "G2", "G3"],
                          "peak": ["chr1:1-2", np.nan, "chr2:3-4"], "score": [0.5, np.nan, -1.0],
                          "candidate_cre": [True, False, False], "rank": [0, 1, 0]}, index=[5, 6, 7])
    table.attrs["settings"] = {"groupby": "cell_type", "skipped": [], "use_rep": None, "genes": ["G1", "G2"]}
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": ad.AnnData(np.zeros((3, 2)))})
    store_table(mdata, "readout", table)
    assert table["peak"].dtype == object and list(table.index) == [5, 6, 7]  # the caller's table untouched
    back = _round_trip(mdata, tmp_path / "r.h5mu")
    got = back.uns["readout"]
    assert got["peak"].isna().tolist() == [False, True, False] and got["peak"].iloc[0] == "chr1:1-2"
    pd.testing.assert_frame_equal(got.astype({"peak": object}), table.reset_index(drop=True), check_dtype=False)
    settings = back.uns["readout_attrs"]["settings"]
    assert settings["groupby"] == "cell_type" and settings["use_rep"] is None
    assert list(settings["genes"]) == ["G1", "G2"]


def test_links_markers_and_readout_tables_go_into_the_result(tmp_path):
    sim = cb.datasets.simulate_multiome(240, n_types=3, n_genes=80, seed=1)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": sim["rna"], "atac": sim["atac"]})
    rna, atac = mdata["rna"], mdata["atac"]  # the result's own modalities (not copies)
    links = cb.tl.gene_peak_links(rna, atac, sim["annotation"], paired=True, n_background=20,
                                  key_added="gene_peak_links")
    markers = cb.tl.marker_genes(mdata, groupby="cell_type", method="t-test", n_genes=10, key_added="marker_genes")
    readout = cb.tl.regulatory_readout(rna, atac, sim["annotation"], groupby="cell_type", n_genes=10,
                                       links=links, n_background=20, method="t-test", key_added="regulatory_readout")
    assert readout["peak"].isna().any() and readout["peak"].notna().any()  # both kinds of rows stored
    back = _round_trip(mdata, tmp_path / "result.h5mu")
    pd.testing.assert_frame_equal(back["rna"].uns["gene_peak_links"], links, check_dtype=False)
    assert back["rna"].uns["gene_peak_links_attrs"]["gene_peak_links"]["paired"]
    pd.testing.assert_frame_equal(back.uns["marker_genes"], markers, check_dtype=False)
    assert set(back.uns["marker_genes_attrs"]["features"]["rna"]) == set(rna.var_names)
    got = back["rna"].uns["regulatory_readout"]
    pd.testing.assert_frame_equal(got.astype({"peak": object}), readout, check_dtype=False)


def test_store_needs_an_annotated_object_and_a_key():
    with pytest.raises(CellBridgeInputError, match="uns"):
        check_store({"rna": None}, "x")
    with pytest.raises(CellBridgeInputError, match="non-empty string"):
        check_store(ad.AnnData(np.zeros((1, 1))), "")
    check_store({}, None)  # nothing to store: nothing to check
    adata = ad.AnnData(np.zeros((2, 1)))
    adata.uns["x_attrs"] = {"stale": 1}
    store_table(adata, "x", pd.DataFrame({"a": [1]}))
    assert "x_attrs" not in adata.uns and adata.uns["x"]["a"].tolist() == [1]
    with pytest.raises(CellBridgeInputError, match="key_added"):
        cb.tl.marker_genes({"rna": adata}, groupby="g", key_added="m")  # refused before any work
