"""BiCLUM benchmark on real paired data integrated *as unpaired* (pairing used only for FOSCTTM).

For each dataset it runs, each in its own subprocess (so peak RSS is per method):
  pca        joint PCA of the scaled shared features (simple baseline)
  reference  the `reference` preset (time-boxed; the epochs reached are recorded)
  default    CellBridge's default preset
and records every metric of METHODS §4, wall time (preparation + training + embedding) and peak RSS.

    python benchmarks/suites/biclum.py                      # everything, writes results/biclum.*
    python benchmarks/suites/biclum.py --datasets teaseq_pbmc --methods pca default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import RESULTS, load_unpaired, peak_rss_gib, provenance, write_results  # noqa: E402

DATASETS = ("mop_snare", "teaseq_pbmc")
METHODS = ("pca", "reference", "default")


def run_one(name: str, method: str, max_time: float | None, threads: int) -> dict:
    """Run one method on one dataset in this process and return its record."""
    import torch

    torch.set_num_threads(threads)
    import cellbridge as cb

    rna, other, spec = load_unpaired(name)
    start = time.perf_counter()
    record: dict = {"dataset": name, "method": method}
    if method == "pca":
        z_other, z_rna = joint_pca(rna, other, spec["modality"])
    else:
        model = cb.BiCLUM(rna, other, modality=spec["modality"], preset=method)
        prepared = time.perf_counter()
        summary = model.train(max_time=max_time, progress=False).train_summary_
        record.update(epochs=summary["epochs"], best_epoch=summary["best_epoch"],
                      train_seconds=summary["seconds"], prepare_seconds=prepared - start,
                      seconds_per_epoch=summary["seconds"] / summary["epochs"],
                      n_cell_pairs=len(model.cell_pairs), n_feature_pairs=len(model.feature_pairs))
        z_other, z_rna = model.get_latent(other, "other"), model.get_latent(rna, "rna")
    record["total_seconds"] = time.perf_counter() - start
    labels_o = other.obs[spec["label"]].astype(str).to_numpy()
    labels_r = rna.obs[spec["label"]].astype(str).to_numpy()
    assert (other.obs_names == rna.obs_names).all(), "benchmark data must be paired for FOSCTTM"
    record["metrics"] = cb.metrics.integration_metrics(z_other, z_rna, labels_o, labels_r, paired=True, seed=0)
    record["peak_rss_gib"] = peak_rss_gib()
    return record


def joint_pca(rna, other, modality: str, n_comps: int = 50):
    """Baseline: PCA of both modalities' scaled shared features stacked as one matrix."""
    from cellbridge.models.biclum._data import prepare_unpaired

    return prepare_unpaired(rna, other, modality=modality).shared_pca(n_comps)


def markdown(records: list[dict]) -> str:
    keys = ["omics_mixing", "biology_conservation", "transfer_accuracy", "transfer_accuracy_a_to_b",
            "transfer_accuracy_b_to_a", "foscttm", "neighbourhood_overlap", "graph_connectivity",
            "seurat_alignment_score", "modality_asw", "map", "cell_type_asw", "nmi"]
    present = [k for k in keys if any(k in r["metrics"] for r in records)]
    head = "| dataset | method | epochs | train s | total s | peak RSS GiB | " + " | ".join(present) + " |"
    lines = [head, "|" + "---|" * (6 + len(present))]
    for r in records:
        vals = " | ".join(f"{r['metrics'].get(k, float('nan')):.3f}" for k in present)
        lines.append(f"| {r['dataset']} | {r['method']} | {r.get('epochs', '-')} | "
                     f"{r.get('train_seconds', 0):.0f} | {r['total_seconds']:.0f} | {r['peak_rss_gib']:.2f} | {vals} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--reference-max-time", type=float, default=600.0,
                        help="time box (s) for the reference preset's training")
    parser.add_argument("--default-max-time", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "biclum"), help="stem of the .json / .md results")
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--max-time", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.max_time, args.threads), default=float))
        return
    prov = provenance()
    records = []
    for name in args.datasets:
        for method in args.methods:
            limit = {"reference": args.reference_max_time, "default": args.default_max_time}.get(method)
            cmd = [sys.executable, __file__, "--one", name, method, "--threads", str(args.threads)]
            cmd += ["--max-time", str(limit)] if limit else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            records.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps({k: v for k, v in records[-1].items() if k != "metrics"} | {
                "foscttm": records[-1]["metrics"].get("foscttm")}), flush=True)
    write_results(args.out, records, markdown(records), prov)
    print(markdown(records))


if __name__ == "__main__":
    main()
