"""Reading single-cell files and writing results atomically (cellbridge.io)."""

import re

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


# ------------------------------------------------------------------------------------ one reader
def _cite_multiome(n=12, seed=0):
    """Paired toy counts of the same cells: genes (one name duplicated), peaks and proteins."""
    import warnings

    import pandas as pd

    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(index=[f"AAAC{i:04d}-1" for i in range(n)])

    def counts(names):
        with warnings.catch_warnings():  # the duplicated gene name is on purpose
            warnings.simplefilter("ignore", UserWarning)
            return ad.AnnData(sp.csr_matrix(rng.poisson(2.0, (n, len(names))).astype(np.float32)), obs=obs.copy(),
                              var=pd.DataFrame(index=names))

    return {"Gene Expression": counts(["CD3E", "CD4", "MS4A1", "CD4", "LYZ"]),
            "Peaks": counts([f"chr1:{1000 * i}-{1000 * i + 400}" for i in range(7)]),
            "Antibody Capture": counts(["CD3", "CD4_TotalSeqB", "CD19"])}


@pytest.mark.parametrize("fmt", ["h5", "mtx", "mtx_plain"])
def test_read_10x_splits_feature_types(tmp_path, write_10x, fmt):
    parts = _cite_multiome()
    path = write_10x(tmp_path / ("data.h5" if fmt == "h5" else "data"), parts, fmt=fmt)
    for kind, ftype in (("rna", "Gene Expression"), ("atac", "Peaks"), ("adt", "Antibody Capture"),
                        ("protein", "Antibody Capture"), ("Peaks", "Peaks")):
        adata = cb.io.read(path, modality=kind)
        np.testing.assert_array_equal(adata.X.toarray(), parts[ftype].X.toarray())
        assert (adata.var["feature_types"] == ftype).all()
        assert list(adata.obs_names) == list(parts[ftype].obs_names)
    genes = cb.io.read(f"{path}:Gene Expression")  # FILE:FEATURE_TYPE, same as modality=
    assert list(genes.var_names) == ["CD3E", "CD4", "MS4A1", "CD4-1", "LYZ"]  # duplicates made unique
    with pytest.raises(CellBridgeInputError, match=r"several feature types \(\['Gene Expression', 'Peaks', "
                                                   r"'Antibody Capture'\]\)"):
        cb.io.read(path)  # never a silent pick
    with pytest.raises(CellBridgeInputError, match="holds no 'gene_activity' feature type"):
        cb.io.read(path, modality="gene_activity")


def test_read_10x_with_one_feature_type_must_hold_the_one_asked_for(tmp_path, write_10x):
    parts = _cite_multiome()
    path = write_10x(tmp_path / "gex.h5", {"Gene Expression": parts["Gene Expression"]})
    assert cb.io.read(path).shape == (12, 5) and cb.io.read(path, modality="rna").shape == (12, 5)
    with pytest.raises(CellBridgeInputError, match=r"holds no 'atac' feature type: it holds \['Gene Expression'\]"):
        cb.io.read(path, modality="atac")


def test_read_cellranger_v2_folder(tmp_path):
    import scipy.io

    folder = tmp_path / "v2"
    folder.mkdir()
    X = sp.coo_matrix(np.array([[0, 1, 6], [8, 0, 0], [0, 0, 5], [0, 3, 4]]))  # genes x cells
    scipy.io.mmwrite(folder / "matrix.mtx", X, field="integer")
    (folder / "genes.tsv").write_text("G1\tA\nG2\tB\nG3\tC\nG4\tD\n")
    (folder / "barcodes.tsv").write_text("x-1\ny-1\nz-1\n")
    adata = cb.io.read(folder, modality="rna")
    assert adata.shape == (3, 4) and list(adata.var_names) == ["A", "B", "C", "D"]
    np.testing.assert_array_equal(adata.X.toarray(), X.toarray().T)
    with pytest.raises(CellBridgeInputError, match="holds no 'adt'"):
        cb.io.read(folder, modality="adt")


