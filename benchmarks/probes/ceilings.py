"""Probe: what limits the defaults on the sets where a peer or a baseline is ahead.

Four modes; each prints a provenance line, then one JSON line per measurement (labels are used
only for scoring)::

    OMP_NUM_THREADS=1 python benchmarks/probes/ceilings.py pairs bmmc_cite_small,teaseq_pbmc
    OMP_NUM_THREADS=1 python benchmarks/probes/ceilings.py cca bmmc_cite_small,mop_snare
    OMP_NUM_THREADS=1 python benchmarks/probes/ceilings.py signal bmmc_multiome_small,mop_snare
    python benchmarks/probes/ceilings.py biclum-posthoc   # all threads, as the suite scores
    OMP_NUM_THREADS=1 python benchmarks/probes/ceilings.py scmdcf-posthoc

(The suite scores in its parent process with every thread. On bmmc_multiome_small 22 of the 500
ATAC cells share one embedding; until session 10 the 5-NN votes among their tied distances, and
with them the transfer accuracy, moved by about 0.01 with the thread count: the lines of
``results/probes/ceilings_*.jsonl`` were scored that way.)

- ``pairs``: label precision and coverage of BiCLUM's cell pairs (default preset) for
  ``k_mnn`` x ``mnn_smooth`` x ``pair_refine``, beside chance (sum of squared label fractions).
- ``cca``: label precision of the pairs after the CCA refinement when the CCA reads only the first
  ``m`` principal components of each modality and for several ridges ``reg`` (``cca_reg``).
- ``signal`` (RNA+ATAC sets): 15-NN label purity of each modality's own representation (RNA
  PCA, gene-activity PCA, TF-IDF/LSI of the peaks), and the default's pair precision with the
  LSI in place of the gene-activity PCA (the within-ATAC neighbours used for smoothing and CCA).
- ``biclum-posthoc``: on the cached ``biclum_default_uncentred`` embeddings of the unpaired peer
  suite (``benchmarks/suites/peers_unpaired.py``; the default as it was before
  ``latent_centering``, which this mode led to), the suite's four metrics after per-modality
  centring, z-scoring or L2 normalisation, after an MNN correction of the other modality in the
  learned space, and for the seeds' embeddings side by side; plus the label precision of MNN
  pairs searched in the learned space (what refining pairs during training could start from).
- ``scmdcf-posthoc``: on the cached ``scmdcf_default`` runs of the paired suite, NMI / ARI of
  the default's own clustering against Leiden-to-K (the suite's code), 10-restart KMeans of
  the same embedding, and a full-covariance or diagonal Gaussian mixture per ensemble member
  combined by the default's consensus.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "suites"))
from _common import DATA, load_dataset, load_paired, print_provenance  # noqa: E402
from _peer_methods import RUNS  # noqa: E402

UNPAIRED_SETS = ("teaseq_pbmc", "teaseq_weak13", "bmmc_cite_small", "bmmc_multiome_small", "mop_snare")
PAIRED_SETS = ("teaseq_pbmc", "bmmc_cite_small", "bmmc_multiome_small", "mop_snare", "pbmc10k_cite_unnamed")


def _emit(**record) -> None:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}), flush=True)


def _precision(pairs: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    return float(np.mean(labels_a[pairs[:, 0]] == labels_b[pairs[:, 1]]))


def _unpaired_inputs(name: str):
    """``(rna, other, spec, labels)``: ``other`` as BiCLUM gets it (gene activity or ADT), the
    derived weak-linkage set (teaseq_weak13) included."""
    import cellbridge as cb

    rna, other, spec, _ = load_dataset(name)
    if spec["modality"] == "atac":
        other = cb.pp.gene_activity(other, DATA / spec["annotation"])
    return rna, other, spec, rna.obs[spec["label"]].astype(str).to_numpy()


def pairs_mode(names: list[str]) -> None:
    from cellbridge.models.biclum import resolve_params
    from cellbridge.models.biclum._data import cell_pairs, prepare_unpaired

    for name in names:
        rna, other, spec, labels = _unpaired_inputs(name)
        data = prepare_unpaired(rna, other, modality=spec["modality"], seed=0)
        fractions = np.unique(labels, return_counts=True)[1] / len(labels)
        for k in (3, 5, 10, 15, 20, 30):
            for smooth in (5, 15):
                for refine in (0, 1):
                    over = dict(k_mnn=k, mnn_smooth=smooth, pair_refine=refine)
                    found = cell_pairs(data, resolve_params("default", spec["modality"], over), 0)  # (rna, other)
                    _emit(mode="pairs", dataset=name, cells=len(labels), chance=float((fractions ** 2).sum()),
                          majority=float(fractions.max()), **over, n_pairs=len(found),
                          label_precision=_precision(found, labels, labels),
                          coverage=(np.unique(found[:, 0]).size + np.unique(found[:, 1]).size) / (2 * len(labels)))


def cca_mode(names: list[str]) -> None:
    from cellbridge.models.biclum import resolve_params
    from cellbridge.models.biclum._data import prepare_unpaired
    from cellbridge.neighbors import knn, mnn_pairs, smooth_over_neighbors
    from cellbridge.pp._matrix import cca

    for name in names:
        rna, other, spec, labels = _unpaired_inputs(name)
        data = prepare_unpaired(rna, other, modality=spec["modality"], seed=0)
        params = resolve_params("default", spec["modality"], {})
        search = dict(k=params.k_mnn, ann=params.mnn_ann, seed=0)
        own = (data.other.pca, data.rna.pca)
        neighbours = [knn(x, x, params.mnn_smooth, ann=params.mnn_ann, seed=0) for x in own]

        def smooth(x, m):
            return smooth_over_neighbors(x, neighbours[m], params.mnn_smooth_weight)

        a, b = data.shared_pca(params.mnn_dims, seed=0)
        first = mnn_pairs(smooth(a, 0), smooth(b, 1), **search)  # (other, rna): the pairs before refinement
        _emit(mode="cca", dataset=name, stage="before refinement", n_pairs=len(first),
              pair_label_precision=_precision(first, labels, labels))
        for m in (10, 30, 100):
            parts = [x[:, :m] for x in own]
            for reg in (0.01, 0.1, 1.0, 3.0):
                (wa, ma), (wb, mb), corr = cca(parts[0][first[:, 0]], parts[1][first[:, 1]], params.cca_dims, reg=reg)
                found = mnn_pairs(smooth(((parts[0] - ma) @ wa).astype(np.float32), 0),
                                  smooth(((parts[1] - mb) @ wb).astype(np.float32), 1), **search)
                _emit(mode="cca", dataset=name, cca_input_pcs=[x.shape[1] for x in parts], cca_reg=reg,
                      first_correlation=float(corr[0]), n_pairs=len(found),
                      pair_label_precision=_precision(found, labels, labels))


def signal_mode(names: list[str]) -> None:
    import cellbridge as cb
    from cellbridge.models.biclum import resolve_params
    from cellbridge.models.biclum._data import cell_pairs, prepare_unpaired
    from cellbridge.neighbors import knn_indices
    from cellbridge.pp._matrix import tfidf_lsi

    for name in names:
        rna, peaks, spec = load_paired(name)
        if spec["modality"] != "atac":
            raise SystemExit(f"signal mode is for RNA+ATAC sets; {name} is {spec['modality']}")
        activity = cb.pp.gene_activity(peaks, DATA / spec["annotation"])
        labels = rna.obs[spec["label"]].astype(str).to_numpy()
        data = prepare_unpaired(rna, activity, modality="atac", seed=0)
        reps = {"rna_pca": data.rna.pca, "gene_activity_pca": data.other.pca,
                "peaks_lsi": tfidf_lsi(peaks[activity.obs_names].X, 50, seed=0)}
        for rep, X in reps.items():
            neighbours = knn_indices(X, 15)[1]
            _emit(mode="signal", dataset=name, representation=rep,
                  knn15_label_purity=float((labels[neighbours] == labels[:, None]).mean()))
        params = resolve_params("default", "atac", {})
        for rep in ("gene_activity_pca", "peaks_lsi"):
            data.other.pca = reps[rep]
            found = cell_pairs(data, params, 0)
            _emit(mode="signal", dataset=name, atac_neighbours_from=rep, n_pairs=len(found),
                  pair_label_precision=_precision(found, labels, labels))


def _unpaired_metrics(zo: np.ndarray, zr: np.ndarray, lo: np.ndarray, lr: np.ndarray) -> dict[str, float]:
    """The unpaired suite's four headline metrics (``cellbridge.metrics``, as in its score)."""
    import cellbridge as cb

    zo, zr = np.asarray(zo, np.float32), np.asarray(zr, np.float32)
    return {"transfer_other_to_rna": cb.metrics.transfer_accuracy(zo, lo, zr, lr),
            "transfer_rna_to_other": cb.metrics.transfer_accuracy(zr, lr, zo, lo),
            "map": cb.metrics.mean_average_precision(np.vstack([zo, zr]), np.concatenate([lo, lr])),
            "foscttm": cb.metrics.foscttm(zo, zr)}


