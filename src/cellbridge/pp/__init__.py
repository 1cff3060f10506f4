"""Preprocessing, AnnData in and AnnData out: gene annotation, gene activity (peaks / fragments),
protein (CLR, protein -> gene), and paired inputs (modality, MuData splitting, cell alignment).

The models' own input preparation lives with each model (``cellbridge.models.biclum._data``,
``cellbridge.models.scmdcf._data``)."""

from .annotation import match_annotation, read_gene_annotation
from .atac import gene_activity
from .paired import align_cells, infer_modality, split_mudata
from .protein import clr, protein_to_gene

__all__ = [
    "align_cells", "clr", "gene_activity", "infer_modality", "match_annotation", "protein_to_gene",
    "read_gene_annotation", "split_mudata",
]
