"""Probe: train the scMDCF default (an ensemble) at the true K once and score its consensus tree
cut at other cluster counts (to compare with baselines that stop at fewer clusters).

    python benchmarks/probes/scmdcf_consensus_cut.py DATASET --seed S --cuts 23,25 [--set key=json ...]

Prints a provenance line, then one JSON line per cut (the true K included). Labels are used only
for scoring. Results: ``benchmarks/results/probes/consensus_cut_bmmc_cite_small.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import evaluate_labels, load_scmdcf, parse_set, print_provenance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cuts", default="", help="comma-separated cluster counts besides the true K")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    import torch

    import cellbridge as cb
    from cellbridge.tl import consensus_clusters

    torch.set_num_threads(1)
    print_provenance()
    rna, other, label_key = load_scmdcf(args.dataset)
    k = int(rna.obs[label_key].nunique())
    model = cb.scMDCF(rna, other, n_clusters=k, seed=args.seed, accelerator="cpu",
                      **parse_set(args.set)).train(progress=False)
    members = model.member_clusters()
    for cut in [k, *(int(c) for c in args.cuts.split(",") if c)]:
        scores = evaluate_labels(model.rna, label_key, consensus_clusters(members, cut, seed=args.seed))
        print(json.dumps({"dataset": args.dataset, "seed": args.seed, "k_true": k, "cut": cut,
                          **{m: round(float(v), 4) for m, v in scores.items()}}), flush=True)


if __name__ == "__main__":
    main()
