"""Bit-identity check for the restructure (issue "One shape for both models").

Runs seeded CPU trainings of BiCLUM and scMDCF through the public API only, so the same script runs
on the commit before the restructure and on any later one, and saves every output array::

    python benchmarks/probes/restructure_bitcheck.py run OUT.npz      # on each commit
    python benchmarks/probes/restructure_bitcheck.py compare A.npz B.npz [REPORT.md]

To run it on the commit before the restructure (046fc9c), check that commit out in a worktree and
put its ``src`` first on ``PYTHONPATH`` (the script itself only uses the public API)::

    git worktree add /tmp/base 046fc9c
    PYTHONPATH=/tmp/base/src python benchmarks/probes/restructure_bitcheck.py run base.npz

Cases: TEA-seq (RNA + ADT) and a seeded 3,000-cell subsample of mop_snare (RNA + gene activity
from peaks; RNA + peaks for scMDCF); BiCLUM default and reference presets, scMDCF default with the
true K and with K estimated. Epochs are cut short (the code paths are the same as a full run).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import cellbridge as cb  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DATA, provenance, provenance_header  # noqa: E402

torch.set_num_threads(1)


def load():
    tea_rna = ad.read_h5ad(DATA / "teaseq_pbmc" / "rna.h5ad")
    tea_adt = ad.read_h5ad(DATA / "teaseq_pbmc" / "adt.h5ad")
    mop_rna = ad.read_h5ad(DATA / "mop_snare" / "rna.h5ad")
    mop_atac = ad.read_h5ad(DATA / "mop_snare" / "atac.h5ad")
    idx = np.sort(np.random.default_rng(0).choice(mop_rna.n_obs, 3000, replace=False))
    mop_rna, mop_atac = mop_rna[idx].copy(), mop_atac[idx].copy()
    gam = cb.pp.gene_activity(mop_atac, DATA / "annotation" / "mm10_genes.bed")
    return {"tea": (tea_rna, tea_adt, "protein"), "mop": (mop_rna, gam, "atac"), "mop_peaks": (mop_rna, mop_atac, "atac")}


def run(out: str) -> None:
    data = load()
    arrays: dict[str, np.ndarray] = {}
    for name in ("tea", "mop"):
        rna, other, modality = data[name]
        for preset, epochs in (("default", 5), ("reference", 2)):
            clock = time.perf_counter()
            model = cb.BiCLUM(rna, other, modality=modality, preset=preset, seed=0, accelerator="cpu")
            model.train(max_epochs=epochs, progress=False)
            key = f"biclum_{name}_{preset}"
            arrays[f"{key}_z_rna"] = model.get_latent(rna)
            arrays[f"{key}_z_other"] = model.get_latent(other)
            for m, frame in model.get_feature_embeddings().items():
                arrays[f"{key}_v_{m}"] = frame.to_numpy()
            print(f"{key}: {time.perf_counter() - clock:.1f} s", flush=True)
    k_true = {"tea": 11, "mop_peaks": 15}
    for name in ("tea", "mop_peaks"):
        rna, other, _ = data[name]
        for k in (k_true[name], None):
            clock = time.perf_counter()
            model = cb.scMDCF(rna, other, n_clusters=k, seed=0, accelerator="cpu")
            model.train(pretrain_epochs=20, finetune_epochs=10, progress=False)
            key = f"scmdcf_{name}_{'k' if k else 'estimated'}"
            arrays[f"{key}_z"] = model.get_latent()
            arrays[f"{key}_clusters"] = np.asarray(model.predict_clusters())
            print(f"{key}: {time.perf_counter() - clock:.1f} s, K={len(np.unique(arrays[key + '_clusters']))}", flush=True)
    np.savez(out, **arrays)


def compare(a: str, b: str, report: str | None = None) -> int:
    x, y = np.load(a), np.load(b)
    bad, lines = 0, []
    for key in sorted(set(x.files) | set(y.files)):
        if key not in x.files or key not in y.files:
            lines.append(f"MISSING  {key}")
            bad += 1
        elif x[key].shape != y[key].shape or not np.array_equal(x[key], y[key]):
            diff = np.abs(x[key].astype(float) - y[key].astype(float)).max() if x[key].shape == y[key].shape else "shape"
            lines.append(f"DIFFERS  {key}  max |diff| {diff}")
            bad += 1
        else:
            lines.append(f"same     {key}  {x[key].shape}")
    lines.append(f"{len(x.files) - bad} of {len(x.files)} arrays bit-identical")
    print("\n".join(lines))
    if report:
        Path(report).write_text(provenance_header(provenance()) + f"\nCompared `{a}` (before) with `{b}` (after).\n\n```\n"
                                + "\n".join(lines) + "\n```\n")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        sys.exit(compare(*sys.argv[2:5]))
