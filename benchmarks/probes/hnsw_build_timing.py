"""Time hnswlib index builds and queries (the MNN search's parameters) on clustered 50-d data.

Separates the MNN phase's cost from the rest of the scaling benchmark:

    python benchmarks/probes/hnsw_build_timing.py --sizes 100000 300000 1000000 --threads 2

Prints a provenance line, then one JSON line per size (the 10^6 re-timing is in
``benchmarks/results/scaling_recheck.json``).
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


def clustered(n: int, dim: int = 50, n_types: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` points around ``n_types`` random centres (unit noise), float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_types, dim))
    return (centres[rng.integers(0, n_types, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def main() -> None:
    from cellbridge.neighbors import hnsw_index, hnsw_query

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=30)
    args = parser.parse_args()
    print_provenance()
    for n in args.sizes:
        a, b = clustered(n, seed=1), clustered(n, seed=2)
        t = time.perf_counter()
        index = hnsw_index(b, n_threads=args.threads)
        build = time.perf_counter() - t
        t = time.perf_counter()
        hnsw_query(index, a, args.k, n_threads=args.threads)
        query = time.perf_counter() - t
        print(json.dumps({"n": n, "threads": args.threads, "build_s": build, "query_all_s": query}), flush=True)


if __name__ == "__main__":
    main()