def _mnn_correct(zo: np.ndarray, zr: np.ndarray, k: int, fraction: float) -> np.ndarray:
    """fastMNN-style: move each other-modality cell by ``fraction`` of the mean correction vector
    of its 20 nearest anchor cells (MNN pairs with ``k`` neighbours in the learned space)."""
    from cellbridge.neighbors import knn, mnn_pairs

    pairs = mnn_pairs(zo, zr, k=k, ann="ivf")  # (other row, rna row)
    vectors, anchors = zr[pairs[:, 1]] - zo[pairs[:, 0]], zo[pairs[:, 0]]
    nearest = knn(anchors, zo, min(20, len(anchors)), ann="ivf")
    return zo + fraction * np.stack([vectors[row[row >= 0]].mean(0) for row in nearest])


def biclum_posthoc_mode() -> None:
    from cellbridge.neighbors import mnn_pairs

    for name in UNPAIRED_SETS:
        runs = sorted(glob.glob(str(RUNS / "unpaired" / name / "biclum_default_uncentred" / "seed*.npz")))
        cached = [np.load(f) for f in runs]
        for path, run in zip(runs, cached):
            zo, zr = run["z_other"].astype(np.float32), run["z_rna"].astype(np.float32)
            lo, lr = run["labels_other"], run["labels_rna"]
            seed = int(Path(path).stem.removeprefix("seed"))
            centred = (zo - zo.mean(0), zr - zr.mean(0))
            variants = {"none": (zo, zr), "centre": centred,
                        "zscore": ((zo - zo.mean(0)) / zo.std(0), (zr - zr.mean(0)) / zr.std(0)),
                        "l2": tuple(z / np.linalg.norm(z, axis=1, keepdims=True) for z in (zo, zr))}
            for k in (10, 30):
                for fraction in (0.5, 1.0):
                    variants[f"mnn_correct_k{k}_f{fraction}"] = (_mnn_correct(zo, zr, k, fraction), zr)
            for variant, (a, b) in variants.items():
                _emit(mode="biclum-posthoc", dataset=name, seed=seed, variant=variant, **_unpaired_metrics(a, b, lo, lr))
            for k in (10, 30):
                found = mnn_pairs(zo, zr, k=k, ann="ivf")
                _emit(mode="biclum-posthoc", dataset=name, seed=seed, latent_mnn_k=k, n_pairs=len(found),
                      pair_label_precision=_precision(found, lo, lr))
        if len(cached) > 1:
            zo = np.hstack([r["z_other"] - r["z_other"].mean(0) for r in cached])
            zr = np.hstack([r["z_rna"] - r["z_rna"].mean(0) for r in cached])
            _emit(mode="biclum-posthoc", dataset=name, seeds=len(cached), variant="seeds_side_by_side_centred",
                  **_unpaired_metrics(zo, zr, cached[0]["labels_other"], cached[0]["labels_rna"]))


