"""The jobs behind the command line (cellbridge.workflows): every input through one reader, results
laid out for joint analysis."""

import json
import warnings

import mudata as md
import numpy as np
import pytest
import scanpy as sc

import cellbridge as cb
from cellbridge import CellBridgeInputError, workflows


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Simulated paired RNA / peaks / ADT of 240 cells as a 10x Multiome .h5, a 10x CITE-seq .h5, an
    .h5mu (peaks normalised in .X, counts in layers["counts"]) and a gene BED file."""
    from cellbridge.datasets import simulate_multiome

    d = tmp_path_factory.mktemp("inputs")
    sim = simulate_multiome(240, n_genes=80, n_types=3, seed=3)
    sim["annotation"][["chrom", "start", "end", "gene_name", "strand"]].to_csv(
        d / "genes.bed", sep="\t", header=False, index=False)
    atac = sim["atac"].copy()
    atac.layers["counts"] = atac.X.copy()
    atac.X = atac.X.multiply(1 / (atac.X.sum(axis=1) + 1)).tocsr()  # not counts
    with md.set_options(pull_on_update=False):
        cb.io.write_h5mu(md.MuData({"rna": sim["rna"], "atac": atac}), d / "multiome.h5mu")
    return d, sim


@pytest.fixture(scope="module")
def files(inputs, write_10x):
    d, sim = inputs
    write_10x(d / "multiome.h5", {"Gene Expression": sim["rna"], "Peaks": sim["atac"]})
    write_10x(d / "cite.h5", {"Gene Expression": sim["rna"], "Antibody Capture": sim["adt"]})
    return d


def _read_strictly(path):
    """The result as a user reads it: mudata must not warn (duplicated names...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with md.set_options(pull_on_update=False):
            return md.read_h5mu(path)


def test_integrate_a_10x_multiome_h5_keeps_genes_and_peaks_apart(files, inputs, tmp_path):
    _, sim = inputs
    out = tmp_path / "result.h5mu"
    workflows.integrate(files / "multiome.h5", out, atac=files / "multiome.h5", annotation=files / "genes.bed",
                        epochs=2, progress=False)
    mdata = _read_strictly(out)
    assert set(mdata.mod) == {"rna", "gene_activity", "atac"}
    assert mdata["rna"].n_vars == 80 and mdata["atac"].n_vars == sim["atac"].n_vars  # genes, then peaks
    np.testing.assert_array_equal(mdata["atac"].X.toarray(), sim["atac"].X.toarray())  # the peaks are kept
    assert mdata.obsm["X_biclum"].shape == (480, 50) and np.isfinite(mdata.obsm["X_biclum"]).all()
    assert mdata.obs["modality"].value_counts().to_dict() == {"rna": 240, "atac": 240}
    assert mdata.var_names.is_unique and mdata.obs_names.is_unique
    rna_rows = (mdata.obs["modality"] == "rna").to_numpy()
    np.testing.assert_array_equal(mdata.obsm["X_biclum"][rna_rows], mdata["rna"].obsm["X_biclum"])
    sc.pp.neighbors(mdata, use_rep="X_biclum")
    assert mdata.obsp["connectivities"].shape == (480, 480)


def test_integrate_an_h5mu_with_the_peak_counts_in_a_layer(files, tmp_path):
    h5mu, out = files / "multiome.h5mu", tmp_path / "r.h5mu"
    with pytest.raises(CellBridgeInputError, match="non-integer"):  # .X of the peaks holds no counts
        workflows.integrate(h5mu, out, atac=h5mu, annotation=files / "genes.bed", epochs=2, progress=False)
    workflows.integrate(h5mu, out, atac=h5mu, annotation=files / "genes.bed", layer_atac="counts", keep_peaks=False,
                        epochs=2, progress=False)
    mdata = _read_strictly(out)
    assert set(mdata.mod) == {"rna", "gene_activity"} and "cell_type" in mdata.obs
    metrics = workflows.evaluate(out, label="cell_type", paired=True)  # cells paired by their input names
    assert 0 <= metrics["foscttm"] <= 1 and 0 <= metrics["transfer_accuracy"] <= 1
    unpaired = workflows.evaluate(mdata, label="cell_type", out=tmp_path / "m.json")
    assert np.isnan(unpaired["foscttm"])
    strict = json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert strict["foscttm"] is None and strict["transfer_accuracy"] == pytest.approx(unpaired["transfer_accuracy"])


def test_cluster_a_10x_cite_h5_writes_one_fused_embedding(files, tmp_path):
    out = tmp_path / "clusters.h5mu"
    report = workflows.cluster(files / "cite.h5", out, adt=files / "cite.h5", n_clusters=3, pretrain_epochs=2,
                               finetune_epochs=1, n_models=1, progress=False)
    assert report["n_cells"] == 240
    mdata = _read_strictly(out)
    assert set(mdata.mod) == {"rna", "adt"} and mdata["adt"].n_vars == 20  # the proteins, not the genes
    assert mdata.obsm["X_scmdcf"].shape == (240, 8) and all("X_scmdcf" not in m.obsm for m in mdata.mod.values())
    assert set(mdata.obs["modality"]) == {"rna+adt"} and mdata.obs["scmdcf_cluster"].nunique() <= 3
    assert mdata.var_names.is_unique and "adt:CD4" in mdata["adt"].var_names  # CD4 is also a gene
    sc.pp.neighbors(mdata, use_rep="X_scmdcf")
    with pytest.raises(CellBridgeInputError, match="shared by its modalities"):
        workflows.evaluate(out, label="scmdcf_cluster", paired=True)


def test_evaluate_refuses_one_embedding_copied_into_both_modalities(make_pair):
    rna, adt = make_pair(n=30)
    z = np.random.default_rng(0).normal(size=(30, 4))
    rna.obsm["X_scmdcf"], adt.obsm["X_scmdcf"] = z, z.copy()
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "adt": adt})
    with pytest.raises(CellBridgeInputError, match="perfect by construction"):
        workflows.evaluate(mdata, label="cell_type", paired=True)


