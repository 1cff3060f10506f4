"""scMDCF benchmark: reference vs default preset vs simple baselines on paired real data.

Each (dataset, method, K-mode) runs in its own subprocess so wall time and peak memory
(``ru_maxrss``) belong to that method alone. Results: ``benchmarks/results/scmdcf.json`` / ``.md``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/suites/scmdcf.py [--jobs 2] [--datasets a,b] [--methods m,n]
        [--kmodes true,estimated] [--seeds 0,1,2] [--merge] [--note TEXT]
    python benchmarks/suites/scmdcf.py --worker DATASET METHOD KMODE [--seed S] [--save-z z.npy]
        [--set key=value ...]

With several seeds the summary gives each method's mean over the seeds it was run with.
``leiden_wnn`` (Leiden on muon's weighted-nearest-neighbour graph) needs the optional ``muon``;
without it that row reports "not run: muon not installed".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import (  # noqa: E402
    RESULTS, evaluate_labels, load_scmdcf, parse_set, provenance, provenance_header, wnn_leiden,
)

DATASETS = ["teaseq_pbmc", "mop_snare", "bmmc_cite_small", "bmmc_multiome_small", "pbmc10k_cite_unnamed"]
ATAC_DATASETS = {"mop_snare", "bmmc_multiome_small"}
BASELINES = [f"{alg}_{rep}" for rep in ("pca_rna", "pca_other", "pca_concat", "lsi_other", "lsi_concat")
             for alg in ("kmeans", "leiden")]  # lsi_*: ATAC datasets only
# the default's consensus step applied to 5 KMeans runs (seeds seed + 1000 i) of a baseline
BASELINES += ["consensus_pca_concat", "consensus_lsi_concat"]
VARIANTS = {  # option bundles measured beside the presets: name -> (preset, overrides)
    "scmdcf_option_pca_lsi": ("default", {"rna_representation": "pca", "atac_representation": "lsi"}),
    "scmdcf_option_pca": ("default", {"rna_representation": "pca"}),
    "scmdcf_default_single": ("default", {"n_models": 1}),  # the default without its ensemble
    "scmdcf_default_ensemble": ("default", {"ensemble_max_cells": None}),  # ensemble at any size
    # 5 members at any size, the one with the lowest pre-training reconstruction error kept
    "scmdcf_default_select": ("default", {"ensemble_max_cells": None, "ensemble_combine": "select"}),
}
WNN_BASELINES = ["leiden_wnn"]  # muon's weighted-nearest-neighbour graph (optional dependency)
METHODS = ["scmdcf_reference", "scmdcf_default", *VARIANTS, *BASELINES, *WNN_BASELINES]


def _pca(X: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    n = max(2, min(n, X.shape[1] - 1, X.shape[0] - 1))
    return PCA(n_components=n, random_state=seed).fit_transform(X)


def _leiden(emb: np.ndarray, n_clusters: int | None, seed: int) -> np.ndarray:
    """Leiden on the unweighted 15-NN graph of ``emb`` (``leidenalg``): resolution 1, or bisected
    to ``n_clusters``."""
    from cellbridge.tl import leiden

    return leiden(emb, n_clusters=n_clusters, resolution=1.0, seed=seed, flavor="leidenalg")


def run_baseline(method: str, rna, other, k_true: int | None, seed: int = 0):
    """Cluster a PCA (or LSI) representation by KMeans, Leiden or the consensus of 5 KMeans runs;
    returns ``(labels, K used, prepared RNA)``."""
    from sklearn.cluster import KMeans

    from cellbridge.models.scmdcf._data import prepare_paired

    prna, poth = prepare_paired(rna, other)
    reps = {"pca_rna": _pca(prna.X, 50, seed), "pca_other": _pca(poth.X, 50, seed)}
    reps["pca_concat"] = np.hstack([reps["pca_rna"], reps["pca_other"]])
    if method.endswith(("lsi_other", "lsi_concat")):
        if poth.uns["cellbridge_prepare"]["modality"] != "atac":
            raise SystemExit(f"{method} applies to ATAC data only")
        _, plsi = prepare_paired(rna, other, atac_representation="lsi", n_lsi=50, seed=seed)
        reps["lsi_other"] = plsi.X
        reps["lsi_concat"] = np.hstack([reps["pca_rna"], plsi.X])
    alg, rep = method.split("_", 1)
    emb = reps[rep]
    if alg == "leiden":
        lab = _leiden(emb, k_true, seed)
        return lab, len(np.unique(lab)), prna
    k = k_true or len(np.unique(_leiden(emb, None, seed)))
    if alg == "consensus":
        from cellbridge.tl import consensus_clusters

        runs = [KMeans(k, n_init=20, random_state=seed + 1000 * i).fit_predict(emb) for i in range(5)]
        return consensus_clusters(runs, k, seed=seed), k, prna
    return KMeans(k, n_init=20, random_state=seed).fit_predict(emb), k, prna


def run_wnn(rna, other, k_true: int | None, seed: int = 0):
    """Leiden on muon's weighted-nearest-neighbour graph (Hao et al. 2021); returns
    ``(labels, K used, prepared RNA)``.

    Per modality the baselines' representation (RNA: PCA 50 of the prepared matrix; proteins:
    PCA 50; ATAC: TF-IDF/LSI 50, first component dropped), rows scaled to unit L2 norm as
    Seurat's ``FindMultiModalNeighbors`` does, an exact 15-NN graph per modality
    (``scanpy.pp.neighbors``), then ``muon.pp.neighbors`` (15 WNN neighbours, 20 bandwidth
    neighbours, 200 candidate neighbours per modality) and weighted Leiden on its
    connectivities: resolution bisected to the true K, or 1 when K is estimated.
    """
    try:
        import muon  # noqa: F401
    except ImportError as exc:
        raise SystemExit("not run: muon not installed") from exc
    from cellbridge.models.scmdcf._data import prepare_paired

    prna, poth = prepare_paired(rna, other)
    is_atac = poth.uns["cellbridge_prepare"]["modality"] == "atac"
    rep_rna = _pca(prna.X, 50, seed)
    if is_atac:
        _, plsi = prepare_paired(rna, other, atac_representation="lsi", n_lsi=50, seed=seed)
        rep_oth = np.asarray(plsi.X, dtype=np.float64)
    else:
        rep_oth = _pca(poth.X, 50, seed)
    lab = wnn_leiden({"rna": rep_rna, "atac" if is_atac else "prot": rep_oth}, prna.obs, k_true, seed)
    return lab, len(np.unique(lab)), prna


def run_scmdcf(preset: str, rna, other, k_true: int | None, overrides: dict, seed: int = 0,
               save_z: str | None = None):
    """Train scMDCF; returns ``(labels, K used, prepared RNA)``; ``save_z`` writes ``z`` (.npy)."""
    import cellbridge as cb

    model = cb.scMDCF(rna, other, n_clusters=k_true, preset=preset, seed=seed, accelerator="cpu",
                      **overrides).train(progress=False)
    if save_z:
        np.save(save_z, model.get_latent())
    return model.predict_clusters(), model.n_clusters_, model.rna


def worker(dataset: str, method: str, kmode: str, overrides: dict, seed: int = 0,
           save_z: str | None = None) -> dict:
    import torch

    torch.set_num_threads(1)
    rna, other, label_key = load_scmdcf(dataset)
    k_true = int(rna.obs[label_key].nunique())
    t0 = time.perf_counter()
    k_arg = k_true if kmode == "true" else None
    if method in VARIANTS:
        preset, extra = VARIANTS[method]
        overrides = {**extra, **overrides}
        lab, k, prna = run_scmdcf(preset, rna, other, k_arg, overrides, seed, save_z)
    elif method.startswith("scmdcf_"):
        lab, k, prna = run_scmdcf(method.split("_", 1)[1], rna, other, k_arg, overrides, seed, save_z)
    elif method in WNN_BASELINES:
        lab, k, prna = run_wnn(rna, other, k_arg, seed)
    else:
        lab, k, prna = run_baseline(method, rna, other, k_arg, seed)
    wall = time.perf_counter() - t0
    scores = evaluate_labels(prna, label_key, lab)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"dataset": dataset, "method": method, "k_mode": kmode, "k_true": k_true, "k_used": int(k),
            "n_cells": int(prna.n_obs), "wall_s": round(wall, 2), "peak_rss_mb": round(peak_mb, 1),
            "overrides": overrides, "seed": seed, **{m: round(float(v), 4) for m, v in scores.items()}}


def _spawn(task) -> dict:
    dataset, method, kmode, sets, seed = task
    cmd = [sys.executable, __file__, "--worker", dataset, method, kmode, "--seed", str(seed)]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")  # WNN (numba) depends on it
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        return {"dataset": dataset, "method": method, "k_mode": kmode, "seed": seed,
                "error": proc.stderr[-2000:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(res), flush=True)
    return res


def _row_key(r: dict) -> tuple:
    """(dataset, method, K mode, seed) identifying a result row (rows without a seed: seed 0)."""
    return r["dataset"], r["method"], r["k_mode"], r.get("seed", 0)


def _mean_rows(rows: list[dict]) -> dict[tuple, dict]:
    """Per (dataset, method): the first row with NMI/ARI replaced by their mean over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    return {key: {**grp[0], "NMI": float(np.mean([r["NMI"] for r in grp])),
                  "ARI": float(np.mean([r["ARI"] for r in grp])), "n_seeds": len(grp)}
            for key, grp in groups.items()}


