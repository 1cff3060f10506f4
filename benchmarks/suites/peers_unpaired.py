"""Peer benchmark, unpaired integration: CellBridge BiCLUM vs MaxFuse, scGLUE, Harmony and joint PCA.

Paired datasets are integrated *as unpaired* (the tools never see the pairing); the pairing is
used only to score FOSCTTM. Methods (adapters and the workflows they follow are documented in
``benchmarks/suites/_peer_methods.py``):

  biclum_default    ``cb.BiCLUM(rna, other, modality=..., preset="default", seed=s)``
  biclum_default_torch_dropout  the default with torch's dropout (the default before session 11;
                    its cached rows are those of ``biclum_default`` run before then, which
                    this variant reproduces bit for bit)
  biclum_default_cca_reg001  the default with the CCA refinement's former ridge ``cca_reg=0.01``
  biclum_default_uncentred  the default before session 9: ``latent_centering="none"``,
                    ``cca_reg=0.01``
  biclum_default_150ep  that default with ``max_epochs=150`` (the default before 75 epochs)
  biclum_previous_default  the default before ``mnn_smooth=15, pair_refine=1`` (both 0; 150 epochs)
  biclum_reference  the ``reference`` preset, time-boxed with ``train(max_time=...)``
  maxfuse           MaxFuse 0.0.2 (ADT: protein -> gene links; ATAC: ``cb.pp.gene_activity``)
  scglue            scGLUE on RNA + ATAC *peaks* (guidance graph from the BED annotation), time-boxed
  harmony           harmonypy on the joint PCA of the shared features (modality = batch)
  pca               joint PCA of the shared features (``prepare_unpaired(...).shared_pca(50)``)

Datasets: teaseq_pbmc (46 ADT), teaseq_weak13 (derived weak-linkage case: 2,000 RNA genes, 13
proteins of which 5 link to panel genes, seeded; see ``_peer_methods.load_dataset``),
bmmc_cite_small (134 ADT, weak: 1,000-gene panel), bmmc_multiome_small, mop_snare.
pbmc10k_cite_unnamed has no gene/protein names, so no feature links exist and it cannot be
integrated as unpaired: it is in the paired suite only.

One metric code for every method (``cellbridge.metrics``): ``transfer_accuracy`` (5-NN) both
directions, ``mean_average_precision`` and ``foscttm`` (via ``integration_metrics(z_other, z_rna,
labels_other, labels_rna, paired=True, seed=0)``, which also gives omics mixing / biology
conservation). Each run is one subprocess, one thread, ``nice -n 10``; its embeddings are cached
under /work/peer_runs/unpaired/DATASET/METHOD/seedS.npz (+ .json: seconds, peak RSS, epochs,
load average), so re-scoring or re-running a few rows is cheap.

    python benchmarks/suites/peers_unpaired.py                          # everything, seeds 0 1 2
    python benchmarks/suites/peers_unpaired.py --datasets teaseq_pbmc --methods biclum_default --merge --rerun
    python benchmarks/suites/peers_unpaired.py --metrics-only --merge --rescore   # re-score cached runs

Run with the peers' venv and CellBridge on PYTHONPATH (see benchmarks/peers-requirements.txt).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parent))       # benchmarks/suites/

import _peer_methods as P  # noqa: E402

DATASETS = ["teaseq_pbmc", "teaseq_weak13", "bmmc_cite_small", "bmmc_multiome_small", "mop_snare"]
METHODS = ["biclum_default", "biclum_default_torch_dropout", "biclum_default_cca_reg001", "biclum_default_uncentred", "biclum_default_150ep", "biclum_previous_default", "biclum_reference", "maxfuse", "scglue", "harmony", "pca"]
#: training time boxes (s): method -> {dataset or "*": seconds}
TIME_BOXES = {"biclum_reference": {"*": 90, "mop_snare": 600},
              "biclum_default": {"mop_snare": 1100},
              "biclum_default_torch_dropout": {"mop_snare": 1100},
              "biclum_default_uncentred": {"mop_snare": 1100},
              "biclum_default_150ep": {"mop_snare": 1100},
              "biclum_previous_default": {"mop_snare": 600},
              "scglue": {"*": 120, "mop_snare": 600}}
COLUMNS = [("transfer_accuracy_a_to_b", "acc other→RNA", True),
           ("transfer_accuracy_b_to_a", "acc RNA→other", True),
           ("map", "MAP", True),
           ("foscttm", "FOSCTTM ↓", False),
           ("omics_mixing", "omics mixing", True),
           ("biology_conservation", "bio conservation", True)]


def applicable(dataset: str, method: str) -> bool:
    return not (method == "scglue" and dataset in ("teaseq_pbmc", "teaseq_weak13", "bmmc_cite_small"))


def score(npz, info) -> dict:
    import cellbridge as cb
    from _common import finite_or_none

    m = cb.metrics.integration_metrics(npz["z_other"], npz["z_rna"], npz["labels_other"], npz["labels_rna"],
                                       paired=True, seed=0)
    return {k: finite_or_none(float(v)) for k, v in m.items()}


if __name__ == "__main__":
    P.main("unpaired", Path(__file__).resolve(), P.UNPAIRED, DATASETS, METHODS, TIME_BOXES, score, COLUMNS,
           __doc__, applicable)
