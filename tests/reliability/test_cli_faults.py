"""Bad outputs, bad inputs and faults through the command line: each case checks the exit code, that
the message names the cause and the CLI flag to change, that no traceback is printed, and that
nothing is left on disk (the folder listed before and after).

Output locations are checked before any input is read, so most cases cost no data reading; the
message cases read tiny files.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cellbridge as cb
from cellbridge._utils import TMP_MARKER, temp_sibling
from cellbridge.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    sim = cb.datasets.simulate_multiome(120, n_genes=40, n_types=2, seed=1)
    for name in ("rna", "atac", "adt"):
        sim[name].write_h5ad(d / f"{name}.h5ad")
    ann = sim["annotation"][["chrom", "start", "end", "gene_name", "strand"]]
    ann.to_csv(d / "genes.bed", sep="\t", header=False, index=False)
    swapped = ann.assign(start=ann["end"], end=ann["start"])
    swapped.to_csv(d / "swapped.bed", sep="\t", header=False, index=False)
    (d / "empty_fragments.tsv").write_text("# no fragments here\n")
    chrom, start = ann["chrom"].iloc[0], int(ann["start"].iloc[0])
    (d / "other_barcodes.tsv").write_text(f"{chrom}\t{start}\t{start + 200}\tAAACGAAC-1\t1\n")
    rna = sim["rna"]
    dup = rna.copy()
    dup.obs_names = ["same"] * dup.n_obs
    dup.write_h5ad(d / "rna_duplicated_names.h5ad")
    norm = rna.copy()
    norm.X = np.log1p(np.asarray(norm.X.todense() if hasattr(norm.X, "todense") else norm.X)) + 0.5
    norm.write_h5ad(d / "rna_normalised.h5ad")
    unmapped = sim["adt"].copy()
    unmapped.var_names = [f"NOTAGENE{i}" for i in range(unmapped.n_vars)]
    unmapped.write_h5ad(d / "adt_unmapped.h5ad")
    emb = rna.copy()
    emb.obsm["X_biclum"] = np.random.default_rng(0).normal(size=(emb.n_obs, 4)).astype(np.float32)
    emb.write_h5ad(d / "embedded.h5ad")
    (d / "not_a_model").mkdir()
    (d / "foreign_model").mkdir()
    (d / "foreign_model" / "metadata.json").write_text(json.dumps({"model": "SomethingElse"}))
    (d / "damaged_model").mkdir()
    (d / "damaged_model" / "metadata.json").write_text("{not json")
    return d


def _integrate(files, *extra):
    return ("integrate", "--rna", files / "rna.h5ad", "--adt", files / "adt.h5ad", "--epochs", "1", "--quiet", *extra)


# --------------------------------------------------------------------------------------------
# output locations: refused before any input is read
# --------------------------------------------------------------------------------------------
def test_out_exists_without_overwrite(run, files, tmp_path):
    (tmp_path / "res.h5mu").write_text("an earlier result")
    rc, err = run(*_integrate(files, "--out", "res.h5mu"))
    assert rc == 2 and "--out res.h5mu exists" in err and "--overwrite" in err and "overwrite=True" not in err
    assert (tmp_path / "res.h5mu").read_text() == "an earlier result"


def test_save_model_folder_not_empty(run, files, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    rc, err = run(*_integrate(files, "--out", "res.h5mu", "--save-model", "model"))
    assert rc == 2 and "--save-model model exists and is not empty" in err and "--overwrite" in err


def test_save_model_is_a_file(run, files, tmp_path):
    (tmp_path / "model").write_text("a file")
    rc, err = run(*_integrate(files, "--out", "res.h5mu", "--save-model", "model"))
    assert rc == 2 and "--save-model" in err and "is a file" in err


def test_out_parent_is_a_file(run, files, tmp_path):
    (tmp_path / "results").write_text("a file, not a folder")
    rc, err = run(*_integrate(files, "--out", "results/res.h5mu"))
    assert rc == 2 and "--out" in err and "results is a file, not a folder" in err


def test_out_folder_not_writable(run, files):
    rc, err = run(*_integrate(files, "--out", "/proc/cellbridge-test/res.h5mu"))
    assert rc == 2 and "--out" in err and "cannot write" in err and "choose another location" in err


def test_out_is_a_folder(run, files, tmp_path):
    (tmp_path / "res.h5mu").mkdir()
    rc, err = run(*_integrate(files, "--out", "res.h5mu"))
    assert rc == 2 and "--out" in err and "is a folder" in err


@pytest.mark.parametrize(("command", "out", "ending"), [
    ("integrate", "res.h5ad", ".h5mu"), ("cluster", "res.txt", ".h5mu"), ("gene-activity", "gam.h5mu", ".h5ad"),
    ("evaluate", "metrics.txt", ".json"), ("links", "links.csv", ".tsv"), ("embed", "cells.h5mu", ".h5ad"),
    ("transfer", "labels.json", ".tsv"),
])
def test_out_with_the_wrong_ending(run, files, command, out, ending):
    args = {
        "integrate": _integrate(files),
        "cluster": ("cluster", "--rna", files / "rna.h5ad", "--adt", files / "adt.h5ad"),
        "gene-activity": ("gene-activity", "--peaks", files / "atac.h5ad", "--annotation", files / "genes.bed"),
        "evaluate": ("evaluate", files / "no_result.h5mu", "--label", "cell_type"),
        "links": ("links", "--result", files / "r.h5mu", "--peaks", files / "atac.h5ad", "--annotation", files / "genes.bed"),
        "embed": ("embed", "--model", files / "not_a_model", "--rna", files / "rna.h5ad"),
        "transfer": ("transfer", "--reference", files / "embedded.h5ad", "--query", files / "embedded.h5ad",
                     "--label", "cell_type"),
    }[command]
    rc, err = run(*args, "--out", out)
    assert rc == 2 and "--out" in err and f"must end in {ending}" in err


def test_simulate_out_dir_is_a_file(run, tmp_path):
    (tmp_path / "example").write_text("a file")
    rc, err = run("simulate", "--out-dir", "example")
    assert rc == 2 and "--out-dir example is a file" in err


def test_simulate_writes_all_four_files_or_none(run, tmp_path, listing):
    (tmp_path / "example").mkdir()
    (tmp_path / "example" / "atac.h5ad").write_text("an earlier file")
    rc, err = run("simulate", "--out-dir", "example", "--n-cells", "60", "--n-types", "2")
    assert rc == 2 and "atac.h5ad exists" in err and "--overwrite" in err
    assert listing(tmp_path / "example") == ["atac.h5ad"]  # rna.h5ad, adt.h5ad, genes.bed not written either


def test_stale_temp_files_of_a_killed_run_do_not_block_the_rerun(tmp_path, capsys, listing):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "example").mkdir()
    host = temp_sibling(tmp_path / "x").name.split(TMP_MARKER)[1].rsplit("-", 2)[0]
    stale = tmp_path / "example" / f"rna.h5ad{TMP_MARKER}{host}-{dead.pid}-abcdef"
    stale.write_text("half a file")
    assert main(["simulate", "--out-dir", str(tmp_path / "example"), "--n-cells", "60", "--n-types", "2"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert listing(tmp_path / "example") == ["adt.h5ad", "atac.h5ad", "genes.bed", "rna.h5ad"]


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------
def test_threads_must_be_positive(run, files):
    with pytest.raises(SystemExit) as exit_:
        run(*_integrate(files, "--out", "res.h5mu", "--threads", "0"))
    assert exit_.value.code == 2


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_accelerator_that_is_not_there(run, files, device):
    import torch

    present = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if present:
        pytest.skip(f"this machine has {device}")
    rc, err = run(*_integrate(files, "--out", "res.h5mu", "--accelerator", device))
    assert rc == 2 and f"--accelerator {device}" in err and "--accelerator auto or cpu" in err


# --------------------------------------------------------------------------------------------
# inputs: the message names the real cause and the CLI flag
# --------------------------------------------------------------------------------------------
def test_bed_with_start_after_end_is_not_called_a_genome_mismatch(run, files):
    rc, err = run("gene-activity", "--peaks", files / "atac.h5ad", "--annotation", files / "swapped.bed",
                  "--out", "gam.h5ad", "--quiet")
    assert rc == 2 and "swapped" in err and "start" in err and "genome build" not in err


def test_empty_fragments_file_is_not_called_a_genome_mismatch(run, files):
    rc, err = run("gene-activity", "--fragments", files / "empty_fragments.tsv", "--cells", files / "rna.h5ad",
                  "--annotation", files / "genes.bed", "--out", "gam.h5ad", "--quiet")
    assert rc == 2 and "holds no fragments" in err and "genome build" not in err


def test_barcodes_matching_no_cell_name_the_cells_flag(run, files):
    rc, err = run("gene-activity", "--fragments", files / "other_barcodes.tsv", "--cells", files / "rna.h5ad",
                  "--annotation", files / "genes.bed", "--out", "gam.h5ad", "--quiet")
    assert rc == 2 and "AAACGAAC-1" in err and "--cells" in err and "genome build" not in err


def test_duplicated_cell_names_hint_names_a_real_method(run, files):
    rc, err = run("integrate", "--rna", files / "rna_duplicated_names.h5ad", "--adt", files / "adt.h5ad",
                  "--out", "res.h5mu", "--epochs", "1", "--quiet")
    assert rc == 2 and "duplicated" in err
    method = err.split("e.g. `")[-1].split("(")[0].split(".")[-1]
    assert method == "obs_names_make_unique" and hasattr(cb.datasets.simulate_multiome(30)["rna"], method)


def test_non_count_rna_names_the_layer_flag(run, files):
    rc, err = run("integrate", "--rna", files / "rna_normalised.h5ad", "--adt", files / "adt.h5ad",
                  "--out", "res.h5mu", "--epochs", "1", "--quiet")
    assert rc == 2 and "non-integer" in err and "--layer-rna counts" in err and "layer=" not in err


def test_proteins_matching_no_gene_name_the_protein_map_flag(run, files):
    rc, err = run("integrate", "--rna", files / "rna.h5ad", "--adt", files / "adt_unmapped.h5ad",
                  "--out", "res.h5mu", "--epochs", "1", "--quiet")
    assert rc == 2 and "No protein maps to a gene" in err and "--protein-map" in err and "`protein_map`" not in err


@pytest.mark.parametrize(("model", "words"), [
    ("not_a_model", "is not a saved CellBridge model"), ("foreign_model", "'SomethingElse' model"),
    ("damaged_model", "cannot be read"),
])
def test_embed_with_a_folder_that_is_no_model(run, files, model, words):
    rc, err = run("embed", "--model", files / model, "--rna", files / "rna.h5ad", "--out", "cells.h5ad", "--quiet")
    assert rc == 2 and words in err


def test_transfer_without_the_embedding_names_the_key_flag(run, files):
    rc, err = run("transfer", "--reference", files / "embedded.h5ad", "--query", files / "rna.h5ad",
                  "--label", "cell_type", "--out", "labels.tsv", "--quiet")
    assert rc == 2 and "--query" in err and "obsm['X_biclum']" in err and "--key" in err


def test_transfer_without_the_label_column(run, files):
    rc, err = run("transfer", "--reference", files / "embedded.h5ad", "--query", files / "embedded.h5ad",
                  "--label", "no_such_column", "--out", "labels.tsv", "--quiet")
    assert rc == 2 and "no column 'no_such_column'" in err


# --------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------
def test_sigterm_during_training_exits_143_and_leaves_no_result(files, tmp_path, listing):
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cellbridge", "integrate", "--rna", str(files / "rna.h5ad"), "--adt",
             str(files / "adt.h5ad"), "--out", "res.h5mu", "--save-model", "model", "--epochs", "100000",
             "--threads", "1"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err_file)
        deadline = time.monotonic() + 120
        while "BiCLUM" not in err_path.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, err_path.read_text()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    err = err_path.read_text()
    assert proc.returncode == 128 + signal.SIGTERM and "terminated" in err and "Traceback" not in err
    left = [p for p in listing(tmp_path) if p != "stderr.txt"]
    assert "res.h5mu" not in left and not any(TMP_MARKER in p for p in left), left
