"""Gene activity from fragments files; the interval index against brute force."""

from __future__ import annotations

import gzip
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge.io import write_h5ad
from cellbridge.pp import gene_activity, read_gene_annotation
from cellbridge.pp.fragments import SegmentIndex, global_coords

ANN = pd.DataFrame({
    "gene_name": ["G1", "G2", "G3"], "gene_id": ["i1", "i2", "i3"],
    "chrom": ["chr1", "chr1", "chr2"], "start": [1000, 3000, 500], "end": [2000, 4000, 800],
    "strand": ["+", "-", "+"], "biotype": "protein_coding",
})
# upstream=100 regions: G1 [900, 2000), G2 [3000, 4100), G3 [400, 800). Deliberately unsorted.
FRAGMENTS = [
    ("chr2", 700, 900, "BBB"),     # G3 (insertion 700 in G3, 899 not)
    ("chr1", 1950, 3050, "AAA"),   # G1 and G2 (insertions 1950 -> G1, 3049 -> G2)
    ("chr2", 100, 200, "AAA"),     # nothing
    ("chr1", 850, 950, "BBB"),     # G1 (insertion 949 only)
    ("chr1", 4050, 4200, "AAA"),   # G2 (insertion 4050 only)
    ("chrUn_X", 0, 100, "AAA"),    # contig absent from the annotation
    ("chr1", 880, 905, "CCC"),     # barcode not among the cells
    ("chr1", 2000, 2500, "AAA"),   # between G1 and G2: nothing
    ("chr1", 1100, 1200, "BBB"),   # G1 (both insertions)
]
CELLS = ["AAA", "BBB", "DDD"]
EXPECTED_FRAGMENTS = np.array([[1, 2, 0], [2, 0, 1], [0, 0, 0]], dtype=np.float32)
EXPECTED_INSERTIONS = np.array([[1, 2, 0], [3, 0, 1], [0, 0, 0]], dtype=np.float32)


def write_fragments(path, rows=FRAGMENTS, *, mode="gzip", count=True, header=True,
                    chrom_prefix=True):
    lines = ["# id=test\n", "# reference_path=/x\n"] if header else []
    for c, s, e, b in rows:
        c = c if chrom_prefix else c.removeprefix("chr")
        lines.append(f"{c}\t{s}\t{e}\t{b}" + ("\t1\n" if count else "\n"))
    text = "".join(lines).encode()
    if mode == "plain":
        path.write_bytes(text)
    elif mode == "gzip":
        path.write_bytes(gzip.compress(text))
    else:  # bgzip-like: several concatenated gzip members
        half = len(text) // 2
        cut = text.index(b"\n", half) + 1
        path.write_bytes(gzip.compress(text[:cut]) + gzip.compress(text[cut:]))
    return path


@pytest.mark.parametrize("mode", ["gzip", "bgzip", "plain"])
@pytest.mark.parametrize("count", [True, False])
def test_hand_example(tmp_path, mode, count):
    path = write_fragments(tmp_path / "f.tsv.gz", mode=mode, count=count)
    out = gene_activity(annotation=ANN, fragments=path, cells=CELLS, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_FRAGMENTS)
    assert out.X.format == "csr" and out.X.dtype == np.float32
    assert out.obs_names.tolist() == CELLS and out.var_names.tolist() == ["G1", "G2", "G3"]
    rep = out.uns["gene_activity"]
    assert rep["n_fragments"] == 9 and rep["n_fragments_in_cells"] == 8
    assert rep["fraction_fragments_not_in_cells"] == pytest.approx(1 / 9)
    assert rep["contigs_absent_from_annotation"] == {"chrUn_X": 1}
    assert rep["n_fragments_used"] == 5


def test_insertions(tmp_path):
    path = write_fragments(tmp_path / "f.tsv.gz")
    out = gene_activity(annotation=ANN, fragments=path, cells=CELLS, upstream=100, insertions=True)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_INSERTIONS)
    assert "insertions" in out.uns["gene_activity"]["counted"]


