import json
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
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
    assert set(mdata.mod) == {"rna", "gene_activity", "atac"}  # the peaks are kept beside their gene activity
    assert mdata.mod["rna"].obsm["X_biclum"].shape == (500, 50) and mdata.obsm["X_biclum"].shape == (1000, 50)
    assert mdata.mod["gene_activity"].varm["X_biclum"].shape[1] == 50
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


def test_integrate_adt_save_model_embed_and_transfer(sim_files, tmp_path, capsys):
    out, model = tmp_path / "adt.h5mu", tmp_path / "model"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["integrate", "--rna", str(sim_files / "rna.h5ad"), "--adt", str(sim_files / "adt.h5ad"),
                     "--out", str(out), "--epochs", "2", "--save-model", str(model), "--threads", "1",
                     "--accelerator", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no bars, no log lines
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]  # libraries' notices hidden in the CLI
    result = md.read_h5mu(out)
    assert result.mod["adt"].obsm["X_biclum"].shape == (500, 25)
    assert {"metadata.json", "model.pt"} <= {p.name for p in model.iterdir()}  # (and the training checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adt.h5mu", "model"]  # no temporary left
    # map cells with the saved model: the training cells land where training put them
    embedded = tmp_path / "rna_embedded.h5ad"
    assert main(["embed", "--model", str(model), "--rna", str(sim_files / "rna.h5ad"), "--out", str(embedded),
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "BiCLUM" and summary["key"] == "X_biclum" and summary["n_cells"] == 500
    z = ad.read_h5ad(embedded).obsm["X_biclum"]
    np.testing.assert_allclose(z, result.mod["rna"].obsm["X_biclum"], rtol=1e-4, atol=1e-5)
    # transfer the RNA labels to the ADT cells through the joint space
    labels = tmp_path / "labels.tsv"
    assert main(["transfer", "--reference", str(embedded), "--query", f"{out}:adt", "--label", "cell_type",
                 "--out", str(labels), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = pd.read_csv(labels, sep="\t")
    assert list(table.columns) == ["cell", "predicted", "confidence", "observed"] and len(table) == 500
    assert table["confidence"].between(0, 1).all() and summary["n_query"] == 500
    assert summary["accuracy"] == pytest.approx((table["predicted"] == table["observed"]).mean())
    assert sum(summary["predicted_counts"].values()) == 500


def test_version_and_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "cellbridge", "--version"], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == f"cellbridge {cb.__version__}"


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
    assert "atac" not in mdata.mod  # from fragments: no peaks to keep
    assert mdata.mod["gene_activity"].n_obs == 150 and mdata.mod["gene_activity"].obsm["X_biclum"].shape[0] == 150


def test_cluster_paired_cite(sim_files, tmp_path, capsys):
    out = tmp_path / "clusters.h5mu"
    args = ["cluster", "--rna", str(sim_files / "rna.h5ad"), "--adt", str(sim_files / "adt.h5ad"), "--out", str(out),
            "--n-clusters", "3", "--pretrain-epochs", "3", "--finetune-epochs", "2", "--quiet",
            "--save-model", str(tmp_path / "model")]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_clusters"] == 3
    mdata = md.read_h5mu(out)
    assert mdata.obsm["X_scmdcf"].shape[0] == 500 and "X_scmdcf" not in mdata.mod["rna"].obsm  # one fused z
    assert mdata.mod["rna"].obs["scmdcf_cluster"].nunique() <= 3
    assert main(args) == 2  # refuses to overwrite
    # the saved scMDCF model gives its trained cells' fused embedding back
    assert main(["embed", "--model", str(tmp_path / "model"), "--rna", str(sim_files / "rna.h5ad"),
                 "--out", str(tmp_path / "z.h5ad"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "scMDCF"
    z = ad.read_h5ad(tmp_path / "z.h5ad")
    saved = pd.DataFrame(mdata.obsm["X_scmdcf"], index=mdata.obs_names).loc[z.obs_names].to_numpy()
    np.testing.assert_allclose(z.obsm["X_scmdcf"], saved, rtol=1e-5, atol=1e-6)


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
    result = md.read_h5mu(out)
    assert result.obsm["X_scmdcf"].shape == (300, 2 * 8) and result.obs["scmdcf_cluster"].nunique() <= 3


@pytest.mark.parametrize(("command", "api", "cli"), [
    ("integrate", "x exists; pass `overwrite=True` to replace it.", "x exists; pass --overwrite to replace it."),
    ("integrate", "m is not empty; pass overwrite=True to replace it.", "m is not empty; pass --overwrite to replace it."),
    ("integrate", '`rna.X` holds non-integer values; pass `layer="counts"` if the counts are stored there.',
     "`rna.X` holds non-integer values; pass --layer-rna counts if the counts are stored there."),
    ("cluster", "`other.X` has negative values; pass `layer=\"counts\"`.", "`other.X` has negative values; pass --layer-other counts."),
    ("links", "`atac` has no layer 'c'. Pass `layer=None` to use `.X`.", "`atac` has no layer 'c'. Leave out --layer-peaks to use `.X`."),
    ("integrate", "No protein maps to a gene in `rna`; pass `protein_map` (columns protein, gene).",
     "No protein maps to a gene in `rna`; pass --protein-map (columns protein, gene)."),
    ("integrate", "`max_epochs` must be at least 1, got 0.", "--epochs must be at least 1, got 0."),
    ("gene-activity", "pass `cells` whose obs_names are the barcodes", "pass --cells whose obs_names are the barcodes"),
    ("gene-activity", "pass `gene_id_as_name=True`.", "pass `gene_id_as_name=True`."),  # no such flag: kept
])
def test_error_messages_speak_in_cli_flags(command, api, cli):
    from cellbridge.cli import _subparser, build_parser, cli_message

    assert cli_message(api, _subparser(build_parser(), command)) == cli
