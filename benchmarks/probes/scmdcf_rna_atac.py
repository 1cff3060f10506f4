"""Probe of the RNA+ATAC sets, where the default leaves ATAC out of the losses (weight < 0.2).

Two measurements behind docs/scmdcf.md ("RNA + ATAC") and benchmarks/README.md (history of the
scMDCF default):

- ``pcs``: KMeans (true K, 20 restarts) on the first ``d`` RNA principal components, the
  encoder's input, for d = 8 (the width of z), 16 and 50;
- ``gate``: the default with the dropped modality's input set to zero, so that the modality
  leaves the fused embedding as well as the losses.

    OMP_NUM_THREADS=1 python benchmarks/probes/scmdcf_rna_atac.py DATASET pcs --seeds 0,1,2
    OMP_NUM_THREADS=1 python benchmarks/probes/scmdcf_rna_atac.py DATASET gate --seeds 0,1,2,3,4

Other variants of the default are single benchmark workers, e.g. ``python
benchmarks/suites/scmdcf.py --worker mop_snare scmdcf_default true --seed 0 --set z_dim=32``.
Prints a provenance line, then one JSON line per run. Labels are used only for scoring. Results:
``benchmarks/results/probes/rna_atac_probe.jsonl`` (the worker runs: ``rna_atac_variants.jsonl``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import evaluate_labels, load_scmdcf, parse_set, print_provenance  # noqa: E402


def kmeans_on_pcs(rna, other, key: str, k: int, seed: int) -> list[dict]:
    from sklearn.cluster import KMeans

    from cellbridge.models.scmdcf._data import prepare_paired

    prna, _ = prepare_paired(rna, other, rna_representation="pca", n_pcs=50, seed=seed)
    rows = []
    for d in (8, 16, 50):
        labels = KMeans(k, n_init=20, random_state=seed).fit_predict(prna.X[:, :d])
        rows.append({"n_pcs": d, **evaluate_labels(prna, key, labels)})
    return rows


def gated_default(rna, other, key: str, k: int, seed: int, overrides: dict | None = None) -> list[dict]:
    import cellbridge as cb

    model = cb.scMDCF(rna, other, n_clusters=k, seed=seed, accelerator="cpu", **(overrides or {}))
    for w, prepared in zip(model.modality_weights_, (model.rna, model.other)):
        if w == 0:
            prepared.X = np.zeros_like(np.asarray(prepared.X))
    model.train(progress=False)
    return [{"weights": model.modality_weights_, **evaluate_labels(model.rna, key, model.predict_clusters())}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("probe", choices=("pcs", "gate"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", action="append", default=[], help="gate: scMDCF override key=json_value (none in the results)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print_provenance()
    rna, other, key = load_scmdcf(args.dataset)
    k = int(rna.obs[key].nunique())
    overrides = parse_set(args.set)
    for seed in map(int, args.seeds.split(",")):
        rows = (kmeans_on_pcs(rna, other, key, k, seed) if args.probe == "pcs"
                else gated_default(rna, other, key, k, seed, overrides))
        for row in rows:
            out = {"dataset": args.dataset, "probe": args.probe, "seed": seed, **row}
            print(json.dumps({a: round(float(b), 4) if isinstance(b, float) else b for a, b in out.items()}),
                  flush=True)


if __name__ == "__main__":
    main()
