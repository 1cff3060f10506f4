"""Gene-peak links from integrated *unpaired* embeddings, validated against the true pairing.

mop_snare (SNARE-seq, paired) is integrated as if unpaired by

  default    ``cb.BiCLUM(rna, gam, modality="atac", seed=0)`` (time-boxed: ``--max-time``)
  reference  the same with ``preset="reference"`` (time-boxed)
  pca        joint PCA of the scaled shared features (``prepare_unpaired(...).shared_pca(50)``)
  random     ATAC cells paired with random RNA cells (the null)

and gene-peak links are computed from each (metacells of the stacked joint embedding). The truth is
``gene_peak_links(rna, atac, paired=True)`` on single cells (Signac's LinkPeaks setting); the
``paired_metacells`` row (true pairing, metacells of the RNA PCA) shows what grouping alone costs.

Reported per method: Pearson and Spearman correlation of ``score`` with the truth's over all
candidate pairs; precision of the top 1,000 / 10,000 links (by ``score``) against the truth's top
1,000 / 10,000; the mean TRUE (paired, single-cell) correlation of the method's top 1,000 links and
of distance-matched random candidate pairs.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/suites/gene_peak_links.py --stage embed
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/suites/gene_peak_links.py --stage links

Embeddings are cached in ``--cache`` (outside the repository) so that the link stage can be re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DATA, RESULTS, load_paired, write_results

OUT = RESULTS / "links" / "gene_peak_links"
ANNOTATION = DATA / "annotation" / "mm10_genes.bed"
EMBED_METHODS = ("pca", "default", "reference")


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _shared_pca(rna, gam):
    from cellbridge.models.biclum._data import prepare_unpaired

    z_other, z_rna = prepare_unpaired(rna, gam, modality="atac").shared_pca(50)
    return np.asarray(z_rna), np.asarray(z_other)


def embed(method: str, cache: Path, max_time: float) -> dict:
    """Train / compute one embedding of mop_snare as unpaired; cache ``z_rna``, ``z_atac``."""
    import cellbridge as cb

    rna, atac, _ = load_paired("mop_snare")
    gam = cb.pp.gene_activity(atac, ANNOTATION)
    clock = time.perf_counter()
    meta: dict = {"method": method, "cellbridge": str(Path(cb.__file__).parent)}
    if method == "pca":
        z_rna, z_atac = _shared_pca(rna, gam)
    else:
        model = cb.BiCLUM(rna, gam, modality="atac", seed=0, preset=method)
        model.train(max_time=max_time, progress=False)
        meta["epochs"] = model.train_summary_["epochs"]
        meta["max_time_s"] = max_time
        meta["max_epochs"] = int(model.params.max_epochs)
        z_rna, z_atac = model.get_latent(rna), model.get_latent(gam)
    meta["embed_s"] = time.perf_counter() - clock
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cache / f"{method}.npz", z_rna=z_rna, z_atac=z_atac, obs_names=np.asarray(rna.obs_names))
    (cache / f"{method}.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta), flush=True)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["embed", "links", "all"], default="all")
    parser.add_argument("--methods", nargs="+", default=list(EMBED_METHODS))
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "cellbridge_links_cache")
    parser.add_argument("--max-time", type=float, default=600.0, help="training time box per BiCLUM preset (s)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _threads(args.threads)
    if args.stage in ("embed", "all"):
        for method in args.methods:
            embed(method, args.cache, args.max_time)
    if args.stage in ("links", "all"):
        links_stage(args)


def _compare(truth, links, *, seed: int = 0, n_draws: int = 20) -> dict:
    """Agreement of ``links`` with the paired truth over the candidate pairs both scored."""
    from scipy import stats

    m = truth.merge(links, on=["gene", "peak"], suffixes=("_true", ""))
    out = {"n_pairs": len(m), "n_fdr05": int((links.fdr < 0.05).sum()),
           "pearson": float(np.corrcoef(m.score_true, m.score)[0, 1]),
           "spearman": float(stats.spearmanr(m.score_true, m.score).statistic)}
    true_rank = m.score_true.rank(ascending=False, method="first")
    rank = m.score.rank(ascending=False, method="first")
    for k in (1000, 10000):
        out[f"precision@{k}"] = float(((rank <= k) & (true_rank <= k)).sum() / k)
        out[f"precision@{k}_random"] = k / len(m)
    # mean TRUE correlation of the top 1,000 vs distance-matched random candidate pairs
    bins = pd.qcut(m.distance.abs(), 20, labels=False, duplicates="drop").to_numpy()
    top = np.flatnonzero(rank.to_numpy() <= 1000)
    rng = np.random.default_rng(seed)
    by_bin = {b: np.flatnonzero(bins == b) for b in np.unique(bins)}
    draws = [np.mean([m.score_true.iat[rng.choice(by_bin[b])] for b in bins[top]]) for _ in range(n_draws)]
    out["true_r_top1000"] = float(m.score_true.iloc[top].mean())
    out["true_r_matched_random"] = float(np.mean(draws))
    out["true_r_gain"] = out["true_r_top1000"] - out["true_r_matched_random"]
    return out


def links_stage(args) -> None:
    import warnings

    from cellbridge.tl._links import gene_peak_links

    warnings.simplefilter("ignore")
    rna, atac, _ = load_paired("mop_snare")
    embeddings = {m: np.load(args.cache / f"{m}.npz") for m in args.methods}
    metas = {m: json.loads((args.cache / f"{m}.json").read_text()) for m in args.methods}
    records, timings = [], {}

    calibration = {}

    def run(name, r, a, **kw):
        clock = time.perf_counter()
        links = gene_peak_links(r, a, ANNOTATION, **kw)
        timings[name] = time.perf_counter() - clock
        bg = gene_peak_links(r, a, ANNOTATION, pvalue="background", **kw)
        calibration[name] = {"p01": float((links.pvalue < 0.01).mean()), "p01_bg": float((bg.pvalue < 0.01).mean()),
                             "n_fdr05_bg": int((bg.fdr < 0.05).sum())}
        print(name, f"{timings[name]:.1f}s", len(links), calibration[name], flush=True)
        return links

    truth = run("paired_cells", rna, atac, paired=True)
    truth_self = _compare(truth, truth)
    records.append({"method": "paired_cells (truth)", **truth_self, "links_s": timings["paired_cells"]})
    base = embeddings["default" if "default" in embeddings else args.methods[0]]
    r = rna.copy()
    r.obsm["X_biclum"] = base["z_rna"]
    n_groups = int(np.clip((2 * rna.n_obs) // 50, 10, 1000))
    pm = run("paired_metacells", r, atac, paired=True, n_groups=n_groups)
    records.append({"method": "paired_metacells", **_compare(truth, pm), "links_s": timings["paired_metacells"],
                    "n_groups": int(pm.n_groups.iloc[0])})
    for method in args.methods:
        z = embeddings[method]
        r, a = rna.copy(), atac.copy()
        r.obsm["X_biclum"], a.obsm["X_biclum"] = z["z_rna"], z["z_atac"]
        links = run(method, r, a)
        records.append({"method": method, **_compare(truth, links), "links_s": timings[method],
                        "n_groups": int(links.n_groups.iloc[0]), **{k: v for k, v in metas[method].items()
                                                                  if k in ("epochs", "max_time_s", "embed_s")}})
    # null: every ATAC cell takes the embedding of a random RNA cell (random pairing), same pipeline
    r, a = rna.copy(), atac.copy()
    r.obsm["X_biclum"] = base["z_rna"]
    a.obsm["X_biclum"] = base["z_rna"][np.random.default_rng(0).permutation(rna.n_obs)]
    links = run("random", r, a)
    records.append({"method": "random pairing (null)", **_compare(truth, links), "links_s": timings["random"],
                    "n_groups": int(links.n_groups.iloc[0])})
    # calibration of the single-cell truth: the same cells paired at random (no link exists)
    a = atac.copy()
    a.obs_names = atac.obs_names[np.random.default_rng(0).permutation(atac.n_obs)]
    links = run("random_cells", rna, a, paired=True)
    records.append({"method": "random pairing, single cells (null)", **_compare(truth, links),
                    "links_s": timings["random_cells"]})
    for rec, name in zip(records, timings):  # records and runs in the same order
        rec.update(calibration[name])
    write_results(OUT, records, _markdown(records, metas))


COLUMNS = [("method", "{}"), ("epochs", "{}"), ("embed_s", "{:.0f}"), ("n_groups", "{}"), ("links_s", "{:.1f}"),
           ("n_fdr05", "{}"), ("n_fdr05_bg", "{}"), ("p01", "{:.4f}"), ("p01_bg", "{:.4f}"), ("pearson", "{:.3f}"), ("spearman", "{:.3f}"), ("precision@1000", "{:.3f}"),
           ("precision@10000", "{:.3f}"), ("true_r_top1000", "{:.4f}"), ("true_r_matched_random", "{:.4f}"),
           ("true_r_gain", "{:.4f}")]


def _markdown(records, metas) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join(fmt.format(r[c]) if r.get(c) is not None else "-" for c, fmt in COLUMNS)
                   + " |\n" for r in records)
    n = records[0]["n_pairs"]
    notes = (
        f"\nmop_snare, 10,309 cells, all {n:,} candidate gene-peak pairs (peak centre within 500 kb of "
        "the TSS; genes and peaks detected in at least 10 cells). Truth: `gene_peak_links(rna, atac, "
        "paired=True)` on single cells. Unpaired rows: metacells (k-means, default n_groups) of the "
        "stacked joint embedding, groups with at least 3 cells of each modality kept. `precision@k`: "
        f"share of a method's top k links (by score) among the truth's top k; random expectation "
        f"{1000 / n:.3f} at k=1,000 and {10000 / n:.3f} at k=10,000. `true_r_top1000`: mean truth "
        "correlation of the method's top 1,000 links; `true_r_matched_random`: the same for random "
        "candidate pairs drawn from the same |distance| ventiles (20 draws). `n_fdr05`: links with "
        "FDR < 0.05 in the method's own run (no link is true in the two null rows); `n_fdr05_bg` the same with "
        "`pvalue=\"background\"` (pooled background z-scores instead of the normal tail); `p01` / `p01_bg`: share "
        "of pairs with p < 0.01 (0.01 expected under the null). BiCLUM training was time-boxed ("
        + ", ".join(f"{m}: {v.get('epochs')} epochs in {v.get('max_time_s')} s" for m, v in metas.items()
                    if "epochs" in v)
        + "), one torch thread, on a shared 2-core machine; embeddings computed by "
        + ", ".join(sorted({v.get("cellbridge", "?") for v in metas.values()})) + ".\n")
    return head + body + notes


if __name__ == "__main__":
    main()