def test_read_h5mu_modality_by_name_or_kind(tmp_path):
    parts = _cite_multiome()
    mdata = md.MuData({"rna": parts["Gene Expression"], "prot": parts["Antibody Capture"]})
    mdata.obs["sample"] = "s1"  # a MuData-level column reaches the modality read
    mdata.obs["prot:qc"] = 1.0  # another modality's column does not reach the rna modality
    cb.io.write_h5mu(mdata, tmp_path / "cite.h5mu")
    rna = cb.io.read(tmp_path / "cite.h5mu", modality="rna")
    assert rna.shape == (12, 5) and (rna.obs["sample"] == "s1").all() and "qc" not in rna.obs
    adt = cb.io.read(tmp_path / "cite.h5mu", modality="adt")  # the kind "adt" finds the modality "prot"
    assert adt.shape == (12, 3) and adt.obs["qc"].eq(1.0).all()
    assert cb.io.read(f"{tmp_path / 'cite.h5mu'}:prot").shape == (12, 3)
    with pytest.raises(CellBridgeInputError, match=r"holds no 'atac' modality: it holds \['rna', 'prot'\]"):
        cb.io.read(tmp_path / "cite.h5mu", modality="atac")
    with pytest.raises(CellBridgeInputError, match="several modalities"):
        cb.io.read(tmp_path / "cite.h5mu")


def test_read_scmdc_layout_through_read(tmp_path):
    import h5py

    x1, x2 = np.arange(12.0).reshape(4, 3), np.arange(8.0).reshape(4, 2) + 100
    with h5py.File(tmp_path / "scmdc.h5", "w") as fh:
        fh["X1"], fh["X2"], fh["Y"] = x1, x2, np.array([0, 1, 1, 0])
    assert np.array_equal(cb.io.read(tmp_path / "scmdc.h5", modality="rna").X.toarray(), x1)
    adt = cb.io.read(tmp_path / "scmdc.h5", modality="adt")
    assert np.array_equal(adt.X.toarray(), x2) and list(adt.obs["label"]) == ["0", "1", "1", "0"]
    assert cb.io.read(f"{tmp_path / 'scmdc.h5'}:X2").shape == (4, 2)


def _truncated(tmp_path, name="x.h5ad"):
    full = tmp_path / f"full_{name}"
    _adata(200, 50).write_h5ad(full)
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    return tmp_path / name


def _file(name, content):
    def make(folder):
        path = folder / name
        path.write_bytes(content)
        return path

    return make


