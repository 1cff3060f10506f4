"""Quality of cross-modal MNN pairs on real data: the fraction joining cells of the same type.

Part 1 compares the search spaces (`mnn_rep`: scaled shared features vs their joint PCA) with exact
search. Part 2 (`--searches`) compares exact, hnswlib and faiss IVF search on the joint PCA at
k=30 (the default preset's): pairs, same-type fraction, recall@k against exact search. IVF is
also run with lists of 100 cells so that a 10^4-cell set has as many lists as 10^5 cells have
with the default 1,000 (a harder, many-list regime).

    python benchmarks/mnn_pair_quality.py mop_snare
    python benchmarks/mnn_pair_quality.py mop_snare --searches
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import cellbridge as cb
from cellbridge.pp.unpaired import prepare_unpaired

sys.path.insert(0, str(Path(__file__).parent))
from biclum_benchmark import load  # noqa: E402


def compare_representations(name: str, data, labels: np.ndarray) -> None:
    for rep, (a, b) in {"scaled": data.shared_views(), "pca": data.shared_pca(50)}.items():
        for k in (5, 20, 50, 100):
            pairs = cb.pairs.mnn_pairs(a, b, k=k, method="exact")
            same = np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]])
            print(f"{name} {rep} k={k}: {len(pairs)} pairs, same type {same:.3f}", flush=True)


def compare_searches(name: str, data, labels: np.ndarray, k: int = 30) -> None:
    a, b = data.shared_pca(50)
    exact = cb.pairs.knn(b, a, k, method="exact")
    searches = [("exact", {}, None), ("hnsw", {"ef": 50}, None), ("hnsw", {"ef": 200}, None),
                ("ivf", {"nprobe": 8}, None), ("ivf", {"nprobe": 8}, 100), ("ivf", {"nprobe": 16}, 100)]
    for method, options, list_size in searches:
        cb.pairs.IVF_LIST_SIZE = list_size or 1_000
        t = time.perf_counter()
        pairs = cb.pairs.mnn_pairs(a, b, k=k, method=method, **options)
        seconds = time.perf_counter() - t
        found = cb.pairs.knn(b, a, k, method=method, **options)
        recall = np.mean([len(set(e) & set(f)) / k for e, f in zip(exact, found)])
        same = np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]])
        partnered = (np.unique(pairs[:, 0]).size + np.unique(pairs[:, 1]).size) / (len(a) + len(b))
        setting = ", ".join(f"{key}={v}" for key, v in options.items()) + (f", list={list_size}" if list_size else "")
        print(f"{name} k={k} {method} ({setting}): {len(pairs)} pairs, same type {same:.3f}, cells with a partner "
              f"{partnered:.3f}, recall@{k} {recall:.3f}, {seconds:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--searches", action="store_true", help="compare exact, hnswlib and IVF search")
    args = parser.parse_args()
    rna, other, spec = load(args.dataset)
    labels = rna.obs[spec["label"]].astype(str).to_numpy()
    data = prepare_unpaired(rna, other, modality=spec["modality"])
    (compare_searches if args.searches else compare_representations)(args.dataset, data, labels)


if __name__ == "__main__":
    main()
