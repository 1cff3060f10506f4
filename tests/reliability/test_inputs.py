"""Unreadable and unsuitable inputs through the command line: every case must end with exit code 2
and one message naming the file, what is wrong with it and what to do, before any work is spent:
no traceback, nothing written (the folders are listed before and after).

The inputs are small files built here (10x ``.h5`` / mtx with h5py and scipy, damaged copies of
valid files); no shared data.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import warnings

import h5py
import mudata as md
import numpy as np
import pytest

import cellbridge as cb


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_10x):
    d = tmp_path_factory.mktemp("bad_inputs")
    sim = cb.datasets.simulate_multiome(60, n_genes=30, n_types=2, seed=4)
    rna, atac, adt = sim["rna"], sim["atac"], sim["adt"]
    for name, adata in (("rna", rna), ("atac", atac), ("adt", adt)):
        adata.write_h5ad(d / f"{name}.h5ad")
    sim["annotation"][["chrom", "start", "end", "gene_name", "strand"]].to_csv(
        d / "genes.bed", sep="\t", header=False, index=False)
    write_10x(d / "gex_only.h5", {"Gene Expression": rna})
    write_10x(d / "cite.h5", {"Gene Expression": rna, "Antibody Capture": adt})
    write_10x(d / "cite_mtx", {"Gene Expression": rna, "Antibody Capture": adt}, fmt="mtx")
    with warnings.catch_warnings(), md.set_options(pull_on_update=False):
        warnings.simplefilter("ignore", UserWarning)  # "CD4" is a gene and a protein: a user's file as it comes
        cb.io.write_h5mu(md.MuData({"rna": rna, "prot": adt}), d / "cite.h5mu")
    (d / "empty.h5ad").write_bytes(b"")
    valid = (d / "rna.h5ad").read_bytes()
    (d / "truncated.h5ad").write_bytes(valid[: len(valid) // 2])
    h5mu = (d / "cite.h5mu").read_bytes()
    (d / "truncated.h5mu").write_bytes(h5mu[: len(h5mu) // 3])
    tenx = (d / "cite.h5").read_bytes()
    (d / "truncated.h5").write_bytes(tenx[: len(tenx) // 2])
    (d / "table.h5ad").write_text("cell,CD3E,CD4\nc1,0,3\n")
    (d / "gzipped.h5ad").write_bytes(gzip.compress(valid))
    (d / "counts.csv").write_text("cell,CD3E,CD4\nc1,0,3\n")
    (d / "empty_folder").mkdir()
    (d / "no_barcodes").mkdir()
    for name in ("matrix.mtx.gz", "features.tsv.gz"):
        (d / "no_barcodes" / name).write_bytes((d / "cite_mtx" / name).read_bytes())
    (d / "mismatched").mkdir()
    for name in ("matrix.mtx.gz", "features.tsv.gz"):
        (d / "mismatched" / name).write_bytes((d / "cite_mtx" / name).read_bytes())
    (d / "mismatched" / "barcodes.tsv").write_text("only-one-barcode\n")
    with h5py.File(d / "unknown.h5", "w") as fh:
        fh["foo"] = np.arange(3)
    with h5py.File(d / "x1_only.h5", "w") as fh:
        fh["X1"] = np.ones((5, 3))
    with h5py.File(d / "scmdc_mismatch.h5", "w") as fh:
        fh["X1"], fh["X2"] = np.ones((5, 3)), np.ones((4, 2))
    return d


def _integrate_rna(files, rna):
    return ("integrate", "--rna", rna, "--adt", files / "adt.h5ad", "--out", "res.h5mu", "--epochs", "1", "--quiet")


#: case -> (the command's arguments given the inputs folder, words the message must hold: the
#: file, the cause, the fix)
CASES = {
    # unreadable files
    "missing file": (lambda f: _integrate_rna(f, f / "missing.h5ad"), ["missing.h5ad", "does not exist"]),
    "0-byte h5ad": (lambda f: _integrate_rna(f, f / "empty.h5ad"), ["empty.h5ad", "0 bytes", "write or copy it"]),
    "truncated h5ad": (lambda f: _integrate_rna(f, f / "truncated.h5ad"),
                       ["truncated.h5ad", "truncated or damaged", "write or copy it again"]),
    "text named .h5ad": (lambda f: _integrate_rna(f, f / "table.h5ad"), ["table.h5ad", "not an HDF5 file"]),
    "gzipped h5ad": (lambda f: _integrate_rna(f, f / "gzipped.h5ad"), ["gzipped.h5ad", "gzip", "gunzip"]),
    "csv": (lambda f: _integrate_rna(f, f / "counts.csv"), ["counts.csv", "not a format", ".h5ad", "read_csv"]),
    "folder without matrix": (lambda f: _integrate_rna(f, f / "empty_folder"),
                              ["empty_folder", "without a 10x matrix", "matrix.mtx"]),
    "mtx folder without barcodes": (lambda f: _integrate_rna(f, f / "no_barcodes"),
                                    ["no_barcodes", "no barcodes.tsv", "add the missing"]),
    "mtx folder of two runs": (lambda f: _integrate_rna(f, f / "mismatched"),
                               ["mismatched", "inconsistent", "1 barcodes", "files of one run"]),
    "unknown HDF5 layout": (lambda f: _integrate_rna(f, f / "unknown.h5"), ["unknown.h5", "['foo']", ".h5mu"]),
    "truncated 10x h5": (lambda f: _integrate_rna(f, f / "truncated.h5"), ["truncated.h5", "truncated or damaged"]),
    "truncated h5mu (evaluate)": (lambda f: ("evaluate", f / "truncated.h5mu", "--label", "cell_type"),
                                  ["truncated.h5mu", "truncated or damaged"]),
    "h5ad given as a result": (lambda f: ("evaluate", f / "rna.h5ad", "--label", "cell_type"),
                               ["rna.h5ad", "not a MuData", "integrate or cluster"]),
    # the modality asked for is not in the file: never a silent pick of another one
    "peaks from a genes-only 10x h5": (
        lambda f: ("integrate", "--rna", f / "gex_only.h5", "--atac", f / "gex_only.h5", "--genome-annotation",
                   f / "genes.bed", "--out", "res.h5mu", "--quiet"),
        ["--atac", "gex_only.h5", "holds no 'atac' feature type", "['Gene Expression']"]),
    "peaks from a CITE-seq 10x h5 (cluster)": (
        lambda f: ("cluster", "--rna", f / "cite.h5", "--atac", f / "cite.h5", "--out", "res.h5mu", "--quiet"),
        ["--atac", "cite.h5", "holds no 'atac'", "'Antibody Capture'", "cite.h5:NAME"]),
    "peaks from a CITE-seq mtx folder (gene-activity)": (
        lambda f: ("gene-activity", "--peaks", f / "cite_mtx", "--annotation", f / "genes.bed", "--out", "g.h5ad"),
        ["--peaks", "cite_mtx", "holds no 'atac'", "'Gene Expression', 'Antibody Capture'"]),
    "unknown feature type": (lambda f: _integrate_rna(f, f"{f / 'cite.h5'}:CRISPR Guide Capture"),
                             ["--rna", "holds no 'CRISPR Guide Capture' feature type"]),
    "unknown h5mu modality": (lambda f: _integrate_rna(f, f"{f / 'cite.h5mu'}:atac"),
                              ["--rna", "cite.h5mu", "holds no 'atac' modality", "['rna', 'prot']"]),
    "h5mu without the modality (cluster)": (
        lambda f: ("cluster", "--rna", f / "cite.h5mu", "--atac", f / "cite.h5mu", "--out", "res.h5mu", "--quiet"),
        ["--atac", "holds no 'atac' modality", "['rna', 'prot']"]),
    "modality of a one-modality file": (lambda f: _integrate_rna(f, f"{f / 'rna.h5ad'}:rna"),
                                        ["rna.h5ad", "holds one modality", "remove ':rna'"]),
    "scMDC file without X2": (
        lambda f: ("cluster", "--rna", f / "x1_only.h5", "--adt", f / "x1_only.h5", "--out", "r.h5mu", "--quiet"),
        ["x1_only.h5", "lacks dataset(s) ['X2']"]),
    "scMDC file with unequal cells": (
        lambda f: ("cluster", "--rna", f / "scmdc_mismatch.h5", "--adt", f / "scmdc_mismatch.h5", "--out", "r.h5mu"),
        ["scmdc_mismatch.h5", "as many cells"]),
    # layers
    "layer the RNA lacks": (
        lambda f: ("integrate", "--rna", f / "rna.h5ad", "--adt", f / "adt.h5ad", "--layer-rna", "counts",
                   "--out", "res.h5mu", "--quiet"),
        ["--layer-rna counts", "rna.h5ad has no layer 'counts'", "leave --layer-rna out"]),
    "layer the peaks lack": (
        lambda f: ("integrate", "--rna", f / "rna.h5ad", "--atac", f / "atac.h5ad", "--layer-atac", "raw",
                   "--genome-annotation", f / "genes.bed", "--out", "res.h5mu", "--quiet"),
        ["--layer-atac raw", "atac.h5ad has no layer 'raw'"]),
    "layer of an input not given": (
        lambda f: ("integrate", "--rna", f / "rna.h5ad", "--adt", f / "adt.h5ad", "--layer-atac", "counts",
                   "--out", "res.h5mu", "--quiet"),
        ["--layer-atac counts", "applies to --atac, which was not given", "--layer-adt"]),
    "two layers for one input": (
        lambda f: ("cluster", "--rna", f / "rna.h5ad", "--adt", f / "adt.h5ad", "--layer-adt", "c",
                   "--layer-other", "c", "--out", "res.h5mu", "--quiet"),
        ["--layer-adt", "--layer-other", "not both"]),
    "fragments without cells": (
        lambda f: ("integrate", "--rna", f / "rna.h5ad", "--fragments", f / "frag.tsv.gz", "--genome-annotation",
                   f / "genes.bed", "--out", "res.h5mu", "--quiet"),
        ["--fragments", "--cells"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error(run, files, case):
    build, words = CASES[case]
    rc, err = run(*build(files))
    assert rc == 2, err
    assert err.startswith(f"cellbridge {build(files)[0]}: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"


@pytest.mark.parametrize(("args", "words"), [
    (("gene-activity", "--peaks", "{d}/empty.h5ad", "--annotation", "{d}/genes.bed", "--out", "g.h5ad"),
     ["empty.h5ad", "0 bytes"]),
    (("evaluate", "{d}/truncated.h5mu", "--label", "cell_type"), ["truncated.h5mu", "truncated or damaged"]),
])
def test_no_traceback_in_a_real_process(files, tmp_path, args, words, listing):
    proc = subprocess.run([sys.executable, "-m", "cellbridge", *(a.format(d=files) for a in args)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert all(word in proc.stderr for word in words), proc.stderr
    assert listing(tmp_path) == []