def _sorted(rows: list[dict]) -> list[dict]:
    order = {d: i for i, d in enumerate(DATASETS)}
    return sorted(rows, key=lambda r: (order.get(r["dataset"], 99), METHODS.index(r["method"])
                                       if r["method"] in METHODS else 99, r["k_mode"] != "true",
                                       r.get("seed", 0)))


def _meta_lines(meta: dict) -> list[str]:
    """Provenance lines of the results: a full provenance (runs since the reorganisation), else
    the fields of the older runs and the back-filled ``provenance`` (what was not recorded)."""
    if isinstance(meta.get("versions"), dict):
        lines = [provenance_header(meta), f"- workers: {meta.get('workers', '')}"]
        if meta.get("earlier_runs"):
            lines.append(f"- rows of {len(meta['earlier_runs'])} earlier run(s) kept (--merge); their commands and "
                         "provenance: `meta.earlier_runs` of the JSON")
        return lines
    lines = [f"- command: `{meta['command']}`", f"- git commit: `{meta['commit']}`", f"- machine: {meta['machine']}"]
    lines += [f"- {key}: {value}" for key, value in (meta.get("provenance") or {}).items()]
    return lines


def write_markdown(rows: list[dict], meta: dict, path: Path) -> None:
    rows = _sorted(rows)
    lines = ["# scMDCF benchmark", "", *_meta_lines(meta),
             f"- seeds: {meta['seed']} (weights, batches, KMeans, Leiden; the seed column gives each row's)",
             *([f"- note: {meta['note']}"] if meta.get("note") else []), "",
             "| dataset | method | K mode | seed | K used / true | NMI | ARI | AMI | wall s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            why = r["error"].strip().splitlines()[-1][:90] if r["error"].strip() else "error"
            lines.append(f"| {r['dataset']} | {r['method']} | {r['k_mode']} | {r.get('seed', 0)} | {why} "
                         "| | | | | |")
            continue
        lines.append(f"| {r['dataset']} | {r['method']} | {r['k_mode']} | {r.get('seed', 0)} | "
                     f"{r['k_used']}/{r['k_true']} | "
                     f"{r['NMI']:.3f} | {r['ARI']:.3f} | {r['AMI']:.3f} | {r['wall_s']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines += ["", *summary_lines(rows)]
    path.write_text("\n".join(lines) + "\n")


def _cell(sub: dict, method: str) -> str:
    if method not in sub:
        return "n/a"
    r = sub[method]
    seeds = f" (mean of {r['n_seeds']} seeds)" if r.get("n_seeds", 1) > 1 else ""
    return f"{r['NMI']:.3f} / {r['ARI']:.3f}" + seeds


def summary_lines(rows: list[dict]) -> list[str]:
    """Per dataset (true K): reference, default and the best baseline for NMI and for ARI."""
    header = ("| dataset | reference NMI / ARI | default NMI / ARI | best baseline NMI (method) | "
              "best baseline ARI (method) |")
    out = ["## Summary (true K)", "", header, "|---|---|---|---|---|"]
    ok = list(_mean_rows([r for r in rows if "error" not in r and r["k_mode"] == "true"]).values())
    for ds in dict.fromkeys(r["dataset"] for r in ok):
        sub = {r["method"]: r for r in ok if r["dataset"] == ds}
        base = [r for m, r in sub.items() if not m.startswith("scmdcf")]
        bn = max(base, key=lambda r: r["NMI"], default=None)
        ba = max(base, key=lambda r: r["ARI"], default=None)
        best = f"{bn['NMI']:.3f} ({bn['method']}) | {ba['ARI']:.3f} ({ba['method']}) |" if bn else "n/a | n/a |"
        out.append(f"| {ds} | {_cell(sub, 'scmdcf_reference')} | {_cell(sub, 'scmdcf_default')} | {best}")
    variants = [f"{r['dataset']} {r['method']} {_cell({r['method']: r}, r['method'])}" for r in ok
                if r["method"] in VARIANTS]
    out += ["", "Option bundles (true K): " + "; ".join(variants)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=3, metavar=("DATASET", "METHOD", "KMODE"))
    ap.add_argument("--set", action="append", default=[], help="scMDCF override key=json_value")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--kmodes", default="true,estimated")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (rows per seed)")
    ap.add_argument("--seed", type=int, default=0, help="worker seed")
    ap.add_argument("--save-z", default=None, help="worker: write the scMDCF embedding to this .npy")
    ap.add_argument("--out", default="scmdcf",
                    help="results name under benchmarks/results/, or a path (stem) elsewhere")
    ap.add_argument("--merge", action="store_true",
                    help="keep rows of an existing results file that this run does not redo")
    ap.add_argument("--report", action="store_true", help="only rewrite the .md from the .json")
    ap.add_argument("--note", default=None, help="note written into the results' meta")
    args = ap.parse_args()
    stem = Path(args.out) if "/" in args.out else RESULTS / args.out
    if args.report:
        data = json.loads(stem.with_suffix(".json").read_text())
        write_markdown(data["results"], data["meta"], stem.with_suffix(".md"))
        return
    if args.worker:
        print(json.dumps(worker(*args.worker, parse_set(args.set), args.seed, args.save_z)))
        return
    tasks = [(d, m, k, args.set, int(s)) for d in args.datasets.split(",") for m in args.methods.split(",")
             for k in args.kmodes.split(",") for s in args.seeds.split(",")
             if "lsi" not in m or d in ATAC_DATASETS]
    tasks.sort(key=lambda t: (t[0] != "mop_snare", not t[1].startswith("scmdcf")))  # longest first
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_spawn, tasks))
    meta = {**provenance(), "workers": f"{args.jobs} workers x 1 thread, CPU only", "seed": args.seeds,
            **({"note": args.note} if args.note else {})}
    stem.parent.mkdir(parents=True, exist_ok=True)
    old = stem.with_suffix(".json")
    if args.merge and old.exists():
        prev = json.loads(old.read_text())
        done = {_row_key(r) for r in rows}
        rows = [r for r in prev["results"] if _row_key(r) not in done] + rows
        meta["earlier_runs"] = prev["meta"].get("earlier_runs", []) + [
            {k: v for k, v in prev["meta"].items() if k != "earlier_runs"}]
        seeds = set(str(prev["meta"].get("seed", "0")).split(",")) | set(args.seeds.split(","))
        meta["seed"] = ",".join(sorted(seeds, key=int))
        notes = [n for n in (prev["meta"].get("note"), meta.get("note")) if n]
        if notes:
            meta["note"] = " | ".join(dict.fromkeys(notes))
    order = {d: i for i, d in enumerate(DATASETS)}
    rows.sort(key=lambda r: (order.get(r["dataset"], 99), METHODS.index(r["method"])
                             if r["method"] in METHODS else 99, r["k_mode"] != "true"))
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    write_markdown(rows, meta, stem.with_suffix(".md"))


if __name__ == "__main__":
    main()
