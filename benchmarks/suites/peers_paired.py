"""Peer benchmark, paired clustering: CellBridge scMDCF vs WNN, totalVI, MultiVI, MOFA+ and PCA baselines.

Every method sees both modalities of the same cells (RNA + ADT or RNA + ATAC peaks). Methods
(adapters and the documented workflows they follow: ``benchmarks/suites/_peer_methods.py``):

  scmdcf_default      ``cb.scMDCF(rna, other, n_clusters=K, seed=s)``; ``train()``; ``predict_clusters()``
  scmdcf_estimated_k  ``n_clusters=None`` (scMDCF estimates K; NMI/ARI at the true K from Leiden-to-K
                      on its embedding, the estimated K and its own clustering's NMI/ARI also recorded)
  wnn                 muon WNN graph (``mu.pp.neighbors``) on RNA PCA + ADT PCA / ATAC LSI, Leiden to K
  totalvi             scvi-tools totalVI (CITE sets), Leiden to K on its latent space
  multivi             scvi-tools MultiVI (RNA+ATAC sets), time-boxed, Leiden to K on its latent space
  mofa                MOFA+ (mofapy2 via ``muon.tl.mofa``), Leiden to K on the factors
  pca_concat          per-modality PCA 50 of CellBridge's z-scored paired preparation, concatenated
  pca_rna             RNA PCA 50 alone

Leiden-to-K is one code for all (15-NN graph, resolution bisected to the true K:
``cellbridge.models.scmdcf.leiden_graph_n_clusters``). Metrics (one code for all): NMI and ARI at
the true K (``cellbridge.metrics.clustering_metrics``), and the 15-NN 5-fold cross-validated
label-transfer accuracy of each embedding (``_common.cv_knn_accuracy``; WNN gives a graph, not an
embedding, so it has none). Each run is one subprocess, one thread, ``nice -n 10``; outputs are
cached under /work/peer_runs/paired/DATASET/METHOD/seedS.npz (+ .json).

    python benchmarks/suites/peers_paired.py                         # everything, seeds 0 1 2
    python benchmarks/suites/peers_paired.py --datasets teaseq_pbmc --methods scmdcf_default --merge --rerun
    python benchmarks/suites/peers_paired.py --metrics-only --merge --rescore  # re-score cached runs
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parent))       # benchmarks/suites/

import _peer_methods as P  # noqa: E402

# teaseq_weak13: the paired form of the weak-linkage case (13 proteins, a 2,000-gene RNA panel)
DATASETS = ["teaseq_pbmc", "teaseq_weak13", "bmmc_cite_small", "bmmc_multiome_small", "pbmc10k_cite_unnamed",
            "mop_snare"]
METHODS = ["scmdcf_default", "scmdcf_estimated_k", "wnn", "totalvi", "multivi", "mofa", "pca_concat", "pca_rna"]
TIME_BOXES = {"multivi": {"*": 120, "mop_snare": 600}, "totalvi": {"*": 120, "pbmc10k_cite_unnamed": 300}}
COLUMNS = [("nmi", "NMI", True), ("ari", "ARI", True), ("k_used", "K used", None), ("k_estimated", "K estimated", None),
           ("nmi_estimated_k", "NMI at est. K", None),
           ("cv_accuracy", "15-NN CV acc", True)]
ATAC = ("bmmc_multiome_small", "mop_snare")


def applicable(dataset: str, method: str) -> bool:
    if method == "totalvi":
        return dataset not in ATAC
    if method == "multivi":
        return dataset in ATAC
    return True


def score(npz, info) -> dict:
    import cellbridge as cb
    from _common import cv_knn_accuracy, finite_or_none

    truth = npz["labels_true"]
    m = cb.metrics.clustering_metrics(npz["labels_pred"].astype(str), truth)
    out = {"nmi": m["nmi"], "ari": m["ari"], "ami": m["ami"], "k_used": int(len(set(npz["labels_pred"].tolist())))}
    if "z" in npz:
        out["cv_accuracy"] = cv_knn_accuracy(npz["z"], truth, k=15, folds=5, seed=0)
    if "labels_estimated_k" in npz:
        e = cb.metrics.clustering_metrics(npz["labels_estimated_k"].astype(str), truth)
        out.update(k_estimated=int(len(set(npz["labels_estimated_k"].tolist()))),
                   nmi_estimated_k=e["nmi"], ari_estimated_k=e["ari"])
    return {k: finite_or_none(v) for k, v in out.items()}


if __name__ == "__main__":
    P.main("paired", Path(__file__).resolve(), P.PAIRED, DATASETS, METHODS, TIME_BOXES, score, COLUMNS,
           __doc__, applicable)
