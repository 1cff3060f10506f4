"""Analysis tools on embeddings: clustering, label transfer, gene–peak links, marker genes, the
per-cluster regulatory read-out, and hand-offs to decoupler (TF activity) and liana (cell-cell
interactions) with gene-set enrichment of the markers."""

from ._enrichment import gene_set_enrichment
from ._handoffs import cell_interactions, tf_activity
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
    "cell_interactions",
    "consensus_clusters",
    "estimate_n_clusters",
    "gene_peak_links",
    "gene_set_enrichment",
    "kmeans",
    "leiden",
    "marker_agreement",
    "marker_genes",
    "regulatory_readout",
    "tf_activity",
    "transfer_labels",
]
