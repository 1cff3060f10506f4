"""Probe: can the number of clusters K be estimated from the data within ±20% on every shared set?

For each paired set, scMDCF's default inputs (RNA PCA, ATAC PCA of the HVF peaks or z-scored
proteins; ``prepare_paired``) are built, and Leiden (igraph flavor, 15-NN UMAP-weighted graph)
is run at resolutions 0.5-3 on the RNA PCA and on the concatenated, equally weighted PCAs. The
number of communities is compared with the number of annotated cell types. No training: this
asks whether any fixed resolution lands near K on every set.

    OMP_NUM_THREADS=1 python benchmarks/probes/k_estimation.py > benchmarks/results/probes/k_estimation.jsonl
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DATASETS, load_paired, print_provenance  # noqa: E402

RESOLUTIONS = (0.5, 1.0, 1.5, 2.0, 3.0)


def main() -> None:
    from cellbridge.models.scmdcf._data import prepare_paired
    from cellbridge.neighbors import knn_graph
    from cellbridge.tl.clustering import leiden_on_graph

    warnings.simplefilter("ignore")
    print_provenance()
    for name, spec in DATASETS.items():
        rna, other, spec = load_paired(name)
        r, o = prepare_paired(rna, other, modality=spec["modality"], rna_representation="pca",
                              atac_representation="pca", n_pcs=50, seed=0)
        unit = [x / np.sqrt((x ** 2).sum(axis=1).mean()) for x in (r.X, o.X)]
        row = {"dataset": name, "k_true": int(rna.obs[spec["label"]].nunique()), "n_cells": int(r.n_obs)}
        for rep, X in (("rna", r.X), ("concat", np.hstack(unit))):
            graph = knn_graph(X, n_neighbors=15)
            for res in RESOLUTIONS:
                row[f"{rep}_r{res}"] = int(np.unique(leiden_on_graph(graph, resolution=res, seed=0)).size)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