def test_gene_activity_from_the_peaks_of_a_multiome_h5(files, tmp_path):
    report = workflows.gene_activity_file(out=tmp_path / "gam.h5ad", annotation=files / "genes.bed",
                                          peaks=files / "multiome.h5")
    assert report["n_cells"] == 240 and cb.io.read(tmp_path / "gam.h5ad").n_obs == 240
    report = workflows.gene_activity_file(out=tmp_path / "gam2.h5ad", annotation=files / "genes.bed",
                                          peaks=f"{files / 'multiome.h5mu'}:atac", layer_peaks="counts")
    assert report["n_cells"] == 240


@pytest.mark.parametrize(("call", "message"), [
    (lambda d: workflows.integrate("missing.h5ad", d / "r.h5ad", adt="missing.h5ad"), r"end.*in \.h5mu"),
    (lambda d: workflows.cluster("missing.h5ad", d / "r.txt", adt="missing.h5ad"), r"\.h5mu"),
    (lambda d: workflows.gene_activity_file(out=d / "g.h5mu", annotation="hg38", peaks="x.h5ad"), r"\.h5ad"),
    (lambda d: workflows.evaluate("missing.h5mu", label="x", out=d / "m.txt"), r"\.json"),
    (lambda d: workflows.integrate("missing.h5ad", d / "r.h5mu", adt="a.h5ad", layer_atac="counts"),
     "--layer-atac counts: it applies to --atac, which was not given"),
    (lambda d: workflows.cluster("missing.h5ad", d / "r.h5mu", adt="a.h5ad", layer_adt="c", layer_other="c"),
     "not both"),
    (lambda d: workflows.integrate("missing.h5ad", d / "r.h5mu", atac="a.h5ad"), "--genome-annotation"),
])
def test_options_are_checked_before_any_input_is_read(tmp_path, call, message):
    with pytest.raises(CellBridgeInputError, match=message):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_read_input_names_the_flag(files):
    with pytest.raises(CellBridgeInputError, match=r"^--adt .*multiome.h5 holds no 'adt' feature type"):
        workflows.read_input(files / "multiome.h5", "adt")
    with pytest.raises(CellBridgeInputError, match=r"--layer-rna nope: .* has no layer 'nope'"):
        workflows.read_input(files / "cite.h5", "rna", layer="nope")
    assert workflows.read_input(f"{files / 'cite.h5'}:Antibody Capture", "rna").n_vars == 20  # FILE:TYPE wins
