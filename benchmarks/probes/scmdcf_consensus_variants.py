"""Probe: train one scMDCF model per seed (``n_models=1``, each with its own preprocessing seed)
and compare ways to combine their labels: the co-association consensus of the default, an
aligned majority vote, and the Strehl & Ghosh (2002) choice of the candidate with the highest
average NMI to the members; also each member's Davies-Bouldin index on its own z.

    python benchmarks/probes/scmdcf_consensus_variants.py DATASET --seeds 0,1,2,3,4 [--set key=json ...]

Prints a provenance line, one JSON line per member, then one per combination. Labels are used only
for scoring. Results: ``benchmarks/results/probes/consensus_variants_DATASET.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import evaluate_labels, load_scmdcf, parse_set, print_provenance  # noqa: E402


def aligned_vote(labelings: list[np.ndarray], n_rounds: int = 3) -> np.ndarray:
    """Labels of the most central member (highest mean ARI to the others), then per-cell
    majority vote of all members after matching their clusters to it (Hungarian), repeated."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    codes = [np.unique(lab, return_inverse=True)[1].ravel() for lab in labelings]
    ref = codes[int(np.argmax([sum(adjusted_rand_score(a, b) for b in codes) for a in codes]))]
    for _ in range(n_rounds):
        votes = np.zeros((ref.size, max(c.max() for c in [ref, *codes]) + 1))
        for c in codes:
            size = max(c.max(), ref.max()) + 1
            table = np.zeros((size, size))
            np.add.at(table, (c, ref), 1)
            rows, cols = linear_sum_assignment(-table)
            mapping = np.empty(size, dtype=int)
            mapping[rows] = cols
            votes[np.arange(c.size), mapping[c]] += 1
        new = votes.argmax(axis=1)
        if np.array_equal(new, ref):
            break
        ref = new
    return ref


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    import torch
    from sklearn.metrics import davies_bouldin_score, normalized_mutual_info_score

    import cellbridge as cb
    from cellbridge.tl import consensus_clusters

    torch.set_num_threads(1)
    print_provenance()
    rna, other, label_key = load_scmdcf(args.dataset)
    k = int(rna.obs[label_key].nunique())
    members, prepared = [], None
    for seed in (int(s) for s in args.seeds.split(",")):
        model = cb.scMDCF(rna, other, n_clusters=k, seed=seed, accelerator="cpu",
                          **{**parse_set(args.set), "n_models": 1}).train(progress=False)
        labels, prepared = model.predict_clusters(), model.rna
        members.append(labels)
        scores = evaluate_labels(prepared, label_key, labels)
        print(json.dumps({"dataset": args.dataset, "member_seed": seed,
                          "davies_bouldin": round(float(davies_bouldin_score(model.get_latent(), labels)), 3),
                          **{m: round(float(v), 4) for m, v in scores.items()}}), flush=True)
    candidates = {"coassociation": consensus_clusters(members, k), "aligned_vote": aligned_vote(members)}
    candidates |= {f"member_{i}": lab for i, lab in enumerate(members)}
    mean_nmi = {name: float(np.mean([normalized_mutual_info_score(lab, m) for m in members]))
                for name, lab in candidates.items()}
    pick = max(mean_nmi, key=mean_nmi.get)
    for name in ("coassociation", "aligned_vote", pick):
        scores = evaluate_labels(prepared, label_key, candidates[name])
        print(json.dumps({"dataset": args.dataset, "seeds": args.seeds, "combination": name,
                          "picked_by_mean_nmi": name == pick, "mean_nmi_to_members": round(mean_nmi[name], 4),
                          **{m: round(float(v), 4) for m, v in scores.items()}}), flush=True)


if __name__ == "__main__":
    main()
