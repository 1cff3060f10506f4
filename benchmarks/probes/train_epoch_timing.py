"""Time BiCLUM training epochs alone at a given size on the simulator (no MNN search).

The per-epoch cost depends on the number of cells and features, not on which cells are paired,
so the MNN search (the slow phase at 10^6 cells, timed in ``benchmarks/suites/scaling.py``) is
replaced by one random partner per cell. Used to re-time the 10^6 training epoch on an otherwise
idle machine (``benchmarks/results/scaling_recheck.json``).

    python benchmarks/probes/train_epoch_timing.py --sizes 100000 1000000 --threads 2

Prints a provenance line, then one JSON line per size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import SIM, print_provenance  # noqa: E402


def time_epochs(n: int, epochs: int, threads: int, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(threads)
    import cellbridge as cb
    from cellbridge.models.biclum import BiCLUM
    from cellbridge.models.biclum import _model

    sim = cb.datasets.simulate_multiome(n, seed=seed, **SIM)
    gam = cb.pp.gene_activity(sim["atac"], sim["annotation"])
    rna = sim["rna"]
    del sim
    rng = np.random.default_rng(seed)
    # BiCLUM.__init__ calls the module-level ``cell_pairs`` of its ``_model`` module
    _model.cell_pairs = lambda data, params, seed: np.column_stack([np.arange(n), rng.permutation(n)])
    model = BiCLUM(rna, gam, modality="atac", seed=seed)
    load = os.getloadavg()[0]
    summary = model.train(max_epochs=epochs, patience=epochs + 1, progress=False).train_summary_
    return {"n_cells_per_modality": n, "threads": threads, "epochs": summary["epochs"],
            "train_per_epoch_s": summary["seconds"] / summary["epochs"],
            "steps_per_epoch": 2 * n // model.params.batch_size, "load_start_end": [load, os.getloadavg()[0]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print_provenance()
    for n in args.sizes:
        t = time.perf_counter()
        rec = time_epochs(n, args.epochs, args.threads)
        rec["total_s"] = time.perf_counter() - t
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