BAD_FILES = {
    "empty": (_file("x.h5ad", b""), "is empty (0 bytes)"),
    "truncated": (_truncated, "truncated or damaged"),
    "not_hdf5": (_file("x.h5ad", b"cell,gene\n"), "not an HDF5 file"),
    "gzip": (_file("x.h5ad", b"\x1f\x8b\x08\x00rest"), "gzip-compressed"),
    "extension": (_file("x.loom.txt", b"a"), "not a format CellBridge reads"),
    "folder": (lambda d: d, "folder without a 10x matrix"),
    "missing": (lambda d: d / "nope.h5ad", "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_read_errors_name_the_file_and_the_problem(tmp_path, case):
    make, problem = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(CellBridgeInputError, match=re.escape(problem)) as err:
        cb.io.read(path)
    assert str(path) in str(err.value)


def test_read_mudata_refuses_an_anndata_and_a_truncated_file(tmp_path):
    _adata().write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(CellBridgeInputError, match=r"not a MuData \(.h5mu\) file but an AnnData"):
        cb.io.read_mudata(tmp_path / "a.h5ad")
    cb.io.write_h5mu(md.MuData({"rna": _adata(300, 40)}), tmp_path / "r.h5mu")
    data = (tmp_path / "r.h5mu").read_bytes()
    (tmp_path / "t.h5mu").write_bytes(data[: len(data) // 2])
    with pytest.raises(CellBridgeInputError, match="t.h5mu"):
        cb.io.read_mudata(tmp_path / "t.h5mu")


def test_selector_on_a_single_modality_file_is_refused(tmp_path):
    _adata().write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(CellBridgeInputError, match="holds one modality"):
        cb.io.read(f"{tmp_path / 'a.h5ad'}:rna")


# ------------------------------------------------------------------------------------ result layout
def _named(cells, genes, values, **obs):
    import pandas as pd

    return ad.AnnData(np.asarray(values, dtype=np.float32).reshape(len(cells), len(genes)),
                      obs=pd.DataFrame(obs, index=cells), var=pd.DataFrame(index=genes))


def test_joint_mudata_unpaired_layout(tmp_path):
    import warnings

    rna = _named(["a", "b", "c"], ["g1", "g2"], range(6), cell_type=["T", "B", "T"])
    gam = _named(["a", "b"], ["g1", "g3"], range(4), cell_type=["B", "B"])  # ATAC cells a, b: not RNA's a, b
    peaks = _named(["b", "a"], ["chr1:1-9", "chr1:20-30"], range(4), cell_type=["B", "B"])
    rna.obsm["X_j"] = np.array([[0.0, 1], [2, 3], [4, 5]])
    gam.obsm["X_j"] = np.array([[6.0, 7], [8, 9]])
    mdata = cb.io.joint_mudata({"rna": rna.copy(), "gene_activity": gam.copy(), "atac": peaks.copy()},
                               sides={"rna": "rna", "gene_activity": "atac", "atac": "atac"}, obsm_keys=("X_j",))
    assert list(mdata.obs_names) == ["a_rna", "b_rna", "c_rna", "a_atac", "b_atac"]
    assert list(mdata.obs["modality"]) == ["rna", "rna", "rna", "atac", "atac"]
    assert list(mdata.obs["input_obs_name"]) == ["a", "b", "c", "a", "b"]
    assert list(mdata.obs["cell_type"]) == ["T", "B", "T", "B", "B"]
    np.testing.assert_array_equal(mdata.obsm["X_j"], [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    assert list(mdata["rna"].var_names) == ["g1", "g2"]  # RNA keeps its names
    assert list(mdata["gene_activity"].var_names) == ["gene_activity:g1", "gene_activity:g3"]
    assert list(mdata["gene_activity"].var["input_var_name"]) == ["g1", "g3"]
    assert mdata.var_names.is_unique and mdata.obs_names.is_unique
    path = cb.io.write_h5mu(mdata, tmp_path / "r.h5mu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with md.set_options(pull_on_update=False):
            back = md.read_h5mu(path)
    assert back.obsm["X_j"].shape == (5, 2) and list(back.obs["modality"]) == list(mdata.obs["modality"])


def test_joint_mudata_paired_shared_embedding_only_at_top_level():
    rna = _named(["a", "b"], ["CD4", "g2"], range(4), n=[1, 2], cell_type=["T", "B"])
    adt = _named(["a", "b"], ["CD4"], range(2), n=[5, 6], cell_type=["T", "B"])
    for a in (rna, adt):
        a.obsm["X_z"] = np.array([[1.0], [2.0]])
    mdata = cb.io.joint_mudata({"rna": rna, "adt": adt}, sides={"rna": "rna+adt", "adt": "rna+adt"},
                               obsm_keys=("X_z",), keep_obsm_in_mods=False)
    assert list(mdata.obs_names) == ["a", "b"] and "input_obs_name" not in mdata.obs  # nothing renamed
    assert list(mdata.obs["modality"]) == ["rna+adt", "rna+adt"]
    assert list(mdata.obs["cell_type"]) == ["T", "B"]  # the modalities agree: one column
    assert list(mdata.obs["rna:n"]) == [1, 2] and list(mdata.obs["adt:n"]) == [5, 6]  # they differ: one each
    assert "X_z" not in mdata["rna"].obsm and mdata.obsm["X_z"].tolist() == [[1.0], [2.0]]
    assert list(mdata["adt"].var_names) == ["adt:CD4"]


def test_write_h5mu_emits_no_warning(tmp_path):
    import warnings

    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": _adata()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb.io.write_h5mu(mdata, tmp_path / "r.h5mu")
