"""Analysis tools on embeddings: label transfer, clustering."""
