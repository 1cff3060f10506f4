"""Analysis tools on embeddings: label transfer, clustering."""

from .clustering import (
    consensus_clusters,
    estimate_n_clusters,
    kmeans,
    leiden,
)
from .transfer import transfer_labels

__all__ = ["transfer_labels", "leiden", "kmeans", "estimate_n_clusters", "consensus_clusters"]
