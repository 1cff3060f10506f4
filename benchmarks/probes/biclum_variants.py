"""BiCLUM option sweep behind the default preset (docs/methods.md, table "How they were chosen").

Trains one BiCLUM per variant (a JSON list of parameter overrides) on the same prepared data,
each time-boxed, and prints FOSCTTM and 5-NN transfer accuracy in both directions:

    python benchmarks/biclum_variants.py mop '[{"mnn_rep": "pca", "k_mnn": 30}]' 200
    python benchmarks/biclum_variants.py tea '[{"profile": "metacells", "n_profile": 1024}]' 100
"""

from __future__ import annotations

import json
import sys

import torch

import cellbridge as cb
from cellbridge.metrics import foscttm, transfer_accuracy

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from biclum_benchmark import load  # noqa: E402


def main(name: str, variants: list[dict], seconds: float) -> None:
    torch.set_num_threads(1)
    rna, other, spec = load({"mop": "mop_snare", "tea": "teaseq_pbmc"}[name])
    labels = rna.obs[spec["label"]].astype(str).to_numpy()
    model = cb.BiCLUM(rna, other, modality=spec["modality"])
    base = dict(model.params)
    for variant in variants:
        model.params = {**base, **variant}
        model.cell_pairs = model._cell_pairs()
        model.profiles = model._build_profiles()
        cb.models.training.set_seed(0)
        model.module = model._build_module()
        h = model.train(max_time=seconds, progress=False)
        zo, zr = model.get_latent(other, "other"), model.get_latent(rna, "rna")
        print(json.dumps({"variant": variant, "epochs": len(h["loss"]), "foscttm": foscttm(zo, zr),
                          "other_to_rna": transfer_accuracy(zo, labels, zr, labels),
                          "rna_to_other": transfer_accuracy(zr, labels, zo, labels)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]))
