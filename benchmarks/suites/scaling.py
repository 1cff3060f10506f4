"""Scaling benchmark: BiCLUM (and scMDCF) on the built-in simulator at growing cell numbers.

Each size runs in its own subprocess so that peak RSS is per size. Phases timed: simulate,
gene activity (preprocess), model preparation (HVG, normalisation, PCA), MNN pairs, training per
epoch, embedding of all cells; quality metrics on a seeded subsample of cells (the simulated
modalities are paired, so FOSCTTM is available); the fraction of MNN pairs joining cells of the
same simulated type; recall of the approximate searches (hnswlib per ``ef``, faiss IVF per
``nprobe``) against exact search on a subsample of queries.

    python benchmarks/suites/scaling.py --sizes 10000 100000 1000000               # the default preset
    python benchmarks/suites/scaling.py --mnn-ann hnsw --out benchmarks/results/scaling_hnsw
    python benchmarks/suites/scaling.py --plot-only        # redraw the PNG and the .md from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import RESULTS, SIM, provenance, provenance_lines  # noqa: E402
from _common import peak_rss_gib as rss_gib  # noqa: E402

EFS = (50, 100, 200, 400)
NPROBES = (4, 8, 16)


def ann_recall(a: np.ndarray, b: np.ndarray, k: int, n_queries: int = 2000, seed: int = 0) -> dict:
    """Recall@k (cosine) against exact search for a sample of queries: hnswlib at each ``ef`` and
    faiss IVF at each ``nprobe`` (one index each, built on all of ``b``; build seconds included)."""
    from cellbridge.neighbors import hnsw_index, hnsw_query, ivf_index, ivf_query, knn, recall_at_k

    rng = np.random.default_rng(seed)
    q = a[rng.choice(len(a), min(n_queries, len(a)), replace=False)]
    exact = knn(b, q, k, method="exact")
    out: dict = {}
    for name, build, query, settings in (("hnsw", hnsw_index, hnsw_query, EFS), ("ivf", ivf_index, ivf_query, NPROBES)):
        t = time.perf_counter()
        index = build(b, seed)
        out[name] = {"build_s": time.perf_counter() - t}
        for setting in settings:
            t = time.perf_counter()
            approx = query(index, q, k, setting)
            out[name][setting] = {"recall": recall_at_k(exact, approx),
                                  "query_s_per_1e6": (time.perf_counter() - t) / len(q) * 1e6}
    return out


def run_size(n: int, epochs: int, threads: int, metric_cells: int, mnn_options: dict, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(threads)
    import cellbridge as cb

    rec: dict = {"n_cells_per_modality": n, "threads": threads, "phases": {}, "load_before": os.getloadavg()}
    ph = rec["phases"]
    t = time.perf_counter()
    sim = cb.datasets.simulate_multiome(n, seed=seed, **SIM)
    ph["simulate"] = time.perf_counter() - t
    rna, atac = sim["rna"], sim["atac"]
    t = time.perf_counter()
    gam = cb.pp.gene_activity(atac, sim["annotation"])
    ph["gene_activity"] = time.perf_counter() - t
    del atac, sim
    model = cb.BiCLUM(rna, gam, modality="atac", seed=seed, **mnn_options)
    rec.update({key: getattr(model.params, key) for key in ("mnn_ann", "hnsw_ef", "ivf_nprobe")})
    ph["prepare"], ph["pairs"] = model.timings["prepare"], model.timings["pairs"]
    rec["n_cell_pairs"] = len(model.cell_pairs)
    types_other, types_rna = (x.obs["cell_type"].astype(str).to_numpy() for x in (gam, rna))
    pairs = model.cell_pairs
    rec["mnn_same_type"] = float(np.mean(types_rna[pairs[:, 0]] == types_other[pairs[:, 1]]))  # (rna, other)
    summary = model.train(max_epochs=epochs, patience=epochs + 1, progress=False).train_summary_
    ph["train_per_epoch"] = summary["seconds"] / summary["epochs"]
    rec["epochs"] = summary["epochs"]
    t = time.perf_counter()
    z_rna, z_gam = model.get_latent(rna), model.get_latent(gam)
    ph["embed"] = time.perf_counter() - t
    rec["peak_rss_gib_after_biclum"] = rss_gib()
    rows = np.sort(np.random.default_rng(seed).choice(n, min(metric_cells, n), replace=False))
    labels = rna.obs["cell_type"].astype(str).to_numpy()[rows]
    rec["metrics"] = cb.metrics.integration_metrics(z_gam[rows], z_rna[rows], labels, labels, paired=True, seed=seed)
    rec["metric_cells"] = len(rows)
    if n > cb.neighbors.EXACT_KNN_MAX_CELLS:
        a, b = model.data.shared_pca(model.params.mnn_dims, seed=seed)
        rec["ann_recall_at_k"] = ann_recall(a, b, model.params.k_mnn)
    rec["peak_rss_gib"] = rss_gib()
    rec["load_after"] = os.getloadavg()
    return rec


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n_cells_per_modality"] for r in records])
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for phase in records[0]["phases"]:
        ax_t.plot(n, [r["phases"][phase] for r in records], "o-", label=phase)
    ax_t.plot(n, n / n[0] * records[0]["phases"]["train_per_epoch"], "k:", label="linear (train/epoch)")
    ax_t.set(xscale="log", yscale="log", xlabel="cells per modality", ylabel="seconds", title="time per phase")
    ax_t.legend(fontsize=7)
    ax_m.plot(n, [r["peak_rss_gib"] for r in records], "o-")
    ax_m.axhline(16, color="r", ls="--", label="16 GiB bound")
    ax_m.set(xscale="log", xlabel="cells per modality", ylabel="peak RSS (GiB)", title="memory")
    ax_m.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--metric-cells", type=int, default=10_000)
    parser.add_argument("--mnn-ann", default=None, help="BiCLUM mnn_ann (default: the model's)")
    parser.add_argument("--hnsw-ef", type=int, default=None, help="BiCLUM hnsw_ef (default: the model's)")
    parser.add_argument("--ivf-nprobe", type=int, default=None, help="BiCLUM ivf_nprobe (default: the model's)")
    parser.add_argument("--out", default=str(RESULTS / "scaling"))
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.one:
        options = dict(mnn_ann=args.mnn_ann, hnsw_ef=args.hnsw_ef, ivf_nprobe=args.ivf_nprobe)
        print(json.dumps(run_size(args.one, args.epochs, args.threads, args.metric_cells, options), default=float))
        return
    if not args.plot_only:
        previous = json.loads(out.with_suffix(".json").read_text())["records"] if out.with_suffix(".json").exists() else []
        records = {r["n_cells_per_modality"]: r for r in previous}
        prov = provenance()
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--one", str(n), "--epochs", str(args.epochs),
                   "--threads", str(args.threads), "--metric-cells", str(args.metric_cells)]
            for flag in ("mnn_ann", "hnsw_ef", "ivf_nprobe"):
                value = getattr(args, flag)
                cmd += ["--" + flag.replace("_", "-"), str(value)] if value is not None else []
            result = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            # each row keeps the commit and command of the run that measured it
            records[n] = {**json.loads(result.stdout.strip().splitlines()[-1]), "commit": prov["commit"][:7] + (" (dirty)" if prov["dirty"] else ""),
                          "command": prov["command"]}
            print(json.dumps({k: v for k, v in records[n].items() if k != "metrics"}, default=float), flush=True)
            ordered = [records[k] for k in sorted(records)]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps({**prov, "records": ordered}, indent=1, default=float))
    data = json.loads(out.with_suffix(".json").read_text())
    plot(data["records"], out.with_suffix(".png"))
    out.with_suffix(".md").write_text(markdown(data))


def _search(record: dict) -> str:
    from cellbridge.neighbors import EXACT_KNN_MAX_CELLS

    if record["n_cells_per_modality"] <= EXACT_KNN_MAX_CELLS:
        return "exact"
    if record.get("mnn_ann", "hnsw") == "ivf":
        return f"faiss IVF, nprobe={record['ivf_nprobe']}"
    return f"hnswlib, ef={record.get('hnsw_ef') or 'max(50, k)'}"


def markdown(data: dict) -> str:
    recs = data["records"]
    phases = list(recs[0]["phases"])
    lines = [provenance_lines(data),
             "2-core CPU machine; each size in its own process (the row's run: commit and command below the table).", "",
             "| cells/modality | " + " | ".join(f"{p} s" for p in phases)
             + " | peak RSS GiB | load (1-min avg, start / end) | MNN pairs same type | FOSCTTM | transfer acc. | omics mixing | bio. conservation |",
             "|" + "---|" * (len(phases) + 8)]
    for r in recs:
        m = r["metrics"]
        load = f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}" if "load_before" in r else "n/a"
        lines.append(f"| {r['n_cells_per_modality']:,} | " + " | ".join(f"{r['phases'][p]:.1f}" for p in phases)
                     + f" | {r['peak_rss_gib']:.2f} | {load} | {r['mnn_same_type']:.3f} | {m['foscttm']:.3f}"
                     + f" | {m['transfer_accuracy']:.3f} | {m['omics_mixing']:.3f} | {m['biology_conservation']:.3f} |")
    lines += [""] + [f"- {r['n_cells_per_modality']:,}: commit `{r.get('commit', data['commit'])}`, "
                     f"`{r.get('command', data['command'])}`" for r in recs]
    lines += ["", "MNN search used: " + ", ".join(f"{r['n_cells_per_modality']:,}: {_search(r)}" for r in recs)]
    recall = [r for r in recs if isinstance(r.get("ann_recall_at_k"), dict)]
    if recall:
        lines += ["", "Recall@k_mnn against exact search (2,000 query cells), query seconds per 10^6 queries in "
                  "brackets; index build seconds on all cells:", ""]
        settings = [(name, s) for name, res in recall[0]["ann_recall_at_k"].items() for s in res if s != "build_s"]
        lines += ["| cells/modality | " + " | ".join(f"{name} {'ef' if name == 'hnsw' else 'nprobe'}={s}" for name, s in settings)
                  + " | hnsw build s | ivf build s |", "|" + "---|" * (len(settings) + 3)]
        for r in recall:
            res = r["ann_recall_at_k"]
            cells = [f"{res[name][s]['recall']:.3f} ({res[name][s]['query_s_per_1e6']:.0f} s)" for name, s in settings]
            lines.append(f"| {r['n_cells_per_modality']:,} | " + " | ".join(cells)
                         + f" | {res['hnsw']['build_s']:.1f} | {res['ivf']['build_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
