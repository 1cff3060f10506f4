"""Quality of cross-modal MNN pairs on real data: the fraction joining cells of the same type.

Part 1 compares the search spaces (`mnn_rep`: scaled shared features vs their joint PCA) with exact
search. Part 2 (`--searches`) compares exact, hnswlib and faiss IVF search on the joint PCA at
k=30 (the default preset's): pairs, same-type fraction, recall@k (rows of the other modality
querying RNA) against exact search. IVF is also run with lists of 100 cells so that a 10^4-cell set has as many lists as 10^5 cells have
with the default 1,000 (a harder, many-list regime).

    python benchmarks/probes/mnn_pair_quality.py mop_snare
    python benchmarks/probes/mnn_pair_quality.py mop_snare --searches

Prints a provenance line (JSON), then one text line per setting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import cellbridge as cb
from cellbridge.models.biclum._data import prepare_unpaired

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import load_unpaired, print_provenance  # noqa: E402


def compare_representations(name: str, data, labels: np.ndarray) -> None:
    for rep, (a, b) in {"scaled": data.shared_views(), "pca": data.shared_pca(50)}.items():
        for k in (5, 20, 50, 100):
            pairs = cb.neighbors.mnn_pairs(a, b, k=k, method="exact")
            same = np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]])
            print(f"{name} {rep} k={k}: {len(pairs)} pairs, same type {same:.3f}", flush=True)


def compare_searches(name: str, data, labels: np.ndarray, k: int = 30) -> None:
    a, b = data.shared_pca(50)
    searches = [("exact", {}), ("hnsw", {"ef": 50}), ("hnsw", {"ef": 200}), ("ivf", {"nprobe": 8}),
                ("ivf", {"nprobe": 8, "list_size": 100}), ("ivf", {"nprobe": 16, "list_size": 100})]
    exact = None
    for method, options in searches:
        t = time.perf_counter()
        a_to_b, b_to_a = _neighbours(b, a, k, method, options), _neighbours(a, b, k, method, options)
        pairs = cb.neighbors.mutual_pairs(a_to_b, b_to_a)
        seconds = time.perf_counter() - t
        exact = a_to_b if exact is None else exact  # the first search is the exact one
        same = np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]])
        partnered = (np.unique(pairs[:, 0]).size + np.unique(pairs[:, 1]).size) / (len(a) + len(b))
        setting = ", ".join(f"{key}={v}" for key, v in options.items())
        print(f"{name} k={k} {method} ({setting}): {len(pairs)} pairs, same type {same:.3f}, cells with a partner "
              f"{partnered:.3f}, recall@{k} {cb.neighbors.recall_at_k(exact, a_to_b):.3f}, {seconds:.1f} s", flush=True)


def _neighbours(reference: np.ndarray, query: np.ndarray, k: int, method: str, options: dict) -> np.ndarray:
    if method == "ivf":  # the list size is an index option, not a knn one
        index = cb.neighbors.ivf_index(reference, list_size=options.get("list_size", cb.neighbors.IVF_LIST_SIZE))
        return cb.neighbors.ivf_query(index, query, k, options["nprobe"])
    return cb.neighbors.knn(reference, query, k, method=method, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--searches", action="store_true", help="compare exact, hnswlib and IVF search")
    args = parser.parse_args()
    print_provenance()
    rna, other, spec = load_unpaired(args.dataset)
    labels = rna.obs[spec["label"]].astype(str).to_numpy()
    data = prepare_unpaired(rna, other, modality=spec["modality"])
    (compare_searches if args.searches else compare_representations)(args.dataset, data, labels)


if __name__ == "__main__":
    main()
