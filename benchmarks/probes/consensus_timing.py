"""Time and peak memory of ``cellbridge.tl.consensus_clusters`` (no training).

    python benchmarks/probes/consensus_timing.py --cells 10309 --runs 5 --clusters 15 [--max-cells 10000]

The labelings are a random partition into ``--clusters`` groups with 10% of the cells relabelled
at random in each run. Prints a provenance line, then one JSON line: seconds, the process's peak
RSS (GiB) before and after the call, and the ARI of the consensus to the partition
(results: ``benchmarks/results/probes/consensus_timing.jsonl``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import print_provenance  # noqa: E402
from _common import peak_rss_gib as _peak_gib  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=10_309)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clusters", type=int, default=15)
    ap.add_argument("--max-cells", type=int, default=None)
    args = ap.parse_args()
    print_provenance()
    from sklearn.metrics import adjusted_rand_score

    from cellbridge.tl.clustering import CONSENSUS_MAX_CELLS, consensus_clusters

    rng = np.random.default_rng(0)
    truth = rng.integers(0, args.clusters, args.cells)
    runs = []
    for _ in range(args.runs):
        lab = truth.copy()
        flip = rng.random(args.cells) < 0.1
        lab[flip] = rng.integers(0, args.clusters, flip.sum())
        runs.append(lab)
    max_cells = args.max_cells or CONSENSUS_MAX_CELLS
    before, t0 = _peak_gib(), time.perf_counter()
    labels = consensus_clusters(runs, args.clusters, max_cells=max_cells)
    seconds = time.perf_counter() - t0
    print(json.dumps({"cells": args.cells, "runs": args.runs, "clusters": args.clusters, "max_cells": max_cells,
                      "seconds": round(seconds, 2), "peak_rss_gib_before": round(before, 2),
                      "peak_rss_gib_after": round(_peak_gib(), 2),
                      "ari_to_partition": round(adjusted_rand_score(truth, labels), 4)}))


if __name__ == "__main__":
    main()
