"""Probe: where does scMDCF's seed-to-seed spread on a large set come from?

For each seed, the default preset (one model above 5,000 cells) is trained with
``finetune_epochs=0``: pre-training is exactly the full run's (same seed, same order of random
draws), and ``predict_clusters()`` is then the KMeans (20 restarts) of the pre-trained embedding
that initialises DEC. Scored against the annotation beside, for the same embedding, four more
20-restart KMeans runs with other random states (is the spread in KMeans or in the embedding?)
and a full-covariance and a diagonal Gaussian mixture (does a clustering that allows unequal
cluster sizes and shapes do better?). Compare the first line of each seed with the full default
run of the paired peer suite (``benchmarks/results/peers/paired.json``, ``scmdcf_default``).

    OMP_NUM_THREADS=1 python benchmarks/probes/scmdcf_pretrain_variance.py mop_snare 0 1 2 \\
        > benchmarks/results/probes/scmdcf_pretrain_variance.jsonl

Prints a provenance line, then one JSON line per seed and clustering.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from _common import load_paired, print_provenance  # noqa: E402


def main() -> None:
    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.mixture import GaussianMixture

    import cellbridge as cb

    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    name, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
    print_provenance()
    rna, other, spec = load_paired(name)
    truth = np.asarray(rna.obs[spec["label"]].astype(str))
    k = len(np.unique(truth))

    def emit(seed: int, clustering: str, labels: np.ndarray, **extra) -> None:
        print(json.dumps({"dataset": name, "seed": seed, "k": k, "clustering": clustering,
                          "nmi": round(float(normalized_mutual_info_score(truth, labels)), 3),
                          "ari": round(float(adjusted_rand_score(truth, labels)), 3), **extra}), flush=True)

    for seed in seeds:
        start = time.perf_counter()
        model = cb.scMDCF(rna, other, n_clusters=k, seed=seed, finetune_epochs=0)
        model.train()
        z = np.asarray(model.get_latent())
        emit(seed, "pretrained_dec_init_kmeans", np.asarray(model.predict_clusters()),
             modality_weights=[round(float(w), 3) for w in model.modality_weights_],
             seconds=round(time.perf_counter() - start, 1))
        for state in range(4):
            km = KMeans(k, n_init=20, random_state=100 + state).fit(z)
            emit(seed, f"kmeans20_state{100 + state}", km.labels_, inertia=round(float(km.inertia_), 1))
        for cov in ("full", "diag"):
            gmm = GaussianMixture(k, covariance_type=cov, n_init=3, random_state=seed, reg_covar=1e-4)
            emit(seed, f"gmm_{cov}", gmm.fit_predict(z))


if __name__ == "__main__":
    main()
