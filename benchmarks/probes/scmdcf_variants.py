"""Probe: single scMDCF models with changed hyper-parameters on any set of the peer suites.

Each variant is a JSON object of ``cb.scMDCF`` keyword arguments (on top of the default preset and
the true K), trained for each seed and scored by NMI / ARI of ``predict_clusters()`` against the
annotation; the modality weights the model chose are recorded. Datasets are those of
``benchmarks/_common.load_dataset``, including the derived weak-linkage case ``teaseq_weak13``.

    OMP_NUM_THREADS=1 python benchmarks/probes/scmdcf_variants.py teaseq_weak13 0,1 \\
        '{"n_models": 1}' '{"n_models": 1, "z_dim": 16}' ... > benchmarks/results/probes/scmdcf_variants_weak13.jsonl

Prints a provenance line, then one JSON line per variant and seed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from _common import load_dataset, print_provenance  # noqa: E402


def main() -> None:
    import torch
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    import cellbridge as cb

    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    name, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    variants = [json.loads(v) for v in sys.argv[3:]]
    print_provenance()
    rna, other, spec, _ = load_dataset(name)
    truth = np.asarray(rna.obs[spec["label"]].astype(str))
    k = len(np.unique(truth))
    for variant in variants:
        for seed in seeds:
            start = time.perf_counter()
            model = cb.scMDCF(rna, other, n_clusters=k, seed=seed, **variant)
            model.train()
            labels = np.asarray(model.predict_clusters())
            print(json.dumps({"dataset": name, "variant": variant, "seed": seed, "k": k,
                              "nmi": round(float(normalized_mutual_info_score(truth, labels)), 3),
                              "ari": round(float(adjusted_rand_score(truth, labels)), 3),
                              "modality_weights": np.round(np.asarray(model.modality_weights_, float), 3).tolist(),
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