def test_promoter_from_fragments(tmp_path):
    # promoters (TSS +- 100): G1 [900, 1100), G2 [3900, 4100), G3 [400, 600)
    path = write_fragments(tmp_path / "f.tsv.gz")
    out = gene_activity(annotation=ANN, fragments=path, cells=CELLS, method="promoter",
                        upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_comment_lines_mid_file_and_chrom_naming(tmp_path):
    rows = FRAGMENTS[:4] + [("#", 0, 0, "comment")] + FRAGMENTS[4:]
    path = tmp_path / "f.tsv"
    lines = [f"{c.removeprefix('chr')}\t{s}\t{e}\t{b}\t1\n" if c != "#" else "# a comment\n"
             for c, s, e, b in rows]
    path.write_text("#header\n" + "".join(lines))
    out = gene_activity(annotation=ANN, fragments=path, cells=CELLS, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_FRAGMENTS)
    assert out.uns["gene_activity"]["chromosome_renaming"] == {"1": "chr1", "2": "chr2"}


def test_archr_style_cell_names_and_cells_anndata(tmp_path):
    path = write_fragments(tmp_path / "f.tsv.gz")
    cells = ad.AnnData(obs=pd.DataFrame({"t": [1, 2, 3]}, index=[f"S1#{c}" for c in CELLS]))
    out = gene_activity(annotation=ANN, fragments=path, cells=cells, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_FRAGMENTS)
    assert out.obs_names.tolist() == cells.obs_names.tolist() and out.obs["t"].tolist() == [1, 2, 3]


def test_barcodes_not_in_data(tmp_path):
    path = write_fragments(tmp_path / "f.tsv.gz")
    out = gene_activity(annotation=ANN, fragments=path, cells=["AAA", "ZZZ"], upstream=100)
    assert out.uns["gene_activity"]["fraction_fragments_not_in_cells"] == pytest.approx(4 / 9)
    with pytest.raises(CellBridgeInputError, match=r"None of the 1 cell names \(e\.g\. \['ZZZ'\]\) is a barcode"):
        gene_activity(annotation=ANN, fragments=path, cells=["ZZZ"])  # the real cause, not a genome mismatch
    with pytest.raises(CellBridgeInputError, match="pass `cells`"):
        gene_activity(annotation=ANN, fragments=path)


def test_truncated_gzip_errors_and_writes_nothing(tmp_path):
    rows = FRAGMENTS * 20_000
    full = write_fragments(tmp_path / "full.tsv.gz", rows=rows).read_bytes()
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(full[: len(full) // 2])
    target = tmp_path / "ga.h5ad"
    with pytest.raises(CellBridgeInputError, match="truncated or corrupt"):
        write_h5ad(gene_activity(annotation=ANN, fragments=bad, cells=CELLS, chunk_size=10_000),
                   target)
    assert not target.exists()
    with pytest.raises(CellBridgeInputError, match="does not exist"):
        gene_activity(annotation=ANN, fragments=tmp_path / "nope.tsv.gz", cells=CELLS)


def test_malformed_line(tmp_path):
    path = tmp_path / "f.tsv"
    path.write_text("chr1\t10\t20\tAAA\t1\nchr1\tten\t20\tAAA\t1\n")
    with pytest.raises(CellBridgeInputError, match="Cannot parse"):
        gene_activity(annotation=ANN, fragments=path, cells=CELLS)


def test_archr_from_fragments_hand_example(tmp_path):
    ann = pd.DataFrame({"gene_name": ["A", "B"], "chrom": "chr1", "start": [10_000, 30_000],
                        "end": [12_000, 31_000], "strand": ["+", "+"]})
    rows = [("chr1", 10_100, 10_300, "c1"), ("chr1", 14_000, 14_600, "c1")]
    rows += [("chr1", 10_100, 10_300, "c2")] * 3 + [("chr1", 14_000, 14_600, "c2")]
    path = write_fragments(tmp_path / "f.tsv.gz", rows=rows)
    out = gene_activity(annotation=ann, fragments=path, cells=["c1", "c2"], method="archr",
                        archr_options={"gene_upstream": 0})
    # weights 5 (A, 2 kb) and 9 (B, 1 kb); windows A [0, 30000), B [12000, 131000).
    # tiles: 20 = [10000, 10500) inside A (d=0); 28 = [14000, 14500), 29 = [14500, 15000).
    e1 = np.exp(-1)
    far_a = (np.exp(-2000 / 5000) + e1 + np.exp(-2500 / 5000) + e1) * 5
    far_b = (np.exp(-15500 / 5000) + e1 + np.exp(-15000 / 5000) + e1) * 9
    expected = []
    for tile20 in (2, 4):  # c1: 2 insertions; c2: 6 insertions capped at 4
        a, b = tile20 * (1 + e1) * 5 + far_a, far_b
        expected.append([a * 1e4 / (a + b), b * 1e4 / (a + b)])
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-5)


def _brute_pairs(regions, queries):
    return {(qi, ri) for qi, (qc, qs, qe) in enumerate(queries)
            for ri, (rc, rs, re_) in enumerate(regions) if qc == rc and qs < re_ and qe > rs}


def test_segment_index_matches_brute_force():
    rng = np.random.default_rng(0)
    n, m = 150, 1500
    rc, rs = rng.integers(0, 2, n), rng.integers(0, 20_000, n)
    re_ = rs + rng.choice([5, 300, 3000, 15_000], n)  # nested and overlapping regions
    qc, qs = rng.integers(0, 2, m), rng.integers(0, 25_000, m)
    qe = qs + rng.choice([1, 50, 500, 8000], m)
    index = SegmentIndex(rc, rs, re_)
    q0, q1 = global_coords(qc, qs), global_coords(qc, qe)
    qi, ri = index.pairs(q0, q1)
    got = set(zip(qi.tolist(), ri.tolist()))
    assert len(got) == len(qi)  # each pair found once
    assert got == _brute_pairs(list(zip(rc, rs, re_)), list(zip(qc, qs, qe)))
    r0, r1 = index.rows(q0, q1)
    np.testing.assert_array_equal(index.hits(r0, r1), np.bincount(qi, minlength=m))
    cells = rng.integers(0, 7, m)
    counts = index.row_matrices(cells, r0, r1, 7).toarray()
    brute = np.zeros((7, n))
    np.add.at(brute, (cells[qi], ri), 1)
    np.testing.assert_array_equal(counts, brute)


def test_pbmc_fragments_against_brute_force(shared_data):
    folder = shared_data / "pbmc_fragments_tiny"
    rna = ad.read_h5ad(folder / "rna.h5ad")  # obs_names 'PBSmall#T.1' <-> fragment barcode 'T.1'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellBridgeWarning)
        ann = read_gene_annotation(shared_data / "annotation" / "hg19_genes.bed")
    out = gene_activity(annotation=ann, fragments=folder / "fragments.tsv.gz", cells=rna)
    ins = gene_activity(annotation=ann, fragments=folder / "fragments.tsv.gz", cells=rna,
                        insertions=True)
    rep = out.uns["gene_activity"]
    assert out.shape[0] == 150 and rep["n_fragments"] == 29_399
    assert rep["fraction_fragments_not_in_cells"] == 0.0
    assert set(out.var["chrom"]) == {"chr5", "chr11"}
    assert (np.asarray(out.X.sum(axis=1)).ravel() > 0).all()

    frags = pd.read_csv(folder / "fragments.tsv.gz", sep="\t", header=None, comment="#")
    cell_pos = {name.split("#", 1)[1]: i for i, name in enumerate(rna.obs_names)}
    totals = np.asarray(out.X.sum(axis=0)).ravel()
    picked = list(out.var_names[np.argsort(-totals)[:12]]) + list(out.var_names[:8])
    genes = ann.set_index("gene_name").loc[picked]
    expected_f = np.zeros((150, len(picked)))
    expected_i = np.zeros((150, len(picked)))
    records = list(frags.itertuples(index=False))
    for j, (name, g) in enumerate(genes.iterrows()):
        lo, hi = (g.start - 2000, g.end) if g.strand == "+" else (g.start, g.end + 2000)
        for chrom, start, end, barcode, _ in records:
            if chrom != g.chrom:
                continue
            cell = cell_pos[barcode]
            if start < hi and end > lo:
                expected_f[cell, j] += 1
            expected_i[cell, j] += (lo <= start < hi) + (lo <= end - 1 < hi)
    np.testing.assert_array_equal(out[:, picked].X.toarray(), expected_f)
    np.testing.assert_array_equal(ins[:, picked].X.toarray(), expected_i)
    assert expected_f.sum() > 500
