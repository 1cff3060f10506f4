"""Gene-peak links: planted links on synthetic data, bad inputs, and mop_snare (paired)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge._errors import CellBridgeInputError
from cellbridge.tl._links import _gc_from_fasta, candidate_pairs, gene_peak_links, matched_background
from cellbridge.tl._regulatory import READOUT_COLUMNS, regulatory_readout

N_GENES, N_PEAKS = 20, 400
PLANTED_GENE, PLANTED_PEAK, TRANS_PEAK = "Gene0", "chr1:1010000-1010400", "chr3:5000000-5000400"


def _annotation() -> pd.DataFrame:
    """Genes 0-9 on chr1, 10-19 on chr2, TSS every Mb (0-based start, + strand)."""
    chrom = ["chr1"] * 10 + ["chr2"] * 10
    start = [1_000_000 * (i % 10 + 1) for i in range(N_GENES)]
    return pd.DataFrame({"gene_name": [f"Gene{i}" for i in range(N_GENES)], "gene_id": np.nan,
                         "chrom": chrom, "start": start, "end": [s + 20_000 for s in start],
                         "strand": "+", "biotype": np.nan})


def _peaks(rng) -> list[str]:
    """Random peaks on chr1-chr4 (widths 100-1000), plus the planted cis and trans peaks."""
    names = {PLANTED_PEAK, TRANS_PEAK}
    while len(names) < N_PEAKS:
        c = rng.integers(1, 5)
        s = int(rng.integers(0, 11_000_000))
        names.add(f"chr{c}:{s}-{s + int(rng.integers(100, 1000))}")
    return sorted(names)


def _modality_counts(u: np.ndarray, peaks: list[str], rng, *, gene_rates, peak_rates):
    """RNA and ATAC counts of cells with latent factor ``u``; Gene0 and the planted peaks follow u."""
    n = len(u)
    lam_g = np.tile(gene_rates, (n, 1))
    lam_g[:, 0] = 3.0 * np.exp(0.9 * u)
    lam_p = np.tile(peak_rates, (n, 1))
    for name in (PLANTED_PEAK, TRANS_PEAK):
        lam_p[:, peaks.index(name)] = 1.0 * np.exp(0.9 * u)
    return rng.poisson(lam_g).astype(np.float32), rng.poisson(lam_p).astype(np.float32)


def _data(n: int = 600, seed: int = 0, *, paired: bool = True, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    peaks = _peaks(rng)
    gene_rates = rng.gamma(2.0, 1.0, N_GENES)
    peak_rates = rng.gamma(1.5, 0.4, N_PEAKS)
    genes = [f"Gene{i}" for i in range(N_GENES)]
    u_r = rng.normal(size=n)
    u_r[: n // 2] += shift  # cluster "a" (first half): Gene0 and the planted peaks up
    G, P = _modality_counts(u_r, peaks, rng, gene_rates=gene_rates, peak_rates=peak_rates)
    cells = [f"cell{i}" for i in range(n)]
    rna = ad.AnnData(sp.csr_matrix(G), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes))
    if paired:
        u_a = u_r
    else:  # other cells from the same distribution: the link is only seen through the embedding
        u_a = rng.normal(size=n)
        _, P = _modality_counts(u_a, peaks, rng, gene_rates=gene_rates, peak_rates=peak_rates)
    a_cells = cells if paired else [f"atac{i}" for i in range(n)]
    atac = ad.AnnData(sp.csr_matrix(P), obs=pd.DataFrame(index=a_cells), var=pd.DataFrame(index=peaks))
    # joint embedding: the latent factor plus noise dimensions
    rna.obsm["X_biclum"] = np.column_stack([u_r, 0.1 * rng.normal(size=(n, 3))])
    atac.obsm["X_biclum"] = np.column_stack([u_a, 0.1 * rng.normal(size=(n, 3))])
    half = np.where(np.arange(n) < n // 2, "a", "b")
    rna.obs["cluster"], atac.obs["cluster"] = half, half
    return rna, atac


# ------------------------------------------------------------------------------ planted links
@pytest.mark.parametrize("matrix", ["csr", "dense"])
def test_paired_planted_link_found(matrix):
    rna, atac = _data()
    if matrix == "dense":
        rna.X, atac.X = rna.X.toarray(), atac.X.toarray()
    before = rna.X.copy()
    links = gene_peak_links(rna, atac, _annotation(), paired=True, n_background=50)
    planted = links[(links.gene == PLANTED_GENE) & (links.peak == PLANTED_PEAK)]
    assert len(planted) == 1
    assert planted.fdr.iloc[0] < 1e-3 and planted.score.iloc[0] > 0.3
    assert planted.distance.iloc[0] == 1_010_200 - 1_000_000
    assert links.sort_values("zscore").iloc[-1].peak == PLANTED_PEAK  # the strongest link
    null = links[links.peak != PLANTED_PEAK]
    assert (null.fdr < 0.05).mean() < 0.05  # few false links among unrelated pairs
    assert (links.distance.abs() <= 500_000).all()
    assert list(links.columns[:9]) == ["gene", "peak", "chrom", "distance", "score", "zscore",
                                       "pvalue", "fdr", "n_groups"]
    assert (links.n_groups == rna.n_obs).all()  # single cells
    dense = (lambda m: m.toarray() if sp.issparse(m) else np.asarray(m))
    np.testing.assert_array_equal(dense(rna.X), dense(before))  # input untouched


def test_trans_peak_never_a_candidate():
    rna, atac = _data()
    links = gene_peak_links(rna, atac, _annotation(), paired=True, n_background=50, window=10_000_000)
    assert TRANS_PEAK not in set(links.peak)  # chr3 holds no gene
    assert (links.chrom.isin(["chr1", "chr2"])).all()
    assert (links.groupby("gene").chrom.nunique() == 1).all()


def test_unpaired_planted_link_through_embedding():
    rna, atac = _data(paired=False)
    links = gene_peak_links(rna, atac, _annotation(), n_groups=80, n_background=50)
    planted = links[(links.gene == PLANTED_GENE) & (links.peak == PLANTED_PEAK)]
    assert planted.fdr.iloc[0] < 0.01 and planted.score.iloc[0] > 0.7
    assert links.sort_values("zscore").iloc[-1].peak == PLANTED_PEAK
    assert 40 < links.n_groups.iloc[0] <= 80  # groups with cells of both modalities
    # random embedding (no shared structure): the planted link is lost
    rng = np.random.default_rng(1)
    rna.obsm["X_biclum"] = rng.normal(size=rna.obsm["X_biclum"].shape)
    atac.obsm["X_biclum"] = rng.normal(size=atac.obsm["X_biclum"].shape)
    null = gene_peak_links(rna, atac, _annotation(), n_groups=80, n_background=50)
    lost = null[(null.gene == PLANTED_GENE) & (null.peak == PLANTED_PEAK)]
    assert lost.fdr.iloc[0] > 0.05


def test_atac_embedding_from_result_and_groupby():
    rna, atac = _data(paired=False)
    result_atac = ad.AnnData(obs=atac.obs.iloc[::-1].copy())  # other order: matched by name
    result_atac.obsm["X_biclum"] = atac.obsm["X_biclum"][::-1]
    peaks_only = ad.AnnData(atac.X, obs=atac.obs[[]], var=atac.var)
    a = gene_peak_links(rna, peaks_only, _annotation(), atac_embedding=result_atac, n_groups=40,
                        n_background=50)
    b = gene_peak_links(rna, atac, _annotation(), n_groups=40, n_background=50)
    pd.testing.assert_frame_equal(a, b)
    per = gene_peak_links(rna, atac, _annotation(), groupby="cluster", n_groups=20, n_background=50)
    assert set(per.group) == {"a", "b"}
    assert per.groupby("group").size().min() > 0


def test_paired_metacells_and_logcpm():
    rna, atac = _data()
    links = gene_peak_links(rna, atac, _annotation(), paired=True, n_groups=40, n_background=50,
                            atac_normalization="logcpm")
    top = links.sort_values("score").iloc[-1]
    assert (top.gene, top.peak) == (PLANTED_GENE, PLANTED_PEAK)
    assert links.n_groups.iloc[0] == 40


def test_background_pvalue_is_calibrated_and_finds_the_planted_link():
    rna, atac = _data()
    links = gene_peak_links(rna, atac, _annotation(), paired=True, n_background=50, pvalue="background")
    planted = links[(links.gene == PLANTED_GENE) & (links.peak == PLANTED_PEAK)].iloc[0]
    n_null = 50 * len(links)  # pooled background z-scores
    # above all background z-scores but the few of the trans peak (chr3, also driven by the factor),
    # which serves as background of Gene0's peaks
    assert planted.pvalue <= 5 / (1 + n_null)
    assert planted.pvalue == links.pvalue.min()
    null = links[links.peak != PLANTED_PEAK]
    assert 0.02 < (null.pvalue < 0.1).mean() < 0.2  # ~0.1 expected: no link among these pairs
    assert links.attrs["gene_peak_links"]["pvalue"] == "background"
    with pytest.raises(CellBridgeInputError, match="`pvalue` must be one of"):
        gene_peak_links(rna, atac, _annotation(), paired=True, pvalue="empirical")


# ------------------------------------------------------------------------------ regulatory read-out
@pytest.mark.parametrize("cluster_specific", [True, False])
def test_regulatory_readout_finds_the_planted_element(cluster_specific):
    rna, atac = _data(n=800, shift=1.5)
    out = regulatory_readout(rna, atac, _annotation(), groupby="cluster", n_genes=3, n_background=50,
                             cluster_specific=cluster_specific)
    assert list(out.columns) == READOUT_COLUMNS
    hit = out[(out.group == "a") & (out.gene == PLANTED_GENE) & (out.peak == PLANTED_PEAK)]
    assert len(hit) == 1
    row = hit.iloc[0]
    assert row.gene_rank == 0 and row.link_fdr < 0.05 and row.candidate_cre
    assert row.peak_logfoldchange > 0 and row.peak_pvalue_adj < 0.05
    assert TRANS_PEAK not in set(out.peak.dropna())
    assert not out[(out.group == "b") & (out.gene == PLANTED_GENE)].size  # not a marker of b
    assert out.groupby("group").gene.nunique().eq(3).all()  # every marker listed, linked or not
    assert out.candidate_cre.sum() == out.attrs["regulatory_readout"]["n_candidates"] >= 1


def test_regulatory_readout_needs_pairs_and_clusters():
    rna, atac = _data(paired=False)
    with pytest.raises(CellBridgeInputError, match="needs paired data"):
        regulatory_readout(rna, atac, _annotation(), groupby="cluster")
    with pytest.raises(CellBridgeInputError, match="has no column 'leiden'"):
        regulatory_readout(rna, atac, _annotation(), groupby="leiden")


# ------------------------------------------------------------------------------ building blocks
def test_candidate_pairs_window_and_strand():
    genes = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [1000, 5000, 100],
                          "end": [2000, 9000, 200], "strand": ["+", "-", "+"]})
    chrom = np.array(["chr1", "chr1", "chr1", "chr2", "chr3"])
    start = np.array([900, 8000, 20_000, 0, 1000])
    end = np.array([1100, 8200, 20_200, 100, 1100])
    pairs = candidate_pairs(genes, chrom, start, end, window=1500)
    got = {(int(g), int(p)): int(d) for g, p, d in pairs.to_numpy()}
    # gene 0 (+, TSS 1000): peak 0 centre 1000 -> 0. Gene 1 (-, TSS 8999): peak 1 centre 8100
    # lies inside the gene body, 899 bp downstream in the gene's direction -> +899.
    assert got == {(0, 0): 0, (1, 1): 899, (2, 3): -50}


def test_background_on_other_chromosomes_and_matched():
    rng = np.random.default_rng(0)
    n = 3000
    acc, width = rng.random(n), rng.random(n)
    chrom = rng.choice(["chr1", "chr2", "chr3"], n)
    query = np.flatnonzero(chrom == "chr1")[:50]
    bg = matched_background(np.column_stack([acc, width]), chrom, query, 40)
    assert bg.shape == (50, 40)
    assert (chrom[bg] != "chr1").all()
    gap = np.abs(acc[bg] - acc[query][:, None]).mean()
    assert gap < 0.05  # random peaks would differ by ~1/3 on average
    with pytest.raises(CellBridgeInputError, match="outside chr1"):
        matched_background(np.column_stack([acc, width]), np.full(n, "chr1"), query, 40)


@pytest.mark.parametrize("gz", [False, True])
def test_gc_from_fasta(tmp_path, gz):
    import gzip

    text = b">chr1 description\nGGCC\nATat\n>2\nGGGG\n"
    path = tmp_path / ("genome.fa.gz" if gz else "genome.fa")
    path.write_bytes(gzip.compress(text) if gz else text)
    gc = _gc_from_fasta(path, np.array(["chr1", "chr1", "chr2"]), np.array([0, 2, 0]), np.array([4, 6, 2]))
    np.testing.assert_allclose(gc, [1.0, 0.5, 1.0])  # GGCC, CCAT, GG ("2" is chr2)


def test_gc_content_joins_the_background_match():
    rna, atac = _data()
    gc = np.random.default_rng(0).random(atac.n_vars)
    links = gene_peak_links(rna, atac, _annotation(), paired=True, n_background=50, gc_content=gc)
    assert links.attrs["gene_peak_links"]["matched_on"] == ["accessibility", "width", "gc"]
    top = links.sort_values("zscore").iloc[-1]
    assert (top.gene, top.peak) == (PLANTED_GENE, PLANTED_PEAK)
    with pytest.raises(CellBridgeInputError, match="one finite value per peak"):
        gene_peak_links(rna, atac, _annotation(), paired=True, gc_content=gc[:10])


# ------------------------------------------------------------------------------ bad inputs
def test_error_no_peak_within_window():
    rna, atac = _data()
    ann = _annotation().assign(chrom="chr9")  # genes where there are no peaks
    with pytest.raises(CellBridgeInputError, match="No peak centre lies within"):
        gene_peak_links(rna, atac, ann, paired=True)
    with pytest.raises(CellBridgeInputError, match="No peak centre lies within 1 bp"):
        gene_peak_links(rna, atac, _annotation().assign(start=lambda d: d.start + 777), paired=True,
                        window=1)


def test_error_peak_cells_not_in_embedding():
    rna, atac = _data(paired=False)
    result_atac = ad.AnnData(obs=pd.DataFrame(index=[f"other{i}" for i in range(atac.n_obs)]))
    result_atac.obsm["X_biclum"] = atac.obsm["X_biclum"]
    peaks_only = ad.AnnData(atac.X, obs=atac.obs[[]], var=atac.var)
    with pytest.raises(CellBridgeInputError, match="are not in the embedding"):
        gene_peak_links(rna, peaks_only, _annotation(), atac_embedding=result_atac)
    with pytest.raises(CellBridgeInputError, match="atac_embedding="):
        gene_peak_links(rna, peaks_only, _annotation())


def test_error_groups_with_a_single_modality():
    rna, atac = _data(paired=False)
    atac.obsm["X_biclum"] = atac.obsm["X_biclum"] + 100.0  # modalities apart: no mixed group
    with pytest.raises(CellBridgeInputError, match="BOTH modalities"):
        gene_peak_links(rna, atac, _annotation(), n_groups=20)


def test_error_annotation_of_another_species():
    rna, atac = _data()
    human = _annotation().assign(gene_name=lambda d: d.gene_name.str.upper())
    with pytest.raises(CellBridgeInputError, match="species"):
        gene_peak_links(rna, atac, human, paired=True)


def test_error_missing_embedding_and_pairing():
    rna, atac = _data(paired=False)
    del rna.obsm["X_biclum"]
    with pytest.raises(CellBridgeInputError, match="has no 'X_biclum'"):
        gene_peak_links(rna, atac, _annotation())
    with pytest.raises(CellBridgeInputError, match="no cell name of `rna`"):
        gene_peak_links(rna, atac, _annotation(), paired=True)
    rna, atac = _data()
    with pytest.raises(CellBridgeInputError, match="has no 'X_joint'"):
        gene_peak_links(rna, atac, _annotation(), use_rep="X_joint", paired=True, n_groups=10)


def test_error_bad_options():
    rna, atac = _data()
    with pytest.raises(CellBridgeInputError, match="atac_normalization"):
        gene_peak_links(rna, atac, _annotation(), paired=True, atac_normalization="tf-idf")
    with pytest.raises(CellBridgeInputError, match="n_background"):
        gene_peak_links(rna, atac, _annotation(), paired=True, n_background=1)
    with pytest.raises(CellBridgeInputError, match="has no column 'leiden'"):
        gene_peak_links(rna, atac, _annotation(), paired=True, groupby="leiden")


# ------------------------------------------------------------------------------ real data
def test_mop_snare_paired_subsample(shared_data):
    rna = ad.read_h5ad(shared_data / "mop_snare" / "rna.h5ad")
    atac = ad.read_h5ad(shared_data / "mop_snare" / "atac.h5ad")
    idx = np.sort(np.random.default_rng(0).choice(rna.n_obs, 2000, replace=False))
    rna, atac = rna[idx].copy(), atac[idx].copy()
    ann = shared_data / "annotation" / "mm10_genes.bed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        links = gene_peak_links(rna, atac, ann, paired=True)
        shuffled = atac.copy()
        shuffled.obs_names = atac.obs_names[np.random.default_rng(1).permutation(atac.n_obs)]
        null = gene_peak_links(rna, shuffled, ann, paired=True)
    assert len(links) > 5000 and links.gene.nunique() > 500
    assert links.score.between(-1, 1).all() and links.fdr.between(0, 1).all()
    assert (links.distance.abs() <= 500_000).all()
    sig = links[links.fdr < 0.05]
    assert len(sig) > 100
    # true pairing: several times the significant links of a random pairing of the same cells
    # (the z-scores of sparse single cells are heavy-tailed: the null is not free of links)
    assert len(sig) > 2 * (null.fdr < 0.05).sum()
    assert links.zscore.std() > null.zscore.std()
    # and significant links lie closer to the TSS than candidate pairs in general
    assert sig.distance.abs().median() < 0.6 * links.distance.abs().median()
