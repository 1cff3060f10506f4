"""Reading single-cell files and writing results atomically (cellbridge.io)."""

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp

import cellbridge as cb
from cellbridge import CellBridgeInputError


def _adata(n=5, m=3):
    return ad.AnnData(sp.csr_matrix(np.arange(n * m, dtype=np.float32).reshape(n, m)))


def test_write_h5ad_atomic_and_no_overwrite(tmp_path):
    path = tmp_path / "x.h5ad"
    cb.io.write_h5ad(_adata(), path)
    assert cb.io.read(path).shape == (5, 3)
    with pytest.raises(FileExistsError, match="overwrite"):
        cb.io.write_h5ad(_adata(2, 2), path)
    assert cb.io.read(path).shape == (5, 3)  # untouched
    cb.io.write_h5ad(_adata(2, 2), path, overwrite=True)
    assert cb.io.read(path).shape == (2, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5ad"]  # no temp files left


def test_write_h5mu(tmp_path):
    mdata = md.MuData({"rna": _adata(), "adt": _adata()})
    cb.io.write_h5mu(mdata, tmp_path / "r.h5mu")
    assert set(cb.io.read_mudata(tmp_path / "r.h5mu").mod) == {"rna", "adt"}


def test_read_unknown_format(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CellBridgeInputError, match="format"):
        cb.io.read(tmp_path / "x.csv")
    with pytest.raises(CellBridgeInputError, match="does not exist"):
        cb.io.read(tmp_path / "missing.h5ad")


def test_read_scmdc_h5_reads_each_modality(shared_data):
    rna, adt = cb.io.read_scmdc_h5(shared_data / "pbmc10k_cite_unnamed" / "pbmc10k_cite.h5")
    assert rna.shape == (6661, 1000) and adt.shape == (6661, 14)
    assert rna.obs["label"].nunique() == 7
    # E1: the reference read X1 twice; the ADT must differ from the RNA block.
    assert not np.allclose(rna.X[:, :14].toarray(), adt.X.toarray())
