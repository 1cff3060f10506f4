"""Probe: how much cell-type information each representation keeps, apart from the clustering.

For each seed, one scMDCF network (default preset, ``n_models=1``) is trained twice from the
same seed: fully, and with ``finetune_epochs=0`` (its ``z`` is then the pre-trained embedding
the fine-tuning starts from, training being deterministic on CPU). Scored on the same cells:

- ``z_finetuned`` and ``z_pretrained``: the model's 8-d embeddings;
- ``rna_pcs50`` / ``rna_pcs8``: the encoder's RNA input (50 PCs) and its first 8 PCs;
- ``concat_pcs``: RNA input and other-modality input side by side, each block scaled to total
  variance 1 (what the concatenation baselines cluster).

Per representation: 15-NN label-transfer accuracy and macro F1 under 5-fold cross-validation
(stratified, shuffled with the seed), and KMeans (true K, 20 restarts) NMI / ARI.

    OMP_NUM_THREADS=1 python benchmarks/probes/scmdcf_information.py DATASET --seeds 0,1,2,3,4

Prints a provenance line, then one JSON line per (seed, representation). Labels are used only for
scoring. Results: ``benchmarks/results/probes/information.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import block_scale, evaluate_labels, load_scmdcf, parse_set, print_provenance  # noqa: E402


def knn_transfer(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """15-NN label transfer under 5-fold cross-validation."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # classes with fewer than 5 cells
        warnings.simplefilter("ignore", UserWarning)
        pred = cross_val_predict(KNeighborsClassifier(15), x, y, cv=folds)
    return {"knn_accuracy": round(float(accuracy_score(y, pred)), 4),
            "knn_macro_f1": round(float(f1_score(y, pred, average="macro")), 4)}


def representations(rna, other, k: int, seed: int, overrides: dict | None = None
                    ) -> tuple[dict[str, np.ndarray], object]:
    import cellbridge as cb

    def fit(finetune_epochs=None):
        model = cb.scMDCF(rna, other, n_clusters=k, seed=seed, accelerator="cpu", **{**(overrides or {}), "n_models": 1})
        return model.train(finetune_epochs=finetune_epochs, progress=False)

    model = fit()
    pcs, other_in = np.asarray(model.rna.X), np.asarray(model.other.X)
    reps = {"z_finetuned": model.get_latent(), "z_pretrained": fit(0).get_latent(),
            "rna_pcs50": pcs, "rna_pcs8": pcs[:, :8],
            "concat_pcs": np.hstack([block_scale(pcs), block_scale(other_in)])}
    return reps, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--set", action="append", default=[], help="scMDCF override key=json_value (none in the results)")
    args = ap.parse_args()
    import torch
    from sklearn.cluster import KMeans

    torch.set_num_threads(1)
    print_provenance()
    rna, other, key = load_scmdcf(args.dataset)
    k = int(rna.obs[key].nunique())
    for seed in (int(s) for s in args.seeds.split(",")):
        reps, model = representations(rna, other, k, seed, parse_set(args.set))
        y = model.rna.obs[key].astype(str).to_numpy()
        for name, x in reps.items():
            labels = KMeans(k, n_init=20, random_state=seed).fit_predict(x)
            row = {"dataset": args.dataset, "seed": seed, "representation": name, "dim": x.shape[1],
                   **knn_transfer(x, y, seed), **evaluate_labels(model.rna, key, labels)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
