"""BiCLUM option sweep behind the default preset (docs/methods.md; the tables are in
benchmarks/README.md, "History of the BiCLUM default").

Trains one BiCLUM per variant (a JSON list of parameter overrides) on the same prepared data,
each time-boxed, and prints FOSCTTM and 5-NN transfer accuracy in both directions, one JSON line
per variant after a provenance line:

    python benchmarks/probes/biclum_variants.py mop '[{"mnn_rep": "pca", "k_mnn": 30}]' 200
    python benchmarks/probes/biclum_variants.py tea '[{"profile": "metacells", "n_profile": 1024}]' 100
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
from _common import load_unpaired, print_provenance  # noqa: E402


def main(name: str, variants: list[dict], seconds: float) -> None:
    import torch

    import cellbridge as cb
    from cellbridge.metrics import foscttm, transfer_accuracy
    from cellbridge.models.biclum._data import cell_pairs, feature_profiles

    torch.set_num_threads(1)
    print_provenance()
    rna, other, spec = load_unpaired({"mop": "mop_snare", "tea": "teaseq_pbmc"}[name])
    labels = rna.obs[spec["label"]].astype(str).to_numpy()
    model = cb.BiCLUM(rna, other, modality=spec["modality"])
    base = model.params
    for variant in variants:
        model.params = base.replace(**variant)
        model.cell_pairs = cell_pairs(model.data, model.params, model.seed)
        model._profiles = feature_profiles(model.data, model.params, model.seed)
        cb.models.training.set_seed(0)
        model.module = model._build_module()
        summary = model.train(max_time=seconds, progress=False).train_summary_
        zo, zr = model.get_latent(other, "other"), model.get_latent(rna, "rna")
        print(json.dumps({"variant": variant, "epochs": summary["epochs"], "foscttm": foscttm(zo, zr),
                          "other_to_rna": transfer_accuracy(zo, labels, zr, labels),
                          "rna_to_other": transfer_accuracy(zr, labels, zo, labels)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]))
