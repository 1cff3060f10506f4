"""Fraction of cross-modal MNN pairs that join cells of the same type (docs/methods.md, `mnn_rep`).

    python benchmarks/mnn_pair_quality.py mop_snare
    python benchmarks/mnn_pair_quality.py teaseq_pbmc
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import cellbridge as cb
from cellbridge.pp.unpaired import prepare_unpaired

sys.path.insert(0, str(Path(__file__).parent))
from biclum_benchmark import load  # noqa: E402


def main(name: str) -> None:
    rna, other, spec = load(name)
    labels = rna.obs[spec["label"]].astype(str).to_numpy()
    data = prepare_unpaired(rna, other, modality=spec["modality"])
    for rep, (a, b) in {"scaled": data.shared_views(), "pca": data.shared_pca(50)}.items():
        for k in (5, 20, 50, 100):
            pairs = cb.pairs.mnn_pairs(a, b, k=k, method="exact")
            same = np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]])
            print(f"{name} {rep} k={k}: {len(pairs)} pairs, same type {same:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
