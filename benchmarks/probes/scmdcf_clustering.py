"""Probe: train one scMDCF network (preset + overrides, ``n_models=1`` unless set) and score
several final clusterings of the same model (KMeans restarts, features = z or z with the
pre-fusion encoder outputs, DEC argmax).

    python benchmarks/probes/scmdcf_clustering.py DATASET --seed S [--preset default] [--set key=json ...]

Prints a provenance line, then one JSON line per clustering variant. Labels are used only for
scoring. Results: ``benchmarks/results/probes/clustering_mop_snare.jsonl`` and the tagged files
of the earlier round (``default2.jsonl``, ``zdim16b.jsonl``... listed in benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import block_scale, evaluate_labels, load_scmdcf, parse_set, print_provenance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--no-leiden", action="store_true")
    args = ap.parse_args()
    import torch
    from sklearn.cluster import KMeans

    import cellbridge as cb

    torch.set_num_threads(1)
    print_provenance()
    overrides = {"n_models": 1, **parse_set(args.set)}  # one network: the variants below use its z
    rna, other, label_key = load_scmdcf(args.dataset)
    k = int(rna.obs[label_key].nunique())
    t0 = time.perf_counter()
    model = cb.scMDCF(rna, other, n_clusters=k, preset=args.preset, seed=args.seed,
                      accelerator="cpu", **overrides).train(progress=False)
    train_s = time.perf_counter() - t0
    z = model.get_latent()
    module = model.module
    module.eval()
    with torch.no_grad():
        out = module(*model._source().rows(slice(None)))
    h_rna, h_oth = out["h_rna"].numpy(), out["h_other"].numpy()
    feats = {
        "z": z,
        "z_enc_scaled": np.hstack([block_scale(z), block_scale(h_rna), block_scale(h_oth)]),
        "z_enc_raw": np.hstack([z, h_rna, h_oth]),
    }
    variants = [("z", 20), ("z", 100), ("z_enc_scaled", 20), ("z_enc_scaled", 100), ("z_enc_raw", 20)]
    base = {"dataset": args.dataset, "seed": args.seed, "preset": args.preset, "overrides": overrides,
            "k": k, "train_s": round(train_s, 1), "weights": model.modality_weights_}

    def emit(cluster: str, labels: np.ndarray, **extra) -> None:
        scores = evaluate_labels(model.rna, label_key, labels)
        print(json.dumps({**base, "cluster": cluster, **extra,
                          **{m: round(float(v), 4) for m, v in scores.items()}}), flush=True)

    for feat, n_init in variants:
        emit(f"kmeans_{feat}_n{n_init}", KMeans(k, n_init=n_init, random_state=args.seed).fit_predict(feats[feat]))
    for cluster, labels in (("dec_argmax", model.predict_clusters("dec")),
                            ("kmeans_z_init_dec", model.predict_clusters("kmeans_dec_init"))):
        emit(cluster, labels, k_found=len(np.unique(labels)))
    if not args.no_leiden:
        labels = cb.tl.leiden(z, n_clusters=k, seed=args.seed, flavor="leidenalg")  # unweighted 15-NN graph
        emit("leiden_to_k_z", labels, k_found=len(np.unique(labels)))


if __name__ == "__main__":
    main()
