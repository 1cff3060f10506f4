"""Preprocessing: gene annotation, gene activity (peaks / fragments), protein (CLR, protein -> gene),
and the preparation of unpaired (BiCLUM) and paired (scMDCF) inputs."""

from .annotation import match_annotation, read_gene_annotation
from .atac import gene_activity
from .paired import prepare_paired
from .protein import clr, protein_to_gene
from .unpaired import prepare_unpaired

__all__ = [
    "clr", "gene_activity", "match_annotation", "prepare_paired", "prepare_unpaired",
    "protein_to_gene", "read_gene_annotation",
]
