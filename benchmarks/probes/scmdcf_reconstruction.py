"""Probe: does a run's reconstruction error rank single scMDCF runs by quality?

Trains one default model (``n_models=1``) per seed and prints its NMI / ARI, modality weights and
last pre-training epoch's loss terms; with ``--summary FILE`` prints instead the Spearman
correlation of each candidate score with NMI and ARI over the runs in FILE (this script's output).
This is the evidence behind ``ensemble_combine="select"`` (docs/scmdcf.md; the history in
benchmarks/README.md). Results:
``benchmarks/results/probes/reconstruction_{small,large}_sets.jsonl``.

    OMP_NUM_THREADS=1 python benchmarks/probes/scmdcf_reconstruction.py DATASET --seeds 0,1,2,3,4 > runs.jsonl
    python benchmarks/probes/scmdcf_reconstruction.py --summary runs.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import evaluate_labels, load_scmdcf, parse_set, print_provenance, read_jsonl  # noqa: E402


def run(dataset: str, seeds: list[int], overrides: dict | None = None) -> None:
    import torch

    import cellbridge as cb

    torch.set_num_threads(1)
    print_provenance()
    rna, other, key = load_scmdcf(dataset)
    k = int(rna.obs[key].nunique())
    for seed in seeds:
        model = cb.scMDCF(rna, other, n_clusters=k, seed=seed, accelerator="cpu",
                          **{**(overrides or {}), "n_models": 1}).train(progress=False)
        last = [h for h in model.history_ if h["phase"] == "pretrain"][-1]
        scores = evaluate_labels(model.rna, key, model.predict_clusters())
        print(json.dumps({"dataset": dataset, "seed": seed, "weights": model.modality_weights_,
                          **{m: round(float(v), 4) for m, v in scores.items()},
                          "pretrain_last": {t: float(last[t]) for t in ("rec_rna", "rec_other", "cl", "loss")}}),
              flush=True)


def summary(path: str) -> None:
    from scipy.stats import spearmanr

    rows = read_jsonl(path)  # the provenance line left out
    quality = {m: np.array([r[m] for r in rows]) for m in ("NMI", "ARI")}
    candidates = {
        "rec_rna": [r["pretrain_last"]["rec_rna"] for r in rows],
        "weighted_rec": [r["weights"][0] * r["pretrain_last"]["rec_rna"]
                         + r["weights"][1] * r["pretrain_last"]["rec_other"] for r in rows],
    }
    for name, values in candidates.items():
        print(json.dumps({"file": path, "runs": len(rows), "score": name,
                          **{f"spearman_{m}": round(float(spearmanr(values, q)[0]), 2) for m, q in quality.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", nargs="?")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--summary", default=None)
    ap.add_argument("--set", action="append", default=[], help="scMDCF override key=json_value (none in the results)")
    args = ap.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        run(args.dataset, [int(s) for s in args.seeds.split(",")], parse_set(args.set))


if __name__ == "__main__":
    main()
