import json
from pathlib import Path

import mudata as md
import numpy as np
import pytest

import cellbridge as cb
from cellbridge.cli import main


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    sim = cb.datasets.simulate_multiome(500, n_genes=150, n_types=3, seed=2)
    sim["rna"].write_h5ad(d / "rna.h5ad")
    sim["atac"].write_h5ad(d / "atac.h5ad")
    sim["adt"].write_h5ad(d / "adt.h5ad")
    ann = sim["annotation"]
    ann[["chrom", "start", "end", "gene_name", "strand"]].to_csv(d / "genes.bed", sep="\t", header=False, index=False)
    return d


def test_integrate_atac_then_evaluate(sim_files, tmp_path, capsys):
    out = tmp_path / "result.h5mu"
    args = ["integrate", "--rna", str(sim_files / "rna.h5ad"), "--atac", str(sim_files / "atac.h5ad"),
            "--genome-annotation", str(sim_files / "genes.bed"), "--out", str(out), "--epochs", "3", "--quiet"]
    assert main(args) == 0
    mdata = md.read_h5mu(out)
    assert set(mdata.mod) == {"rna", "atac"}
    assert mdata.mod["rna"].obsm["X_biclum"].shape == (500, 50)
    assert mdata.mod["atac"].varm["X_biclum"].shape[1] == 50
    assert len(mdata.uns["biclum"]["history"]["loss"]) == 3
    # refuses to overwrite, then overwrites when asked
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--label", "cell_type", "--paired"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["foscttm"] <= 1 and 0 <= metrics["transfer_accuracy"] <= 1
    assert main(["evaluate", str(out), "--label", "no_such_column"]) == 2
    assert "no column 'no_such_column'" in capsys.readouterr().err
    # gene-peak links of the simulated pairs: peaks planted near their genes correlate with them
    links = tmp_path / "links.tsv"
    assert main(["links", "--result", str(out), "--peaks", str(sim_files / "atac.h5ad"), "--annotation",
                 str(sim_files / "genes.bed"), "--paired", "--out", str(links), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    import pandas as pd

    table = pd.read_csv(links, sep="\t")
    assert summary["n_links"] == len(table) > 0
    assert {"gene", "peak", "distance", "score", "zscore", "pvalue", "fdr"} <= set(table.columns)
    assert (table["distance"].abs() <= 500_000).all() and table["fdr"].between(0, 1).all()
    assert summary["n_fdr_below_0.05"] > 0  # the simulator plants gene-linked peaks
    assert main(["links", "--result", str(out), "--peaks", str(sim_files / "atac.h5ad"), "--annotation",
                 str(sim_files / "genes.bed"), "--paired", "--out", str(links), "--quiet"]) == 2  # exists


def test_integrate_adt(sim_files, tmp_path):
    out = tmp_path / "adt.h5mu"
    assert main(["integrate", "--rna", str(sim_files / "rna.h5ad"), "--adt", str(sim_files / "adt.h5ad"),
                 "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert md.read_h5mu(out).mod["adt"].obsm["X_biclum"].shape == (500, 25)


def test_integrate_needs_annotation_for_peaks(sim_files, tmp_path, capsys):
    assert main(["integrate", "--rna", str(sim_files / "rna.h5ad"), "--atac", str(sim_files / "atac.h5ad"),
                 "--out", str(tmp_path / "x.h5mu"), "--quiet"]) == 2
    assert "--genome-annotation" in capsys.readouterr().err
    assert not (tmp_path / "x.h5mu").exists()


def test_demo_runs(capsys):
    assert main(["demo", "--n-cells", "400", "--epochs", "2", "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert np.isfinite(metrics["foscttm"]) and "omics_mixing" in metrics


def test_integrate_from_fragments_and_gene_activity_command(shared_data, tmp_path, capsys):
    folder = shared_data / "pbmc_fragments_tiny"
    gam = tmp_path / "gam.h5ad"
    assert main(["gene-activity", "--fragments", str(folder / "fragments.tsv.gz"), "--cells", str(folder / "rna.h5ad"),
                 "--annotation", str(shared_data / "annotation" / "hg19_genes.bed"), "--out", str(gam), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_cells"] == 150 and gam.exists()
    out = tmp_path / "frag.h5mu"
    assert main(["integrate", "--rna", str(folder / "rna.h5ad"), "--fragments", str(folder / "fragments.tsv.gz"),
                 "--cells", str(folder / "rna.h5ad"), "--genome-annotation", str(shared_data / "annotation" / "hg19_genes.bed"),
                 "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    mdata = md.read_h5mu(out)
    assert mdata.mod["atac"].n_obs == 150 and mdata.mod["atac"].obsm["X_biclum"].shape[0] == 150


def test_cluster_paired_cite(sim_files, tmp_path, capsys):
    out = tmp_path / "clusters.h5mu"
    args = ["cluster", "--rna", str(sim_files / "rna.h5ad"), "--adt", str(sim_files / "adt.h5ad"), "--out", str(out),
            "--n-clusters", "3", "--pretrain-epochs", "3", "--finetune-epochs", "2", "--quiet"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_clusters"] == 3
    mdata = md.read_h5mu(out)
    assert mdata.mod["rna"].obsm["X_scmdcf"].shape[0] == 500
    assert mdata.mod["rna"].obs["scmdcf_cluster"].nunique() <= 3
    assert main(args) == 2  # refuses to overwrite


def test_simulate_then_cluster_readme_example(tmp_path, capsys):
    d = tmp_path / "example"
    assert main(["simulate", "--out-dir", str(d), "--n-cells", "300", "--n-types", "3"]) == 0
    written = json.loads(capsys.readouterr().out)["written"]
    assert sorted(Path(p).name for p in written) == ["adt.h5ad", "atac.h5ad", "genes.bed", "rna.h5ad"]
    assert main(["simulate", "--out-dir", str(d)]) == 2  # refuses to overwrite
    out = d / "clusters.h5mu"
    assert main(["cluster", "--rna", str(d / "rna.h5ad"), "--atac", str(d / "atac.h5ad"), "--out", str(out),
                 "--n-clusters", "3", "--n-models", "2", "--pretrain-epochs", "3", "--finetune-epochs", "2",
                 "--quiet"]) == 0
    rna = md.read_h5mu(out).mod["rna"]
    assert rna.obsm["X_scmdcf"].shape == (300, 2 * 8) and rna.obs["scmdcf_cluster"].nunique() <= 3
