"""Scaling benchmark of scMDCF on the built-in paired simulator at growing cell numbers.

Each size runs in its own subprocess so that peak RSS is per size. Phases timed: simulate,
prepare (``scMDCF(...)``: alignment, normalisation, HVF, per-batch scaling parameters, module),
pre-training per epoch, KMeans initialisation of the DEC centroids, fine-tuning per epoch,
embedding of all cells, final clustering (KMeans on z). NMI / ARI of the final clusters against
``obs["cell_type"]`` on all cells.

    OMP_NUM_THREADS=1 python benchmarks/suites/scmdcf_scaling.py --sizes 10000 100000 [1000000]
    python benchmarks/suites/scmdcf_scaling.py --sizes 10000 --modality adt --epochs 2

Results go to ``benchmarks/results/scmdcf_scaling.{json,md}`` (rows of other sizes/modalities
already there are kept; ``--out STEM`` writes elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import RESULTS, SIM, provenance, provenance_lines  # noqa: E402
from _common import peak_rss_gib as rss_gib  # noqa: E402


class Timer:
    """Wall-clock seconds of named phases."""

    def __init__(self):
        self.phases: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.phases[name] = round(time.perf_counter() - start, 2)
        return out


def run_size(n: int, modality: str, epochs: int, threads: int, seed: int = 0) -> dict:
    """Simulate ``n`` cells, train scMDCF (``epochs`` per phase) and time every phase.

    The phases are those of ``scMDCF.train`` (``cellbridge.models.scmdcf._training.fit_module``),
    called one by one so that each can be timed (one network: the default trains one above 5,000
    cells).
    """
    import torch

    torch.set_num_threads(threads)
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    import cellbridge as cb
    from cellbridge.models.scmdcf import _training as M
    from cellbridge.models.training import set_seed

    timer = Timer()
    data = timer("simulate", cb.datasets.simulate_multiome, n, seed=seed, **SIM)
    rss_data = rss_gib()
    other = data["atac"] if modality == "atac" else data["adt"]
    model = timer("prepare", cb.scMDCF, data["rna"], other, n_clusters=SIM["n_types"], seed=seed,
                  accelerator="cpu")
    labels_true = data["rna"].obs["cell_type"].to_numpy()
    del data, other
    cfg = model.train_settings(epochs, epochs)
    source = model._source()
    gen = torch.Generator().manual_seed(seed)
    set_seed(seed)
    history = timer("pretrain", M.pretrain, model.module, source, cfg, gen, False)
    z = timer("embed_for_init", M.embed, model.module, source).numpy()
    timer("kmeans_init", M.init_centers, model.module, z, model.n_clusters_, seed, cfg.n_init)
    history += timer("finetune", M.finetune, model.module, source, cfg, gen, False)
    model._set_trained([{"history": history, "n_clusters": model.n_clusters_}], cfg)
    timer("embed", model.get_latent)
    labels = timer("cluster", model.predict_clusters)
    return {
        "n_cells": n, "modality": modality, "epochs_per_phase": epochs, "threads": threads,
        "n_features": [int(model.rna.n_vars), int(model.other.n_vars)],
        "sparse_inputs": bool(source.is_sparse), "batch_size": cfg.batch_size,
        "phases_s": timer.phases,
        "pretrain_per_epoch_s": round(timer.phases["pretrain"] / max(epochs, 1), 2),
        "finetune_per_epoch_s": round(timer.phases["finetune"] / max(epochs, 1), 2),
        "peak_rss_gib_after_simulation": round(rss_data, 2), "peak_rss_gib": round(rss_gib(), 2),
        "NMI": round(float(normalized_mutual_info_score(labels_true, labels)), 4),
        "ARI": round(float(adjusted_rand_score(labels_true, labels)), 4),
        "final_loss": round(float(history[-1]["loss"]), 4),
    }


def _worker(args) -> None:
    load = os.getloadavg()[0]
    rec = run_size(args.worker, args.modality, args.epochs, args.threads)
    rec["load_avg_1m_start_end"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    print("RESULT " + json.dumps(rec), flush=True)


def _run_in_subprocess(n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(n), "--modality", args.modality,
           "--epochs", str(args.epochs), "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"size {n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def write_results(rows: list[dict], prov: dict, stem: Path) -> None:
    """Merge ``rows`` into the JSON (keyed by size and modality) and rewrite the markdown table;
    each row keeps the commit and command of the run that measured it."""
    path = stem.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    keep = {(r["n_cells"], r["modality"]): r for r in old}
    keep.update({(r["n_cells"], r["modality"]): {**r, "command": prov["command"], "commit": prov["commit"][:7] + (" (dirty)" if prov["dirty"] else "")}
                 for r in rows})
    merged = sorted(keep.values(), key=lambda r: (r["modality"], r["n_cells"]))
    data = {**prov, "simulator": SIM, "rows": merged}
    path.write_text(json.dumps(data, indent=1) + "\n")
    stem.with_suffix(".md").write_text(provenance_lines(data) + "\n" + _markdown(merged))


def _markdown(rows: list[dict]) -> str:
    head = ("| cells | pair | features | batch | threads | simulate s | prepare s | pre-train s/epoch | KMeans init s "
            "| fine-tune s/epoch | embed s | cluster s | peak RSS GiB (after simulation) | NMI | ARI | load 1 min |")
    intro = ("2-core CPU machine; each size in its own process; the run behind each row (commit at the "
             "time of the run, command) is listed below the table.")
    lines = [intro, "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["phases_s"]
        lines.append(
            f"| {r['n_cells']:,} | RNA+{r['modality'].upper()} | {r['n_features'][0]}+{r['n_features'][1]} "
            f"| {r['batch_size'] or 'full'} | {r['threads']} | {p['simulate']} | {p['prepare']} | {r['pretrain_per_epoch_s']} "
            f"| {p['kmeans_init']} | {r['finetune_per_epoch_s']} | {p['embed']} | {p['cluster']} "
            f"| {r['peak_rss_gib']} ({r['peak_rss_gib_after_simulation']}) | {r['NMI']} | {r['ARI']} "
            f"| {r['load_avg_1m_start_end'][0]}–{r['load_avg_1m_start_end'][1]} |")
    lines += [""] + [f"- {r['n_cells']:,} RNA+{r['modality'].upper()}: commit `{r.get('commit', '?')}`, "
                     f"`{r.get('command', '?')}`" for r in rows]
    lines += ["", (f"Simulator: `simulate_multiome(n, {', '.join(f'{k}={v}' for k, v in SIM.items())})`. "
              f"{rows[0]['epochs_per_phase'] if rows else 1} epoch(s) per phase (quality after so few epochs "
              "is not the method's; the table is about time and memory). Default preset: full batch up to "
              "20,000 cells, above it mini-batches of 256 with sparse inputs z-scored per batch; KMeans "
              "initialisation on a seeded sample of 100,000 cells above that size. 'embed' is the "
              "embedding of all cells after training (in chunks of 4,096); 'cluster' is KMeans "
              "(n_init 20) on that embedding, whose labels give NMI/ARI against the simulated cell types."),
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--modality", choices=("atac", "adt"), default="atac")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each phase")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "scmdcf_scaling", help="stem of the .json / .md")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    rows, prov = [], provenance()
    threads = os.environ.get("OMP_NUM_THREADS")
    prov["command"] = (f"OMP_NUM_THREADS={threads} " if threads else "") + prov["command"]
    for n in args.sizes:
        rows.append(_run_in_subprocess(n, args))
        print(json.dumps(rows[-1]), flush=True)
        write_results(rows, prov, args.out)


if __name__ == "__main__":
    main()
