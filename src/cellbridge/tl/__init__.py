"""Analysis tools on embeddings: clustering, label transfer, gene–peak links, marker genes and the
per-cluster regulatory read-out."""

from ._links import gene_peak_links
from ._markers import marker_agreement, marker_genes
from ._regulatory import regulatory_readout
from .clustering import (
    consensus_clusters,
    estimate_n_clusters,
    kmeans,
    leiden,
)
from .transfer import transfer_labels

__all__ = [
    "transfer_labels", "leiden", "kmeans", "estimate_n_clusters", "consensus_clusters", "gene_peak_links",
    "marker_genes", "marker_agreement", "regulatory_readout",
]
