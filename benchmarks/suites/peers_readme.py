"""The README's short comparison tables, from the peer suites' committed JSON.

    python benchmarks/suites/peers_readme.py unpaired   # benchmarks/results/peers/unpaired.json
    python benchmarks/suites/peers_readme.py paired     # benchmarks/results/peers/paired.json

Each row: CellBridge's default (mean over its seeds) against the best other method on each
metric: peers and baselines only, CellBridge's other presets and variants are left out. Bold
marks the better of the two; ``±`` is the standard deviation over the default's seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "peers"

UNPAIRED_SETS = {"teaseq_pbmc": "TEA-seq, 46 proteins",
                 "teaseq_weak13": "TEA-seq cut to 13 proteins, 5 linked genes",
                 "bmmc_cite_small": "bmmc_cite_small, 600 cells, 41 types",
                 "bmmc_multiome_small": "bmmc_multiome_small, 500 cells, 21 types",
                 "mop_snare": "mop_snare, 10,309 cells"}
PAIRED_SETS = {"teaseq_pbmc": "TEA-seq", "teaseq_weak13": "TEA-seq cut to 13 proteins", "bmmc_cite_small": "bmmc_cite_small",
               "bmmc_multiome_small": "bmmc_multiome_small", "mop_snare": "mop_snare",
               "pbmc10k_cite_unnamed": "pbmc10k_cite_unnamed"}
NAMES = {"maxfuse": "MaxFuse", "scglue": "scGLUE", "harmony": "Harmony", "pca": "joint PCA", "wnn": "WNN",
         "totalvi": "totalVI", "multivi": "MultiVI", "mofa": "MOFA+", "pca_concat": "concat PCA",
         "pca_rna": "RNA PCA"}


def _rows(kind: str) -> list[dict]:
    return [r for r in json.loads((RESULTS / f"{kind}.json").read_text())["summary"] if r["status"] == "ok"]


def _cell(ours: dict, others: list[dict], key: str, higher: bool) -> tuple[str, str]:
    """``(ours, best other)`` cells of one metric."""
    mine = ours[key]["mean"]
    candidates = [r for r in others if r.get(key) and r[key]["mean"] is not None]
    if mine is None or not candidates:
        return ("–" if mine is None else f"{mine:.3f}"), "–"
    best = (max if higher else min)(candidates, key=lambda r: r[key]["mean"])
    theirs = best[key]["mean"]
    win = mine >= theirs if higher else mine <= theirs
    sd = ours[key].get("sd")
    spread = f" ± {sd:.3f}" if sd is not None and len(ours["seeds"]) > 1 else ""
    return (f"**{mine:.3f}**{spread}" if win else f"{mine:.3f}{spread}",
            f"{theirs:.3f} ({NAMES[best['method']]})" if win else f"**{theirs:.3f}** ({NAMES[best['method']]})")


def table(kind: str) -> str:
    rows = _rows(kind)
    if kind == "unpaired":
        sets, ours_name, keys = UNPAIRED_SETS, "biclum_default", (
            ("transfer_accuracy_a_to_b", True), ("transfer_accuracy_b_to_a", True), ("map", True), ("foscttm", False))
        head = "| dataset | seeds | CellBridge default | best peer or baseline (method) |\n|---|---|---|---|"
    else:
        sets, ours_name, keys = PAIRED_SETS, "scmdcf_default", (("nmi", True), ("ari", True), ("cv_accuracy", True))
        head = ("| dataset | seeds | scMDCF default NMI / ARI / 15-NN acc | best other NMI | best other ARI "
                "| best other 15-NN acc |\n|---|---|---|---|---|---|")
    lines = [head]
    for name, label in sets.items():
        here = [r for r in rows if r["dataset"] == name]
        ours = next((r for r in here if r["method"] == ours_name), None)
        if ours is None:
            continue
        others = [r for r in here if r["method"] in NAMES]
        cells = [_cell(ours, others, key, higher) for key, higher in keys]
        seeds = ",".join(map(str, ours["seeds"]))
        if kind == "unpaired":
            lines.append(f"| {label} | {seeds} | {' / '.join(c[0] for c in cells)} | {' / '.join(c[1] for c in cells)} |")
        else:
            lines.append(f"| {label} | {seeds} | {' / '.join(c[0] for c in cells)} | " + " | ".join(c[1] for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("unpaired", "paired"):
        raise SystemExit(__doc__)
    print(table(sys.argv[1]))
