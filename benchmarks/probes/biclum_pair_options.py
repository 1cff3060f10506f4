"""Probe: do smoothing of the linked features and a CCA refinement give BiCLUM better cell pairs,
and a better integration?

``pairs`` mode: the fraction of MNN cell pairs that join cells of the same annotated type, and the
fraction of cells with a partner, for the default preset's cell pairs with every combination of the options
``mnn_smooth`` / ``pair_refine`` / ``cca_dims`` (no training). ``train`` mode: one BiCLUM
training with the given overrides and its label transfer (5-NN) both ways, MAP and FOSCTTM on
the embeddings (the pairing is used only for FOSCTTM; overrides are applied to the default preset,
so spell out every option that matters: the default changed while this probe was used)::

    OMP_NUM_THREADS=1 python benchmarks/probes/biclum_pair_options.py pairs teaseq_pbmc,mop_snare
    OMP_NUM_THREADS=1 python benchmarks/probes/biclum_pair_options.py train teaseq_pbmc 0 '{"mnn_smooth": 15}'
    python benchmarks/probes/biclum_pair_options.py summary benchmarks/results/probes/biclum_pair_options.jsonl 674198b

``summary FILE [COMMIT]`` reads ``train`` lines (those after a provenance line of ``COMMIT``, when
given) and prints, per override set and dataset, the mean over seeds and its change from the
``{}`` runs of the same seeds, then the mean change over the datasets.

Each line printed is one JSON record (the first is the provenance).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DATA, load_dataset, print_provenance  # noqa: E402

PAIR_VARIANTS = tuple(dict(mnn_smooth=s, pair_refine=r, cca_dims=d) for s, r, d in (
    (0, 0, 10), (15, 0, 10), (15, 1, 10), (15, 2, 10), (0, 1, 10), (15, 1, 20)))


def _inputs(name: str):
    import cellbridge as cb

    rna, other, spec, _ = load_dataset(name)
    if spec["modality"] == "atac":
        other = cb.pp.gene_activity(other, DATA / spec["annotation"])
    return rna, other, spec, rna.obs[spec["label"]].astype(str).to_numpy()


def pairs(names: str) -> None:
    from cellbridge.models.biclum import resolve_params
    from cellbridge.models.biclum._data import cell_pairs, prepare_unpaired

    for name in names.split(","):
        rna, other, spec, labels = _inputs(name)
        data = prepare_unpaired(rna, other, modality=spec["modality"], seed=0)
        for over in PAIR_VARIANTS:
            clock = time.perf_counter()
            found = cell_pairs(data, resolve_params("default", spec["modality"], over), 0)  # (rna, other)
            print(json.dumps(dict(dataset=name, over=over, n_pairs=len(found),
                                  label_precision=round(float(np.mean(labels[found[:, 0]] == labels[found[:, 1]])), 3),
                                  coverage=round((np.unique(found[:, 0]).size + np.unique(found[:, 1]).size)
                                                 / (2 * len(labels)), 3),
                                  seconds=round(time.perf_counter() - clock, 1))), flush=True)


def train(name: str, seed: int, over: dict) -> None:
    import torch

    import cellbridge as cb
    from cellbridge.metrics import foscttm, mean_average_precision, transfer_accuracy

    torch.set_num_threads(1)
    rna, other, spec, labels = _inputs(name)
    clock = time.perf_counter()
    model = cb.BiCLUM(rna, other, modality=spec["modality"], seed=seed, accelerator="cpu", **over).train(progress=False)
    z_other, z_rna = model.get_latent(other), model.get_latent(rna)
    seconds = time.perf_counter() - clock
    both = np.concatenate([labels, labels])
    print(json.dumps(dict(dataset=name, seed=seed, over=over,
                          o2r=round(transfer_accuracy(z_other, labels, z_rna, labels), 3),
                          r2o=round(transfer_accuracy(z_rna, labels, z_other, labels), 3),
                          map=round(mean_average_precision(np.vstack([z_other, z_rna]), both), 3),
                          foscttm=round(foscttm(z_other, z_rna), 3), pairs=len(model.cell_pairs),
                          epochs=model.train_summary_["epochs"], seconds=round(seconds))), flush=True)


def summary(path: str, commit: str | None = None) -> None:
    import pandas as pd

    rows, keep = [], commit is None
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "provenance" in record:
            keep = commit is None or record["provenance"]["commit"].startswith(commit)
        elif keep and "o2r" in record:
            rows.append({**record, "over": json.dumps(record["over"], sort_keys=True)})
    metrics = ["o2r", "r2o", "map", "foscttm"]
    runs = pd.DataFrame(rows).drop_duplicates(["over", "dataset", "seed"], keep="last")
    base = runs[runs["over"] == "{}"].set_index(["dataset", "seed"])[metrics]
    for over, group in runs.groupby("over", sort=False):
        group = group.set_index(["dataset", "seed"])[metrics]
        paired = group.join(base, rsuffix="_base", how="inner")
        print(over)
        for dataset, part in group.groupby(level="dataset"):
            line = " ".join(f"{m} {part[m].mean():.3f}" for m in metrics)
            if dataset in paired.index.get_level_values("dataset"):
                delta = paired.loc[dataset]
                line += " | change " + " ".join(f"{(delta[m] - delta[m + '_base']).mean():+.3f}" for m in metrics)
            print(f"  {dataset:22s} seeds {len(part)}: {line}")
        change = {m: (paired[m] - paired[m + "_base"]).groupby(level="dataset").mean().mean() for m in metrics}
        print("  mean change over the sets with {} runs: " + " ".join(f"{m} {v:+.4f}" for m, v in change.items()))


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    if sys.argv[1] == "summary":  # reads results, makes none: no provenance line
        summary(*sys.argv[2:4])
        sys.exit()
    print_provenance()
    if sys.argv[1] == "pairs":
        pairs(sys.argv[2])
    else:
        train(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
