"""Probe: can the number of clusters K be estimated from the data within ±20% on every shared set?

For each paired set, scMDCF's default inputs (RNA PCA, ATAC PCA of the HVF peaks or z-scored
proteins; ``prepare_paired``) are built and K is estimated on the RNA PCA and on the concatenated,
equally weighted PCAs by

- Leiden (igraph flavor, 15-NN UMAP-weighted graph) at fixed resolutions 0.5-3 (``*_r{res}``);
- the silhouette-best KMeans K over 2..60 (``*_silhouette``; silhouette on 3,000 sampled cells);
- the largest eigengap of the normalised Laplacian of the 15-NN graph among its 60 smallest
  eigenvalues, K >= 2 (``*_eigengap``);
- the most stable Leiden resolution: for each resolution, the mean ARI between three seeds; K of
  the most stable resolution among those with at least 3 clusters (``*_stable``).

The number found is compared with the number of annotated cell types. No training: this asks
whether any data-driven estimator lands near K on every set (the annotations differ in
granularity, from 7 coarse types in 6,661 cells to 41 fine types in 600 cells).

    OMP_NUM_THREADS=1 python benchmarks/probes/k_estimation.py [DATASET ...] > benchmarks/results/probes/k_estimation.jsonl
"""

from __future__ import annotations

import json
import sys
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DATASETS, load_paired, print_provenance  # noqa: E402

RESOLUTIONS = (0.5, 1.0, 1.5, 2.0, 3.0)
STABILITY_RESOLUTIONS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0)


def silhouette_k(X: np.ndarray, k_max: int = 60, seed: int = 0) -> int:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    sample = rng.choice(X.shape[0], size=min(3000, X.shape[0]), replace=False)
    best, best_k = -1.0, 2
    for k in range(2, min(k_max, X.shape[0] // 5) + 1):
        labels = KMeans(k, n_init=3, random_state=seed).fit_predict(X)
        s = silhouette_score(X[sample], labels[sample])
        if s > best:
            best, best_k = s, k
    return best_k


def eigengap_k(graph, n_eig: int = 60) -> int:
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    W = sp.csr_matrix(graph, dtype=np.float64)
    W = (W + W.T) / 2
    d = np.asarray(W.sum(axis=1)).ravel()
    inv = sp.diags(1 / np.sqrt(np.maximum(d, 1e-12)))
    # the largest eigenvalues of D^-1/2 W D^-1/2 are 1 - the smallest of the normalised Laplacian
    vals = eigsh(inv @ W @ inv, k=min(n_eig, W.shape[0] - 2), which="LA", return_eigenvectors=False)
    lap = np.sort(1 - vals)
    gaps = np.diff(lap)
    return int(np.argmax(gaps[1:]) + 2)  # K >= 2: the gap after the K-th eigenvalue


def stable_k(graph) -> tuple[int, float]:
    from sklearn.metrics import adjusted_rand_score

    from cellbridge.tl.clustering import leiden_on_graph

    best = (-1.0, 1, 0.0)
    for res in STABILITY_RESOLUTIONS:
        runs = [leiden_on_graph(graph, resolution=res, seed=s) for s in range(3)]
        k = int(np.median([np.unique(r).size for r in runs]))
        if k < 3:
            continue
        ari = float(np.mean([adjusted_rand_score(a, b) for a, b in combinations(runs, 2)]))
        if ari > best[0]:
            best = (ari, k, res)
    return best[1], best[2]


def main() -> None:
    from cellbridge.models.scmdcf._data import prepare_paired
    from cellbridge.neighbors import knn_graph
    from cellbridge.tl.clustering import leiden_on_graph

    warnings.simplefilter("ignore")
    print_provenance()
    for name in sys.argv[1:] or list(DATASETS):
        rna, other, spec = load_paired(name)
        r, o = prepare_paired(rna, other, modality=spec["modality"], rna_representation="pca",
                              atac_representation="pca", n_pcs=50, seed=0)
        unit = [x / np.sqrt((x ** 2).sum(axis=1).mean()) for x in (r.X, o.X)]
        row = {"dataset": name, "k_true": int(rna.obs[spec["label"]].nunique()), "n_cells": int(r.n_obs)}
        for rep, X in (("rna", np.asarray(r.X)), ("concat", np.hstack(unit))):
            graph = knn_graph(X, n_neighbors=15)
            for res in RESOLUTIONS:
                row[f"{rep}_r{res}"] = int(np.unique(leiden_on_graph(graph, resolution=res, seed=0)).size)
            row[f"{rep}_silhouette"] = silhouette_k(X)
            row[f"{rep}_eigengap"] = eigengap_k(graph)
            row[f"{rep}_stable"], row[f"{rep}_stable_resolution"] = stable_k(graph)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
