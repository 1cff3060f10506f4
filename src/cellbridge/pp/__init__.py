"""Preprocessing: RNA, ATAC (gene activity, TF-IDF/LSI), protein (CLR, protein -> gene)."""
from .paired import prepare_paired
from .protein import clr, protein_to_gene
from .annotation import match_annotation, read_gene_annotation
from .atac import gene_activity
