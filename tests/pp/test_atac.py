"""Gene activity from a peak matrix: hand-checked signac, promoter and archr examples."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge.io import write_h5ad
from cellbridge.pp import gene_activity, match_annotation, read_gene_annotation

ANN = pd.DataFrame({
    "gene_name": ["G1", "G2", "G3"],
    "gene_id": ["i1", "i2", "i3"],
    "chrom": ["chr1", "chr1", "chr2"],
    "start": [1000, 3000, 500],
    "end": [2000, 4000, 800],
    "strand": ["+", "-", "+"],
    "biotype": "protein_coding",
})
# With upstream=100 the signac regions are G1 [900, 2000), G2 [3000, 4100), G3 [400, 800).
PEAKS = [("chr1", 850, 950), ("chr1", 1950, 3050), ("chr1", 4050, 4200), ("chr1", 5000, 5100),
         ("chr2", 700, 900), ("chrUn_KI270302v1", 0, 100)]
COUNTS = np.array([[1, 2, 3, 4, 5, 6], [0, 1, 0, 0, 2, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
# G1 <- p0 + p1, G2 <- p1 + p2, G3 <- p4 (p3 overlaps nothing, p5 is on a contig absent from ANN)
EXPECTED_SIGNAC = np.array([[3, 5, 5], [1, 1, 2], [0, 0, 0]], dtype=np.float32)
# Promoters (TSS +- 100): G1 [900, 1100) <- p0, G2 [3900, 4100) <- p2, G3 [400, 600) <- none
EXPECTED_PROMOTER = np.array([[1, 3, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)

FORMATS = {"colon": "{}:{}-{}", "dash": "{}-{}-{}", "underscore": "{}_{}_{}"}
MATRICES = {"dense": np.asarray, "csr": sp.csr_matrix, "csc": sp.csc_matrix}


def make_atac(fmt: str = "colon", kind: str = "csr", var_cols: tuple | None = None,
              prefix: bool = True) -> ad.AnnData:
    chroms = [c if prefix else c.removeprefix("chr") for c, _, _ in PEAKS]
    names = [FORMATS[fmt].format(c, s, e) for c, (_, s, e) in zip(chroms, PEAKS)]
    var = pd.DataFrame(index=names)
    if var_cols is not None:
        var = pd.DataFrame(index=[f"peak{i}" for i in range(len(PEAKS))])
        var[var_cols[0]] = chroms
        var[var_cols[1]] = [s for _, s, _ in PEAKS]
        var[var_cols[2]] = [e for _, _, e in PEAKS]
    obs = pd.DataFrame({"label": ["a", "b", "c"]}, index=["c0", "c1", "c2"])
    return ad.AnnData(MATRICES[kind](COUNTS.copy()), obs=obs, var=var)


@pytest.mark.parametrize("kind", list(MATRICES))
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_signac_hand_example(kind, fmt):
    atac = make_atac(fmt, kind)
    out = gene_activity(atac, ANN, upstream=100)
    assert sp.isspmatrix_csr(out.X) or sp.issparse(out.X)
    assert out.X.dtype == np.float32 and out.X.format == "csr"
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)
    assert out.var_names.tolist() == ["G1", "G2", "G3"]
    assert out.var.loc["G2", ["chrom", "start", "end", "strand"]].tolist() == ["chr1", 3000, 4000, "-"]
    assert out.obs["label"].tolist() == ["a", "b", "c"]
    rep = out.uns["gene_activity"]
    assert rep["method"] == "signac" and rep["n_peaks"] == 6 and rep["n_peaks_used"] == 4
    assert rep["contigs_absent_from_annotation"] == {"chrUn_KI270302v1": 1}
    assert rep["n_genes_with_signal"] == 3


@pytest.mark.parametrize("cols", [("chrom", "start", "end"), ("chr", "start", "end"),
                                  ("chrom", "chromStart", "chromEnd")])
def test_var_columns(cols):
    out = gene_activity(make_atac(var_cols=cols), ANN, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)


def test_promoter_hand_example():
    out = gene_activity(make_atac(), ANN, method="promoter", upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_PROMOTER)


@pytest.mark.parametrize("prefix_data, prefix_ann", [(False, True), (True, False)])
def test_chromosome_naming_reconciled(prefix_data, prefix_ann):
    ann = ANN if prefix_ann else ANN.assign(chrom=ANN["chrom"].str.removeprefix("chr"))
    out = gene_activity(make_atac(prefix=prefix_data), ann, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)
    assert out.uns["gene_activity"]["chromosome_renaming"]


def test_inputs_not_modified():
    atac, ann = make_atac(kind="csr"), ANN.copy()
    before_X, before_var = atac.X.copy(), atac.var.copy()
    gene_activity(atac, ann, upstream=100)
    assert (atac.X != before_X).nnz == 0
    pd.testing.assert_frame_equal(atac.var, before_var)
    pd.testing.assert_frame_equal(ann, ANN)


def test_annotation_from_path(tmp_path):
    bed = tmp_path / "genes.bed"
    ANN[["chrom", "start", "end", "gene_name", "strand"]].to_csv(bed, sep="\t", header=False,
                                                                 index=False)
    out = gene_activity(make_atac(), bed, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)
    assert "not applied" in out.uns["gene_activity"]["biotype_filter"]


def test_result_writes_to_h5ad(tmp_path):
    out = gene_activity(make_atac(), ANN, upstream=100)
    path = write_h5ad(out, tmp_path / "ga.h5ad")
    back = ad.read_h5ad(path)
    assert back.uns["gene_activity"]["n_peaks"] == 6
    np.testing.assert_array_equal(back.X.toarray(), EXPECTED_SIGNAC)


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_backed_peak_matrix_read_in_row_blocks(tmp_path, monkeypatch, kind):
    import functools

    import cellbridge.pp.atac as atac_module
    from cellbridge._validate import row_blocks

    make_atac(kind=kind).write_h5ad(tmp_path / "atac.h5ad")
    backed = ad.read_h5ad(tmp_path / "atac.h5ad", backed="r")
    monkeypatch.setattr(atac_module, "row_blocks", functools.partial(row_blocks, rows=2))  # 2 blocks
    out = gene_activity(backed, ANN, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)


def test_non_integer_counts_point_to_layer():
    atac = make_atac(kind="dense")
    atac.X = atac.X * 0.5
    with pytest.raises(CellBridgeInputError, match='layer="counts"'):
        gene_activity(atac, ANN)
    atac.layers["counts"] = COUNTS.copy()
    out = gene_activity(atac, ANN, upstream=100, layer="counts")
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)


def test_bad_inputs():
    atac = make_atac()
    atac.var_names = [f"peak{i}" for i in range(atac.n_vars)]
    with pytest.raises(CellBridgeInputError, match="'peak0'.*chr1:100-200"):
        gene_activity(atac, ANN)
    with pytest.raises(CellBridgeInputError, match="chromosome naming"):
        gene_activity(make_atac(), ANN.assign(chrom="chr9"))
    with pytest.raises(CellBridgeInputError, match="Unknown method"):
        gene_activity(make_atac(), ANN, method="maestro")
    with pytest.raises(CellBridgeInputError, match="Pass `annotation`"):
        gene_activity(make_atac())
    with pytest.raises(CellBridgeInputError, match="read_gene_annotation"):
        gene_activity(make_atac(), ANN.drop(columns="strand"))
    with pytest.raises(CellBridgeInputError, match="Unknown archr_options"):
        gene_activity(make_atac(), ANN, method="archr", archr_options={"decay_bp": 1})


def test_archr_hand_example():
    """2 genes, 3 peaks; weights computed by hand from the documented model."""
    ann = pd.DataFrame({"gene_name": ["A", "B"], "chrom": "chr1", "start": [1000, 2500],
                        "end": [2000, 3000], "strand": ["+", "-"]})
    peaks = ["chr1:500-600", "chr1:2100-2200", "chr1:3500-3600"]
    counts = np.array([[1, 1, 1], [2, 0, 0], [0, 0, 0]], dtype=np.float32)
    atac = ad.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=peaks))
    opts = {"gene_upstream": 0, "extend_min": 100, "extend_max": 1000}
    out = gene_activity(atac, ann, method="archr", archr_options=opts)
    # length weights: m = 1/1000 (A), 1/500 (B); 1 + m * 4 / (1/500 - 1/1000) -> 5 and 9.
    # windows: A [0, 2500) (stops at B's start), B [2000, 4000) (starts at A's end).
    e1 = np.exp(-1)
    w_a0 = (np.exp(-400 / 5000) + e1) * 5  # p0: 400 bp left of A
    w_a1 = (np.exp(-100 / 5000) + e1) * 5  # p1: 100 bp right of A
    w_b1 = (np.exp(-300 / 5000) + e1) * 9  # p1: 300 bp left of B
    w_b2 = (np.exp(-500 / 5000) + e1) * 9  # p2: 500 bp right of B; outside A's window
    raw = np.array([[w_a0 + w_a1, w_b1 + w_b2], [2 * w_a0, 0.0], [0.0, 0.0]])
    total = raw.sum(axis=1, keepdims=True)
    expected = np.divide(raw * 1e4, total, out=np.zeros_like(raw), where=total > 0)
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-5)
    assert out.uns["gene_activity"]["n_peaks_used"] == 3


def test_archr_gene_body_and_upstream_extension():
    """Default gene_upstream=5000: a peak 3 kb upstream of a + gene counts as inside (d = 0)."""
    ann = pd.DataFrame({"gene_name": ["A", "B"], "chrom": "chr1", "start": [10_000, 50_000],
                        "end": [12_000, 51_000], "strand": ["+", "+"]})
    atac = ad.AnnData(np.array([[1.0, 0.0]], dtype=np.float32),
                      var=pd.DataFrame(index=["chr1:7000-7100", "chr1:1-2"]))
    raw = gene_activity(atac, ann, method="archr", archr_options={"scale_to": 1.0})
    # only gene A sees the peak (B's window starts at A's end): all of the cell's score is A's
    np.testing.assert_allclose(raw.X.toarray(), [[1.0, 0.0]], rtol=1e-6)


def test_mop_snare_smoke(shared_data):
    atac = ad.read_h5ad(shared_data / "mop_snare" / "atac.h5ad")
    rna = ad.read_h5ad(shared_data / "mop_snare" / "rna.h5ad")
    ann = read_gene_annotation(shared_data / "annotation" / "mm10_genes.bed")
    rep_match = match_annotation(ann, rna.var_names)
    assert rep_match["fraction_matched"] > 0.9
    out = gene_activity(atac, ann)
    rep = out.uns["gene_activity"]
    assert out.shape[0] == 10_309 and out.X.format == "csr"
    assert out.obs_names.equals(atac.obs_names)
    assert rep["n_peaks"] == 25_734 and 20_000 < rep["n_peaks_used"] <= 25_734
    assert 1_000 < rep["n_genes_with_signal"] < out.n_vars
    assert rep["contigs_absent_from_annotation"] == {}
    # most peaks lie in gene regions, so most counts reach some gene
    assert out.X.sum() >= atac.X.sum() * 0.5
    shared = rna.var_names.intersection(out.var_names)
    assert len(shared) > 1_500


@pytest.mark.filterwarnings("ignore:Element")
def test_real_pbmc_multiome_underscore_names(shared_data):
    atac = ad.read_h5ad(shared_data / "pbmc_multiome_tiny" / "atac.h5ad")
    atac.var = atac.var[[]]  # force parsing of 'chr18_11980068_11982718' names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellBridgeWarning)
        ann = read_gene_annotation(shared_data / "annotation" / "hg38_genes.bed")
    out = gene_activity(atac, ann)
    assert out.shape[0] == 100 and out.uns["gene_activity"]["n_peaks_used"] > 5_000


def test_annotation_by_genome_name(tmp_path, monkeypatch):
    from cellbridge.pp import annotation as annot

    gtf = "".join(
        f'{r.chrom}\tT\tgene\t{r.start + 1}\t{r.end}\t.\t{r.strand}\t.\tgene_id "{r.gene_id}"; '
        f'gene_type "protein_coding"; gene_name "{r.gene_name}";\n' for r in ANN.itertuples())
    src = tmp_path / "mirror.gtf"
    src.write_text(gtf)
    monkeypatch.setitem(annot.GENOME_URLS, "mm10", src.as_uri())
    out = gene_activity(make_atac(), "GRCm38", upstream=100, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)


def test_duplicated_annotation_names_in_dataframe():
    dup = pd.concat([ANN, ANN.iloc[[0]].assign(chrom="chr1_alt", start=0, end=10)])
    with pytest.warns(CellBridgeWarning, match="1 gene names occur more than once"):
        out = gene_activity(make_atac(), dup, upstream=100)
    np.testing.assert_array_equal(out.X.toarray(), EXPECTED_SIGNAC)
