"""Gene annotation readers, named genomes (download via file://), chromosome reconciliation."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pandas as pd
import pytest

from cellbridge import CellBridgeInputError, CellBridgeWarning
from cellbridge.pp import annotation as annot
from cellbridge.pp import match_annotation, read_gene_annotation

GENCODE_GTF = """##description: GENCODE-style test file
chr1\tHAVANA\tgene\t101\t1000\t.\t+\t.\tgene_id "ENSG00000000001.5"; gene_type "protein_coding"; gene_name "AAA1"; level 2;
chr1\tHAVANA\ttranscript\t101\t1000\t.\t+\t.\tgene_id "ENSG00000000001.5"; transcript_id "ENST1"; gene_type "protein_coding"; gene_name "AAA1";
chr1\tHAVANA\texon\t101\t200\t.\t+\t.\tgene_id "ENSG00000000001.5"; transcript_id "ENST1"; gene_type "protein_coding"; gene_name "AAA1";
chr1\tHAVANA\tgene\t2001\t3000\t.\t-\t.\tgene_id "ENSG00000000002.1"; gene_type "lncRNA"; gene_name "LINC1";
chr2\tHAVANA\tgene\t501\t5000\t.\t-\t.\tgene_id "ENSG00000000003.2"; gene_type "protein_coding"; gene_name "BBB2";
"""

ENSEMBL_GTF = """#!genome-build GRCm38
1\tensembl\tgene\t11\t110\t.\t+\t.\tgene_id "ENSMUSG00000000001"; gene_version "4"; gene_name "Aaa1"; gene_source "ensembl"; gene_biotype "protein_coding";
1\tensembl\tgene\t1001\t1500\t.\t-\t.\tgene_id "ENSMUSG00000000002"; gene_version "1"; gene_source "ensembl"; gene_biotype "protein_coding";
MT\tensembl\tgene\t1\t70\t.\t+\t.\tgene_id "ENSMUSG00000000003"; gene_name "mt-Tf"; gene_biotype "Mt_tRNA";
"""

GENCODE_GFF3 = """##gff-version 3
chr1\tHAVANA\tgene\t101\t1000\t.\t+\t.\tID=ENSG00000000001.5;gene_id=ENSG00000000001.5;gene_type=protein_coding;gene_name=AAA1;level=2
chr1\tHAVANA\ttranscript\t101\t1000\t.\t+\t.\tID=ENST1;Parent=ENSG00000000001.5;gene_type=protein_coding;gene_name=AAA1
chrX\tHAVANA\tgene\t11\t20\t.\t-\t.\tID=ENSG00000000009.1;gene_id=ENSG00000000009.1;gene_type=protein_coding;gene_name=XXX9
"""

ENSEMBL_GFF3 = """##gff-version 3
##sequence-region   1 1 195471971
1\tensembl\tgene\t11\t110\t.\t+\t.\tID=gene:ENSMUSG00000000001;Name=Aaa1;biotype=protein_coding;gene_id=ENSMUSG00000000001;version=4
1\tensembl\tmRNA\t11\t110\t.\t+\t.\tID=transcript:ENSMUST1;Parent=gene:ENSMUSG00000000001;biotype=protein_coding
1\tensembl\tncRNA_gene\t201\t300\t.\t-\t.\tID=gene:ENSMUSG00000000005;Name=Gm5;biotype=lncRNA;gene_id=ENSMUSG00000000005
##FASTA
>1
ACGT
"""


def _write(path: Path, text: str, gz: bool = False) -> Path:
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_gencode_gtf(tmp_path, gz):
    path = _write(tmp_path / ("a.gtf.gz" if gz else "a.gtf"), GENCODE_GTF, gz)
    df = read_gene_annotation(path)
    assert list(df.columns) == annot.COLUMNS
    assert df["gene_name"].tolist() == ["AAA1", "BBB2"]  # lncRNA filtered out
    row = df.iloc[0]
    assert (row.chrom, row.start, row.end, row.strand) == ("chr1", 100, 1000, "+")
    assert row.gene_id == "ENSG00000000001"  # version stripped
    assert row.biotype == "protein_coding"
    assert len(read_gene_annotation(path, biotypes=None)) == 3


def test_ensembl_gtf_missing_names_and_biotype(tmp_path):
    path = _write(tmp_path / "m.gtf", ENSEMBL_GTF)
    df = read_gene_annotation(path, biotypes=None)
    assert df["gene_name"].tolist() == ["Aaa1", "ENSMUSG00000000002", "mt-Tf"]  # name <- id
    assert df["biotype"].tolist() == ["protein_coding", "protein_coding", "Mt_tRNA"]
    assert df.loc[0, "start"] == 10 and df.loc[0, "end"] == 110
    assert len(read_gene_annotation(path)) == 2


def test_gtf_without_gene_records_is_aggregated(tmp_path):
    lines = [ln for ln in GENCODE_GTF.splitlines() if "\tgene\t" not in ln]
    path = _write(tmp_path / "t.gtf", "\n".join(lines) + "\n")
    df = read_gene_annotation(path)
    assert df["gene_name"].tolist() == ["AAA1"]
    assert (df.loc[0, "start"], df.loc[0, "end"]) == (100, 1000)


@pytest.mark.parametrize("gz", [False, True])
def test_gff3_gencode_and_ensembl(tmp_path, gz):
    suffix = ".gff3.gz" if gz else ".gff3"
    gencode = read_gene_annotation(_write(tmp_path / f"g{suffix}", GENCODE_GFF3, gz))
    assert gencode["gene_name"].tolist() == ["AAA1", "XXX9"]
    assert gencode.loc[1, ["chrom", "start", "end", "strand"]].tolist() == ["chrX", 10, 20, "-"]
    ensembl = read_gene_annotation(_write(tmp_path / f"e{suffix}", ENSEMBL_GFF3, gz), biotypes=None)
    assert ensembl["gene_name"].tolist() == ["Aaa1", "Gm5"]
    assert ensembl["gene_id"].tolist() == ["ENSMUSG00000000001", "ENSMUSG00000000005"]
    assert ensembl["biotype"].tolist() == ["protein_coding", "lncRNA"]


def test_format_sniffed_without_extension(tmp_path):
    assert read_gene_annotation(_write(tmp_path / "genes.txt", GENCODE_GTF)).shape[0] == 2
    assert read_gene_annotation(_write(tmp_path / "genes2.txt", GENCODE_GFF3)).shape[0] == 2


BED_CASES = {
    "bed4": ("chr1\t100\t1000\tAAA1\n1\t2000\t3000\tBBB2\n", [None, None], [".", "."]),
    "bed5_strand": ("chr1\t100\t1000\tAAA1\t+\nchr1\t2000\t3000\tBBB2\t-\n", [None, None], ["+", "-"]),
    "bed6_ensembl": (
        "chr1\t100\t1000\tAAA1\tENSG00000000001\t+\nchr1\t2000\t3000\tBBB2\tENSG00000000002\t-\n",
        ["ENSG00000000001", "ENSG00000000002"], ["+", "-"]),
    "bed6_entrez": ("chr1\t100\t1000\tAAA1\t100287102\t+\nchr1\t2000\t3000\tBBB2\t653635\t-\n",
                    ["100287102", "653635"], ["+", "-"]),
    "bed6_score": ("chr1\t100\t1000\tAAA1\t0\t+\nchr1\t2000\t3000\tBBB2\t0\t-\nchr1\t5000\t6000\tC\t0\t+\n",
                   [None, None], ["+", "-"]),
    "bed_header": ("chrom\tstart\tend\tname\tstrand\nchr1\t100\t1000\tAAA1\t+\nchr1\t2000\t3000\tBBB2\t-\n",
                   [None, None], ["+", "-"]),
}


@pytest.mark.parametrize("case", list(BED_CASES))
@pytest.mark.parametrize("gz", [False, True])
def test_bed_variants(tmp_path, case, gz):
    text, ids, strands = BED_CASES[case]
    path = _write(tmp_path / ("g.bed.gz" if gz else "g.bed"), text, gz)
    df = read_gene_annotation(path)  # BED has no biotypes: the default filter keeps all
    assert df["gene_name"].tolist()[:2] == ["AAA1", "BBB2"]
    assert df["start"].tolist()[:2] == [100, 2000] and df["end"].tolist()[:2] == [1000, 3000]
    assert df["strand"].tolist()[:2] == strands
    got_ids = [None if pd.isna(x) else x for x in df["gene_id"].tolist()[:2]]
    assert got_ids == ids
    assert "not applied" in df.attrs["biotype_filter"]


def test_duplicated_names_keep_primary_then_longest(tmp_path):
    text = ("chr1_KI270706v1_random\t0\t90000\tDUP\t+\n"  # longest but not primary
            "chr1\t100\t200\tDUP\t+\n"
            "chr2\t100\t900\tDUP\t-\n"  # primary and longest among primary
            "chr3\t5\t50\tTWO\t+\nchr3\t5\t50\tTWO\t+\nchr4\t1\t2\tONE\t+\n")
    with pytest.warns(CellBridgeWarning, match="2 gene names occur more than once"):
        df = read_gene_annotation(_write(tmp_path / "d.bed", text))
    assert df["gene_name"].tolist() == ["DUP", "TWO", "ONE"]
    assert df.set_index("gene_name").loc["DUP", "chrom"] == "chr2"


def test_biotype_without_match_errors(tmp_path):
    path = _write(tmp_path / "a.gtf", GENCODE_GTF)
    with pytest.raises(CellBridgeInputError, match="biotypes=None"):
        read_gene_annotation(path, biotypes=("miRNA",))


def test_gene_id_as_name(tmp_path):
    df = read_gene_annotation(_write(tmp_path / "a.gtf", GENCODE_GTF), gene_id_as_name=True)
    assert df["gene_name"].tolist() == ["ENSG00000000001", "ENSG00000000003"]
    with pytest.raises(CellBridgeInputError, match="no gene ids"):
        read_gene_annotation(_write(tmp_path / "b.bed", BED_CASES["bed4"][0]), gene_id_as_name=True)


def test_missing_file_and_unknown_genome():
    with pytest.raises(CellBridgeInputError, match="does not exist"):
        read_gene_annotation("/no/such/genes.gtf")
    with pytest.raises(CellBridgeInputError, match="known names.*hg38.*mm10"):
        read_gene_annotation("hg99")


def test_named_genome_download_via_file_url(tmp_path, monkeypatch):
    (tmp_path / "mirror").mkdir()
    src = _write(tmp_path / "mirror" / "gencode.test.gtf.gz", GENCODE_GTF, gz=True)
    monkeypatch.setitem(annot.GENOME_URLS, "hg38", src.as_uri())
    cache = tmp_path / "cache"
    df = read_gene_annotation("GRCh38", cache_dir=cache)  # alias, case-insensitive
    assert df["gene_name"].tolist() == ["AAA1", "BBB2"]
    files = sorted(p.name for p in cache.iterdir())
    assert files == ["hg38_gencode.test.gtf.gz"]  # no temporary files left behind
    src.unlink()  # the second call reads the cache only
    assert read_gene_annotation("hg38", cache_dir=cache).shape[0] == 2


def test_download_uses_env_cache_and_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBRIDGE_CACHE", str(tmp_path / "envcache"))
    monkeypatch.setitem(annot.GENOME_URLS, "mm10", (tmp_path / "missing.gtf.gz").as_uri())
    with pytest.raises(CellBridgeInputError, match="Could not download"):
        read_gene_annotation("mm10")
    assert not (tmp_path / "envcache").exists()  # nothing partial kept (not even the folder made for it)


def test_reconcile_chromosomes_both_ways():
    assert annot.reconcile_chromosomes(["1", "MT", "X", "chrUn"], ["chr1", "chrM", "chrX"]) == {
        "1": "chr1", "MT": "chrM", "X": "chrX"}
    assert annot.reconcile_chromosomes(["chr1", "chrM", "chr2"], ["1", "MT"]) == {
        "chr1": "1", "chrM": "MT"}
    assert annot.reconcile_chromosomes(["chr1"], ["chr1", "1"]) == {"chr1": "chr1"}  # exact wins


HUMAN = pd.DataFrame({"gene_name": ["CD3E", "CD4", "MS4A1", "LYZ", "NKG7"],
                      "gene_id": [f"ENSG0000000000{i}" for i in range(5)],
                      "chrom": "chr1", "start": 0, "end": 10, "strand": "+", "biotype": None})


def test_match_annotation_report_and_diagnoses():
    rep = match_annotation(HUMAN, ["CD3E", "CD4", "FOO"])
    assert rep["n_matched"] == 2 and rep["n_data_genes"] == 3
    assert rep["unmatched_examples"] == ["FOO"]
    with pytest.raises(CellBridgeInputError, match="another species"):
        match_annotation(HUMAN, ["Cd3e", "Cd4", "Ms4a1", "Lyz2", "Nkg7"])
    with pytest.raises(CellBridgeInputError, match="gene_id_as_name=True"):
        match_annotation(HUMAN, ["ENSG00000000000", "ENSG00000000001", "ENSG00000000002"])
    with pytest.raises(CellBridgeInputError, match="ENSMUSG.*another species"):
        match_annotation(HUMAN, ["ENSMUSG00000000001", "ENSMUSG00000000002"])
    no_ids = HUMAN.assign(gene_id=None)
    with pytest.raises(CellBridgeInputError, match="Ensembl gene ids.*symbols"):
        match_annotation(no_ids, ["ENSG00000000001", "ENSG00000000002"])


def test_real_bed_annotations(shared_data):
    ann_dir = shared_data / "annotation"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellBridgeWarning)
        hg38 = read_gene_annotation(ann_dir / "hg38_genes.bed")
        hg19 = read_gene_annotation(ann_dir / "hg19_genes.bed")
        mm10e = read_gene_annotation(ann_dir / "mm10_ensembl_genes.bed")
    assert 38_000 < len(hg38) <= 38_824 and hg38["gene_name"].is_unique
    assert hg19["gene_id"].str.isdigit().all()  # Entrez ids detected
    assert mm10e["gene_id"].str.startswith("ENSMUSG").all()
    assert set(hg38["strand"]) == {"+", "-"}
    assert hg38.set_index("gene_name").loc["CD3E", "chrom"] == "chr11"