def _member_gmm(z: np.ndarray, k: int, seed: int, covariance: str) -> np.ndarray:
    """A Gaussian mixture per ensemble member (8 columns each, as the default's z), then the
    default's consensus of the members' labels (one member: its labels)."""
    from sklearn.mixture import GaussianMixture

    from cellbridge.tl.clustering import consensus_clusters

    labels = [GaussianMixture(k, covariance_type=covariance, n_init=3, random_state=seed, reg_covar=1e-4)
              .fit_predict(z[:, i:i + 8]) for i in range(0, z.shape[1], 8)]
    return labels[0] if len(labels) == 1 else consensus_clusters(labels, k, seed=seed)


def scmdcf_posthoc_mode() -> None:
    from _peer_methods import leiden_to_k
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    for name in PAIRED_SETS:
        for path in sorted(glob.glob(str(RUNS / "paired" / name / "scmdcf_default" / "seed*.npz"))):
            run = np.load(path)
            z, truth, seed = run["z"], run["labels_true"], int(Path(path).stem.removeprefix("seed"))
            k = len(np.unique(truth))
            for clustering, labels in (("own", run["labels_pred"]), ("leiden_to_k", leiden_to_k(z, k, seed)),
                                       ("kmeans_10", KMeans(k, n_init=10, random_state=seed).fit_predict(z)),
                                       ("gmm_full", _member_gmm(z, k, seed, "full")),
                                       ("gmm_diag", _member_gmm(z, k, seed, "diag"))):
                _emit(mode="scmdcf-posthoc", dataset=name, seed=seed, k=k, clustering=clustering,
                      clusters=int(len(np.unique(labels))), nmi=float(normalized_mutual_info_score(truth, labels)),
                      ari=float(adjusted_rand_score(truth, labels)))


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else []
    modes = {"pairs": lambda: pairs_mode(names), "cca": lambda: cca_mode(names), "signal": lambda: signal_mode(names),
             "biclum-posthoc": biclum_posthoc_mode, "scmdcf-posthoc": scmdcf_posthoc_mode}
    if mode not in modes or (mode in ("pairs", "cca", "signal") and not names):
        raise SystemExit(__doc__)
    print_provenance()
    modes[mode]()


if __name__ == "__main__":
    main()
