"""Paired inputs (cellbridge.pp.paired): modality inference, MuData splitting, cell alignment."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import cellbridge as cb
from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge.pp.paired import align_cells, infer_modality, split_mudata


def test_public_api():
    assert cb.pp.infer_modality is infer_modality
    assert cb.pp.split_mudata is split_mudata and cb.pp.align_cells is align_cells


def test_modality_inference(make_pair):
    _, atac = make_pair(n_other=30, kind="atac")
    assert infer_modality(atac) == "atac"
    assert infer_modality(make_pair()[1]) == "protein"
    big = ad.AnnData(np.ones((3, 600), dtype=np.float32), var=pd.DataFrame(index=[f"f{i}" for i in range(600)]))
    with pytest.raises(CellBridgeInputError, match='modality="atac"'):
        infer_modality(big)


@pytest.mark.parametrize("names", [["chr1:100-200", "chr2:5-10"], ["chr1-100-200", "chr2-5-10"],
                                   ["chr1_100_200", "chrX_5_10"], ["1:100-200", "2:5-10"]])
def test_peak_name_styles_are_atac(names):
    peaks = ad.AnnData(np.ones((2, len(names)), dtype=np.float32), var=pd.DataFrame(index=names))
    assert infer_modality(peaks) == "atac"


def test_split_mudata_passes_pairs_through_and_reads_the_modality(make_pair):
    rna, adt = make_pair()
    assert split_mudata(rna, adt) == (rna, adt, None)
    with pytest.raises(CellBridgeInputError, match="`other` is missing"):
        split_mudata(rna, None)
    r, o, hint = split_mudata(md.MuData({"rna": rna, "adt": adt}), None)
    assert hint == "protein" and r.shape == rna.shape and o.shape == adt.shape
    assert list(o.var_names) == list(adt.var_names)
    _, atac = make_pair(n_other=30, kind="atac")
    assert split_mudata(md.MuData({"rna": rna, "ATAC": atac}), None)[2] == "atac"  # names are case-blind


def test_split_mudata_errors(make_pair):
    rna, adt = make_pair()
    with pytest.raises(CellBridgeInputError, match='no "rna" modality'):
        split_mudata(md.MuData({"gex": rna, "adt": adt}), None)
    with pytest.raises(CellBridgeInputError, match="exactly one of"):
        split_mudata(md.MuData({"rna": rna, "adt": adt, "prot": adt.copy()}), None)
    with pytest.raises(CellBridgeInputError, match="exactly one of"):
        split_mudata(md.MuData({"rna": rna, "adt": adt}), adt)  # `other` must then be None


def test_align_cells_positions_in_rna_order(make_pair):
    rna, adt = make_pair()
    perm = np.random.default_rng(1).permutation(adt.n_obs)
    shuffled = adt[perm].copy()
    i_rna, i_other = align_cells(rna, shuffled)
    assert np.array_equal(i_rna, np.arange(rna.n_obs))
    assert list(shuffled.obs_names[i_other]) == list(rna.obs_names)


def test_align_cells_drops_unpaired_with_warning_and_needs_enough_shared(make_pair):
    rna, adt = make_pair()
    with pytest.warns(CellBridgeWarning, match="5 RNA and 0 other cells have no partner"):
        i_rna, i_other = align_cells(rna, adt[5:].copy())
    assert len(i_rna) == len(i_other) == 55
    assert list(rna.obs_names[i_rna]) == list(adt.obs_names[5:])
    renamed = adt.copy()
    renamed.obs_names = [f"{n}_atac" for n in adt.obs_names]
    with pytest.raises(CellBridgeInputError, match="Only 0 cell names are shared"):
        align_cells(rna, renamed)
    with pytest.raises(CellBridgeInputError, match="at least 80"):
        align_cells(rna, adt, min_cells_shared=80)
