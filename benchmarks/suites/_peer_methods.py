"""Adapters that run CellBridge, the peer tools and the baselines for the peer benchmark suites.

Shared by ``peers_unpaired.py`` and ``peers_paired.py`` (this module belongs to both; nothing
else imports it). Every adapter takes the raw-count AnnData objects of one dataset and returns
embeddings (plus, for paired methods, cluster labels); the suites score them with one metric
code. Each adapter is run by the suites in its own subprocess with one thread.

Peer workflows followed (the tools' own documented tutorials and defaults; parameters that had
to be capped for tiny panels are noted where they are set):

- MaxFuse 0.0.2: the CITE-seq tutorial (shared = proteins and the RNA of their genes,
  active = RNA HVGs / all proteins; ``split_into_batches(max_outward_size=5000, matching_ratio=4,
  metacell_size=2)``, ``construct_graphs(15, 15, svd 40/15, resolution 2/2)``,
  ``find_initial_pivots(wt 0.3/0.3, svd 25/20)``, ``refine_pivots(wt 0.3/0.3, svd 40/None,
  cca 20)``, ``filter_bad_matches(filter_prop=0.5)``, ``get_embedding``) and, for ATAC, the
  multiome tutorial (shared = RNA vs gene activity, active = RNA HVGs / LSI of the peaks;
  weights 0.7, ``filter_prop=0.3``).
- scGLUE 0.4.1: the "stage 1/2" RNA+ATAC tutorial (RNA: 2,000 seurat_v3 HVGs, normalise, log1p,
  scale, PCA 100; ATAC: ``scglue.data.lsi(n_components=100, n_iter=15)``; guidance graph
  ``rna_anchored_guidance_graph`` from gene coordinates of the shared BED annotation; NB
  likelihood for both; ``fit_SCGLUE`` pretrain + balancing + fine-tune) with a wall-time box
  split evenly over the two training phases (the epochs reached are recorded).
- Harmony (harmonypy): ``run_harmony`` on the joint PCA of the shared features, modality as the
  batch variable, default theta/sigma (Harmony's documented use on a PCA).
- WNN: muon's ``mu.pp.neighbors`` (Hao et al. 2021, muon's WNN tutorial) on per-modality
  representations (RNA PCA 50; ADT: CLR + PCA; ATAC: TF-IDF/LSI 50 without its first component),
  weighted Leiden on the WNN graph with the resolution bisected to the true K.
- totalVI (scvi-tools): the totalVI tutorial (4,000 seurat_v3 HVGs from counts, proteins in
  ``obsm``, ``TOTALVI.setup_anndata(layer="counts", protein_expression_obsm_key=...)``,
  ``train()`` with its default epochs; ``get_latent_representation()``), time-boxed.
- MultiVI (scvi-tools 1.4): the MultiVI MuData tutorial (``MuData({"rna", "atac"})``, peaks kept
  in more than 1% of cells, ``MULTIVI.setup_mudata(modalities={"rna_layer": "rna", "atac_layer":
  "atac"})``; ``train()`` default epochs), time-boxed with
  Lightning's ``max_time``; the epochs reached are recorded.
- MOFA+ (mofapy2 through ``muon.tl.mofa``): muon's MOFA tutorial (log-normalised HVGs, CLR ADT or
  TF-IDF HV peaks, ``use_var="highly_variable"``, 10 factors by default here, ``convergence_mode``
  "fast"), Leiden to K on the factors.

Run-time patches (documented in ``benchmarks/peers-requirements.txt``): MaxFuse 0.0.2's graph
step calls ``anndata.AnnData(..., dtype=...)`` (removed in anndata 0.12) and scanpy's
approximate kNN (fails on scipy 1.17 sparse arrays, ``getnnz``); :func:`_patch_maxfuse`
replaces ``maxfuse.graph.construct_graph`` with an equivalent that builds the same UMAP
connectivities with scanpy's exact (scikit-learn) kNN transformer. scGLUE's balancing step
calls ``sc.pp.neighbors`` on the pynndescent path above 4,096 cells, which hits the same
``getnnz`` failure: :func:`_patch_scanpy_getnnz` converts the matrix to ``csr_matrix`` there.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------------------------
# data preparation shared by several adapters
# ------------------------------------------------------------------------------------------------


def dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def lognorm(X, target: float = 1e4) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    s = np.asarray(X.sum(1)).ravel()
    s[s == 0] = 1
    X = sp.diags(target / s) @ X
    X.data = np.log1p(X.data)
    return sp.csr_matrix(X)


def zscore(X: np.ndarray, clip: float | None = 10.0) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    sd = X.std(0)
    sd[sd == 0] = 1
    Z = (X - X.mean(0)) / sd
    return np.clip(Z, -clip, clip) if clip else Z


def clr(X) -> np.ndarray:
    """Per-cell CLR of ADT counts (log1p(x) minus the cell's mean log1p), as Seurat's margin 1."""
    L = np.log1p(dense(X))
    return L - L.mean(1, keepdims=True)


def pca(X, n: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    X = dense(X)
    n = max(2, min(n, X.shape[1] - 1, X.shape[0] - 1))
    return PCA(n_components=n, random_state=seed).fit_transform(X).astype(np.float32)


def tfidf_lsi(X, n: int, seed: int, drop_first: bool = True) -> np.ndarray:
    """Signac-style TF-IDF (log1p of tf * idf * 1e4) + truncated SVD, rows unit-scaled later."""
    from sklearn.decomposition import TruncatedSVD

    X = sp.csr_matrix(X, dtype=np.float32)
    X.data[:] = np.minimum(X.data, 1)  # binarise
    tf = sp.diags(1 / np.maximum(np.asarray(X.sum(1)).ravel(), 1)) @ X
    idf = X.shape[0] / np.maximum(np.asarray(X.sum(0)).ravel(), 1)
    T = sp.csr_matrix(tf @ sp.diags(idf))
    T.data = np.log1p(T.data * 1e4)
    n = min(n + int(drop_first), min(T.shape) - 1)
    Z = TruncatedSVD(n_components=n, random_state=seed, algorithm="arpack").fit_transform(T)
    Z = Z[:, 1:] if drop_first else Z
    return zscore(Z, clip=None)


def hvg_seurat_v3(counts, n: int) -> np.ndarray:
    """Boolean mask of the ``n`` seurat_v3 highly variable genes of a counts matrix (scanpy)."""
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32))
    n = min(n, a.n_vars)
    sc.pp.highly_variable_genes(a, n_top_genes=n, flavor="seurat_v3")
    return a.var["highly_variable"].to_numpy()


def gene_activity(other, spec, data_dir: Path):
    import cellbridge as cb

    return cb.pp.gene_activity(other, data_dir / spec["annotation"])


def protein_pairs(rna, adt) -> list[tuple[str, str]]:
    """(protein, gene) pairs whose gene is in the RNA panel (CellBridge's protein -> gene map)."""
    import warnings

    import cellbridge as cb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cb.pp.protein_to_gene(list(adt.var_names))
    m = m[m.isin(rna.var_names)]
    return list(m.items())


# ------------------------------------------------------------------------------------------------
# unpaired adapters: return (z_other, z_rna, info)
# ------------------------------------------------------------------------------------------------


def _other_input(other, spec, data_dir):
    """What CellBridge's unpaired preparation takes as the second modality: ADT counts, or the
    gene activity of the ATAC peaks (``cb.pp.gene_activity`` with the set's annotation)."""
    return gene_activity(other, spec, data_dir) if spec["modality"] == "atac" else other


def u_pca(rna, other, spec, seed, max_time=None, data_dir=None, **_):
    from cellbridge.models.biclum._data import prepare_unpaired

    other = _other_input(other, spec, data_dir)
    d = prepare_unpaired(rna, other, modality=spec["modality"], seed=seed)
    z_o, z_r = d.shared_pca(50, seed=seed)
    return z_o, z_r, {"n_shared_features": int(len(d.feature_pairs))}


def u_harmony(rna, other, spec, seed, max_time=None, data_dir=None, **_):
    import harmonypy
    import pandas as pd

    z_o, z_r, info = u_pca(rna, other, spec, seed, data_dir=data_dir)
    Z = np.vstack([z_o, z_r]).astype(np.float64)
    meta = pd.DataFrame({"modality": np.repeat(["other", "rna"], [len(z_o), len(z_r)])})
    ho = harmonypy.run_harmony(Z, meta, "modality", random_state=seed, verbose=False, ncores=1)
    C = np.asarray(ho.Z_corr)
    C = C.T if C.shape[0] != Z.shape[0] else C
    return C[: len(z_o)].astype(np.float32), C[len(z_o):].astype(np.float32), info


def _biclum(preset, torch_dropout=False, **overrides):
    def run(rna, other, spec, seed, max_time=None, data_dir=None, **_):
        import cellbridge as cb

        if torch_dropout:  # the encoders' dropout before session 11 (each run is its own process)
            from torch import nn

            from cellbridge.models import _nn
            _nn.Dropout.forward = nn.Dropout.forward
        other = _other_input(other, spec, data_dir)
        m = cb.BiCLUM(rna, other, modality=spec["modality"], preset=preset, seed=seed, **overrides)
        summary = m.train(max_time=max_time, progress=False).train_summary_
        info = {"epochs": summary["epochs"], "max_time": max_time, "train_seconds": float(summary["seconds"]),
                "params": {k: getattr(m.params, k) for k in ("mnn_smooth", "pair_refine", "cca_dims", "cca_reg",
                                                           "max_epochs", "latent_centering")}}
        return np.asarray(m.get_latent(other, "other")), np.asarray(m.get_latent(rna, "rna")), info
    return run


def _patch_maxfuse():
    """Replace ``maxfuse.graph.construct_graph`` (see the module docstring for why)."""
    import anndata as ad
    import scanpy as sc
    from maxfuse import graph, utils

    if getattr(graph, "_cellbridge_patched", False):
        return

    def construct_graph(arr, randomized_svd=False, svd_runs=1, svd_components=None,
                        n_neighbors=15, metric="correlation", verbose=False):
        arr = utils.drop_zero_variability_columns(arr_lst=[arr, arr])[0]
        arr = utils.svd_embedding(arr=arr, n_components=svd_components,
                                  randomized=randomized_svd, n_runs=svd_runs)
        a = ad.AnnData(np.asarray(arr, dtype=np.float32))
        sc.pp.neighbors(a, n_neighbors=n_neighbors, n_pcs=None, use_rep="X", metric=metric,
                        transformer="sklearn")
        C = sp.csr_matrix(a.obsp["connectivities"])
        rows, cols = C.nonzero()
        vals = np.asarray(C[rows, cols]).ravel()
        return rows, cols, vals

    graph.construct_graph = construct_graph
    graph._cellbridge_patched = True


def u_maxfuse(rna, other, spec, seed, max_time=None, data_dir=None, **_):
    import maxfuse as mf

    _patch_maxfuse()
    np.random.seed(seed)
    rna_ln = lognorm(rna.X)
    if spec["modality"] == "protein":
        pairs = protein_pairs(rna, other)
        g_idx = rna.var_names.get_indexer([g for _, g in pairs])
        p_idx = other.var_names.get_indexer([p for p, _ in pairs])
        shared1 = zscore(dense(rna_ln[:, g_idx]))
        shared2 = zscore(dense(lognorm(other.X)[:, p_idx]))
        hv = hvg_seurat_v3(rna.X, 2000)
        active1 = zscore(dense(rna_ln[:, hv]))
        active2 = zscore(dense(lognorm(other.X)))
        wt, filt, svd_g, svd_i, svd_r = 0.3, 0.5, (40, 15), (25, 20), (40, None)
    else:
        ga = gene_activity(other, spec, data_dir)
        genes = rna.var_names.intersection(ga.var_names)
        ga_ln = lognorm(ga[:, genes].X)
        r_sub = lognorm(rna[:, genes].X)
        # shared: genes variable in both (tutorial: HVGs of RNA present in gene activity)
        hv_r = hvg_seurat_v3(rna[:, genes].X, 3000)
        keep = hv_r & (np.asarray((ga[:, genes].X > 0).sum(0)).ravel() > 0)
        shared1 = zscore(dense(r_sub[:, keep]))
        shared2 = zscore(dense(ga_ln[:, keep]))
        hv = hvg_seurat_v3(rna.X, 2000)
        active1 = zscore(dense(rna_ln[:, hv]))
        active2 = tfidf_lsi(other.X, 50, seed)
        pairs = list(zip(genes[keep], genes[keep]))
        wt, filt, svd_g, svd_i, svd_r = 0.7, 0.3, (30, 15), (20, 20), (30, None)
    ns = shared1.shape[1]
    cap = lambda c, n: None if c is None else max(1, min(c, n - 1))  # noqa: E731
    fusor = mf.model.Fusor(shared_arr1=shared1, shared_arr2=shared2, active_arr1=active1,
                           active_arr2=active2, labels1=None, labels2=None)
    fusor.split_into_batches(max_outward_size=5000, matching_ratio=4, metacell_size=2, seed=seed,
                             verbose=False)
    fusor.construct_graphs(n_neighbors1=15, n_neighbors2=15, svd_components1=cap(svd_g[0], active1.shape[1]),
                           svd_components2=cap(svd_g[1], active2.shape[1]), resolution1=2, resolution2=2,
                           leiden_seed=seed, verbose=False)
    fusor.find_initial_pivots(wt1=wt, wt2=wt, svd_components1=cap(svd_i[0], ns),
                              svd_components2=cap(svd_i[1], ns), verbose=False)
    cca = max(1, min(20, active1.shape[1] - 1, active2.shape[1] - 1))
    fusor.refine_pivots(wt1=wt, wt2=wt, svd_components1=cap(svd_r[0], active1.shape[1]),
                        svd_components2=cap(svd_r[1], active2.shape[1]), cca_components=cca,
                        n_iters=1, randomized_svd=False, svd_runs=1, verbose=False)
    fusor.filter_bad_matches(target="pivot", filter_prop=filt, verbose=False)
    z_r, z_o = fusor.get_embedding(active_arr1=fusor.active_arr1, active_arr2=fusor.active_arr2)
    return (np.asarray(z_o, dtype=np.float32), np.asarray(z_r, dtype=np.float32),
            {"n_shared_features": int(ns), "cca_components": int(cca)})


def _bed_coordinates(names, bed_path: Path):
    import pandas as pd

    bed = pd.read_csv(bed_path, sep="\t", header=None, comment="#")
    ncol = bed.shape[1]
    bed = bed.rename(columns={0: "chrom", 1: "chromStart", 2: "chromEnd", 3: "name", ncol - 1: "strand"})
    bed = bed.drop_duplicates("name").set_index("name")
    return bed.reindex(pd.Index(names))[["chrom", "chromStart", "chromEnd", "strand"]]


class _TimeBox:
    """scGLUE training plugin: stop an ignite engine once the wall-clock deadline has passed and
    count the epochs run."""

    def __init__(self, deadline: float, counter: list):
        self.deadline, self.counter = deadline, counter

    def attach(self, net, trainer, train_engine, val_engine, train_loader, val_loader, directory):
        from ignite.engine import Events

        self.counter.append(0)

        @train_engine.on(Events.EPOCH_COMPLETED)
        def _stop(engine):
            self.counter[-1] = engine.state.epoch
            if time.time() > self.deadline:
                engine.terminate()


def _patch_scanpy_getnnz():
    """scanpy 1.11.5 + scipy 1.17: above 4,096 cells ``sc.pp.neighbors`` takes the pynndescent
    path, whose sparse distance matrix is a ``csr_array`` without ``getnnz``
    (``scanpy.neighbors._common._ind_dist_shortcut``). Wrap that helper to pass it a
    ``csr_matrix`` (same values). Hit by scGLUE's balancing step on mop_snare."""
    from scanpy.neighbors import _common as c

    if getattr(c, "_cellbridge_patched", False):
        return
    orig = c._ind_dist_shortcut
    c._ind_dist_shortcut = lambda d: orig(sp.csr_matrix(d) if sp.issparse(d) else d)
    c._cellbridge_patched = True


def u_scglue(rna, other, spec, seed, max_time=None, data_dir=None, **_):
    if spec["modality"] != "atac":
        raise NotApplicable("scGLUE integrates RNA with ATAC peaks; this set's other modality is ADT")
    _patch_scanpy_getnnz()
    import itertools

    import anndata as ad
    import scanpy as sc
    import scglue
    import torch
    from cellbridge.pp.atac import peak_coordinates
    from scglue.models import base

    rna = ad.AnnData(sp.csr_matrix(rna.X, dtype=np.float32), obs=rna.obs[[]].copy(), var=rna.var[[]].copy())
    atac = ad.AnnData(sp.csr_matrix(other.X, dtype=np.float32), obs=other.obs[[]].copy(), var=other.var[[]].copy())
    coords = _bed_coordinates(rna.var_names, data_dir / spec["annotation"])
    ok = coords["chrom"].notna().to_numpy()
    rna = rna[:, ok].copy()
    rna.var = coords[ok].copy().astype({"chromStart": int, "chromEnd": int})
    chrom, start, end = peak_coordinates(atac)
    atac.var["chrom"], atac.var["chromStart"], atac.var["chromEnd"] = chrom, np.asarray(start, int), np.asarray(end, int)
    rna.layers["counts"] = rna.X.copy()
    sc.pp.highly_variable_genes(rna, n_top_genes=min(2000, rna.n_vars - 1), flavor="seurat_v3")
    sc.pp.normalize_total(rna)
    sc.pp.log1p(rna)
    sc.pp.scale(rna)
    sc.tl.pca(rna, n_comps=min(100, rna.n_vars - 1, rna.n_obs - 1), svd_solver="arpack", random_state=seed)
    scglue.data.lsi(atac, n_components=min(100, atac.n_vars - 1, atac.n_obs - 1), n_iter=15,
                    random_state=seed)
    guidance = scglue.genomics.rna_anchored_guidance_graph(rna, atac)
    scglue.models.configure_dataset(rna, "NB", use_highly_variable=True, use_layer="counts", use_rep="X_pca")
    scglue.models.configure_dataset(atac, "NB", use_highly_variable=True, use_rep="X_lsi")
    hvf = guidance.subgraph(itertools.chain(rna.var.query("highly_variable").index,
                                            atac.var.query("highly_variable").index)).copy()
    counter: list = []
    start_t = time.time()
    phases = iter([start_t + max_time / 2, start_t + max_time] if max_time else [float("inf")] * 2)
    orig_fit = base.Trainer.fit

    def fit(self, *args, plugins=None, **kws):
        return orig_fit(self, *args, plugins=[*(plugins or []), _TimeBox(next(phases), counter)], **kws)

    base.Trainer.fit = fit
    torch.manual_seed(seed)
    glue = scglue.models.fit_SCGLUE({"rna": rna, "atac": atac}, hvf,
                                    init_kws={"random_seed": seed},
                                    fit_kws={"directory": str(Path(_RUN_DIR[0]) / "glue")})
    base.Trainer.fit = orig_fit
    z_r = glue.encode_data("rna", rna)
    z_o = glue.encode_data("atac", atac)
    return (np.asarray(z_o, np.float32), np.asarray(z_r, np.float32),
            {"epochs_pretrain": counter[0] if counter else None,
             "epochs_finetune": counter[1] if len(counter) > 1 else None,
             "epochs": int(sum(counter)), "max_time": max_time,
             "n_guidance_edges": int(hvf.number_of_edges()), "n_rna_genes_with_coords": int(ok.sum())})


UNPAIRED = {
    "pca": u_pca,
    "harmony": u_harmony,
    "biclum_default": _biclum("default"),
    # earlier defaults, each spelled out as overrides of the current one (see peers_unpaired.py)
    "biclum_default_torch_dropout": _biclum("default", torch_dropout=True),
    "biclum_default_cca_reg001": _biclum("default", cca_reg=0.01),
    "biclum_default_uncentred": _biclum("default", latent_centering="none", cca_reg=0.01),
    "biclum_default_150ep": _biclum("default", max_epochs=150, latent_centering="none", cca_reg=0.01),
    # the default before mnn_smooth / pair_refine (cached rows were run at 046fc9c, whose default it is)
    "biclum_previous_default": _biclum("default", mnn_smooth=0, pair_refine=0, max_epochs=150,
                                       latent_centering="none"),
    "biclum_reference": _biclum("reference"),
    "maxfuse": u_maxfuse,
    "scglue": u_scglue,
}


class NotApplicable(Exception):
    """The method does not apply to this dataset (recorded as such, not as a failure)."""


_RUN_DIR = ["/tmp"]


def set_run_dir(path) -> None:
    _RUN_DIR[0] = str(path)


# ------------------------------------------------------------------------------------------------
# paired adapters: return (embedding or None, labels at K, info)
# ------------------------------------------------------------------------------------------------


def leiden_to_k(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The one Leiden-to-K code of the suite: 15-NN graph, resolution bisected to K."""
    from cellbridge.tl import leiden

    return leiden(np.asarray(z, np.float32), n_clusters=k, n_neighbors=15, seed=seed, flavor="leidenalg")


def _modality_reps(rna, other, spec, seed):
    """Per-modality representations of the WNN/MOFA-free baselines (CellBridge's paired prep)."""
    from cellbridge.models.scmdcf._data import prepare_paired

    prna, poth = prepare_paired(rna, other, modality=spec["modality"], seed=seed)
    r = pca(prna.X, 50, seed)
    o = pca(poth.X, 50, seed)
    return prna, poth, r, o


def p_pca_rna(rna, other, spec, k, seed, **_):
    prna, _, r, _ = _modality_reps(rna, other, spec, seed)
    return r, leiden_to_k(r, k, seed), {"cells": list(prna.obs_names)}


def p_pca_concat(rna, other, spec, k, seed, **_):
    prna, _, r, o = _modality_reps(rna, other, spec, seed)
    z = np.hstack([r, o])
    return z, leiden_to_k(z, k, seed), {"cells": list(prna.obs_names)}


def _scmdcf(estimate: bool):
    def run(rna, other, spec, k, seed, **_):
        import cellbridge as cb

        m = cb.scMDCF(rna, other, n_clusters=None if estimate else k, seed=seed)
        m.train()
        z = np.asarray(m.get_latent())
        lab = np.asarray(m.predict_clusters())
        info = {"k_used": int(len(np.unique(lab)))}
        if estimate:
            info["k_estimated"] = int(getattr(m, "n_clusters_", len(np.unique(lab))))
            info["labels_estimated_k"] = lab.tolist()
            lab = leiden_to_k(z, k, seed)  # NMI/ARI at the true K from its embedding
        info["cells"] = list(m.obs_names_)
        return z, lab, info
    return run


def p_wnn(rna, other, spec, k, seed, **_):
    import mudata
    import muon as mu
    import scanpy as sc

    from cellbridge.models.scmdcf._data import prepare_paired
    from cellbridge.tl.clustering import leiden_on_graph

    prna, poth = prepare_paired(rna, other, modality=spec["modality"], seed=seed)
    r = pca(prna.X, 50, seed)
    if spec["modality"] == "atac":
        o = tfidf_lsi(other[prna.obs_names].X, 50, seed)
    else:
        o = pca(zscore(clr(other[prna.obs_names].X)), 50, seed)
    mods = {}
    for name, rep in (("rna", r), ("other", o)):
        m = sc.AnnData(sp.csr_matrix((rep.shape[0], 1), dtype=np.float32), obs=prna.obs[[]].copy())
        m.obsm["X_rep"] = rep / np.maximum(np.linalg.norm(rep, axis=1, keepdims=True), 1e-12)
        sc.pp.neighbors(m, n_neighbors=15, use_rep="X_rep", random_state=seed, transformer="sklearn")
        mods[name] = m
    md = mudata.MuData(mods)
    mu.pp.neighbors(md, n_neighbors=15, random_state=seed)
    lab = leiden_on_graph(sp.csr_matrix(md.obsp["connectivities"]), n_clusters=k, seed=seed, flavor="leidenalg",
                          weighted=True)
    w = {c: float(np.mean(md.obs[c])) for c in md.obs.columns if "weight" in c}
    return None, lab, {"cells": list(prna.obs_names), "mean_modality_weights": w}


def _lightning_time(max_time):
    if not max_time:
        return {}
    s = int(max_time)
    return {"max_time": {"seconds": s}}


def p_totalvi(rna, other, spec, k, seed, max_time=None, **_):
    if spec["modality"] != "protein":
        raise NotApplicable("totalVI models RNA + protein (CITE-seq); this set is RNA + ATAC")
    import anndata as ad
    import scvi

    scvi.settings.seed = seed
    scvi.settings.num_threads = 1
    scvi.settings.dl_num_workers = 0
    a = ad.AnnData(sp.csr_matrix(rna.X, dtype=np.float32), obs=rna.obs[[]].copy(), var=rna.var[[]].copy())
    a.var_names_make_unique()
    hv = hvg_seurat_v3(a.X, 4000)
    a = a[:, hv].copy()
    a.layers["counts"] = a.X.copy()
    a.obsm["protein_expression"] = dense(other.X)
    scvi.model.TOTALVI.setup_anndata(a, layer="counts", protein_expression_obsm_key="protein_expression")
    model = scvi.model.TOTALVI(a)
    model.train(accelerator="cpu", enable_progress_bar=False, **_lightning_time(max_time))
    z = np.asarray(model.get_latent_representation(), np.float32)
    ep = len(model.history["elbo_train"]) if "elbo_train" in model.history else None
    return z, leiden_to_k(z, k, seed), {"epochs": ep, "max_time": max_time,
                                        "max_epochs_default": _default_epochs(a.n_obs)}


def _default_epochs(n):
    return int(min(round((20000 / max(n, 1)) * 400), 400))


def p_multivi(rna, other, spec, k, seed, max_time=None, **_):
    if spec["modality"] != "atac":
        raise NotApplicable("MultiVI models RNA + ATAC; this set is RNA + ADT")
    import anndata as ad
    import pandas as pd
    import scvi

    scvi.settings.seed = seed
    scvi.settings.num_threads = 1
    scvi.settings.dl_num_workers = 0
    R = sp.csr_matrix(rna.X, dtype=np.float32)
    A = sp.csr_matrix(other.X, dtype=np.float32)
    keep = np.asarray((A > 0).sum(0)).ravel() > 0.01 * A.shape[0]
    A = A[:, keep]
    import mudata

    r = ad.AnnData(R, obs=rna.obs[[]].copy(), var=pd.DataFrame(index=rna.var_names.astype(str)))
    p = ad.AnnData(A, obs=rna.obs[[]].copy(), var=pd.DataFrame(index=other.var_names[keep].astype(str)))
    md = mudata.MuData({"rna": r, "atac": p})
    # scvi-tools 1.4: MULTIVI.setup_anndata is deprecated (a no-op); the MuData route of its tutorial
    scvi.model.MULTIVI.setup_mudata(md, modalities={"rna_layer": "rna", "atac_layer": "atac"})
    model = scvi.model.MULTIVI(md)
    model.train(accelerator="cpu", enable_progress_bar=False, **_lightning_time(max_time))
    z = np.asarray(model.get_latent_representation(), np.float32)
    hist = model.history
    key = next((c for c in ("elbo_train", "reconstruction_loss_train", "train_loss_epoch") if c in hist), None)
    ep = len(hist[key]) if key else None
    return z, leiden_to_k(z, k, seed), {"epochs": ep, "max_time": max_time, "n_peaks_kept": int(keep.sum())}


#: MOFA+ iteration caps per dataset (mofapy2 has no wall-clock limit; muon's default is 1,000 iterations
#: with "fast" convergence). On mop_snare two uncapped runs were stopped unfinished after 8 and 14 min;
#: with the cap, seed 0 converged at about iteration 40-45 in 958 s at one thread under load.
MOFA_ITERATIONS = {"mop_snare": 200}


def p_mofa(rna, other, spec, k, seed, max_time=None, dataset=None, **_):
    import anndata as ad
    import mudata
    import muon as mu

    r = ad.AnnData(lognorm(rna.X), obs=rna.obs[[]].copy(), var=rna.var[[]].copy())
    r.var["highly_variable"] = hvg_seurat_v3(rna.X, 2000)
    if spec["modality"] == "protein":
        o = ad.AnnData(clr(other.X), obs=other.obs[[]].copy(), var=other.var[[]].copy())
        o.var["highly_variable"] = True
    else:
        A = sp.csr_matrix(other.X, dtype=np.float32)
        A.data[:] = 1
        tf = sp.diags(1 / np.maximum(np.asarray(A.sum(1)).ravel(), 1)) @ A
        idf = A.shape[0] / np.maximum(np.asarray(A.sum(0)).ravel(), 1)
        T = sp.csr_matrix(tf @ sp.diags(idf))
        T.data = np.log1p(T.data * 1e4)
        o = ad.AnnData(T, obs=other.obs[[]].copy(), var=other.var[[]].copy())
        frac = np.asarray(A.sum(0)).ravel() / A.shape[0]
        top = np.argsort(-frac)[: min(5000, A.shape[1])]  # most accessible peaks
        hv = np.zeros(A.shape[1], bool)
        hv[top] = True
        o.var["highly_variable"] = hv
    o.obs_names = r.obs_names
    md = mudata.MuData({"rna": r, "other": o})
    out = Path(_RUN_DIR[0]) / "mofa.hdf5"
    cap = MOFA_ITERATIONS.get(dataset, 1000)
    mu.tl.mofa(md, n_factors=10, use_var="highly_variable", convergence_mode="fast", seed=seed,
               n_iterations=cap, outfile=str(out), gpu_mode=False, verbose=False, quiet=True)
    z = np.asarray(md.obsm["X_mofa"], np.float32)
    info = {"n_factors": int(z.shape[1]), "n_iterations_cap": cap}
    try:  # iterations run = finite per-iteration times in the model file (entry 0 is the start)
        import h5py

        with h5py.File(out, "r") as f:
            times = np.asarray(f["training_stats/time"])
        info["epochs"] = int(np.isfinite(times).sum()) - 1
    except (OSError, KeyError):
        pass
    out.unlink(missing_ok=True)
    return z, leiden_to_k(z, k, seed), info


PAIRED = {
    "scmdcf_default": _scmdcf(False),
    "scmdcf_estimated_k": _scmdcf(True),
    "wnn": p_wnn,
    "totalvi": p_totalvi,
    "multivi": p_multivi,
    "mofa": p_mofa,
    "pca_concat": p_pca_concat,
    "pca_rna": p_pca_rna,
}


# ------------------------------------------------------------------------------------------------
# datasets (the shared sets plus the derived weak-linkage case)
# ------------------------------------------------------------------------------------------------

def load_dataset(name: str, data_dir: Path):
    """``(rna, other, spec, notes)``: :func:`_common.load_dataset` (the shared sets and the derived
    weak-linkage case ``teaseq_weak13``)."""
    from _common import load_dataset as load

    return load(name)


# ------------------------------------------------------------------------------------------------
# the generic driver of both suites
# ------------------------------------------------------------------------------------------------

RUNS = Path("/work/peer_runs")


def run_path(kind: str, dataset: str, method: str, seed: int) -> Path:
    return RUNS / kind / dataset / method / f"seed{seed}"


def child(kind: str, adapters: dict, dataset: str, method: str, seed: int, max_time, data_dir: Path) -> None:
    """Run one method in this (fresh, one-thread) process and cache its output."""
    import json
    import os
    import traceback

    import torch

    torch.set_num_threads(1)
    from _common import peak_rss_gib

    out = run_path(kind, dataset, method, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    set_run_dir(out.parent)
    info = {"dataset": dataset, "method": method, "seed": seed, "load_average_start": os.getloadavg()}
    try:
        rna, other, spec, notes = load_dataset(dataset, data_dir)
        info["dataset_notes"] = notes
        t0 = time.perf_counter()
        if kind == "unpaired":
            z_o, z_r, extra = adapters[method](rna, other, spec, seed, max_time=max_time, data_dir=data_dir)
            info["seconds"] = time.perf_counter() - t0
            np.savez_compressed(out.with_suffix(".npz"), z_other=z_o, z_rna=z_r,
                                labels_other=np.asarray(other.obs[spec["label"]] if spec["label"] in other.obs
                                                        else rna.obs[spec["label"]], dtype=str),
                                labels_rna=np.asarray(rna.obs[spec["label"]], dtype=str))
        else:
            k = int(rna.obs[spec["label"]].nunique())
            z, lab, extra = adapters[method](rna, other, spec, k, seed, max_time=max_time, data_dir=data_dir,
                                             dataset=dataset)
            info["seconds"] = time.perf_counter() - t0
            cells = extra.pop("cells", None)
            truth = (rna.obs.loc[cells, spec["label"]] if cells is not None else rna.obs[spec["label"]])
            arrays = {"labels_pred": np.asarray(lab), "labels_true": np.asarray(truth, dtype=str)}
            if z is not None:
                arrays["z"] = np.asarray(z, np.float32)
            if "labels_estimated_k" in extra:
                arrays["labels_estimated_k"] = np.asarray(extra.pop("labels_estimated_k"), dtype=np.int64)
            info["k_true"] = k
            np.savez_compressed(out.with_suffix(".npz"), **arrays)
        info.update(extra)
        info["status"] = "ok"
    except NotApplicable as exc:
        info.update(status="not_applicable", reason=str(exc))
    except Exception as exc:  # recorded, the suite goes on
        info.update(status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
    info["peak_rss_gib"] = peak_rss_gib()
    info["load_average_end"] = os.getloadavg()
    out.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str))
    print(json.dumps({k: v for k, v in info.items() if k != "traceback"}, default=str)[:2000])


def spawn(script: Path, kind: str, dataset: str, method: str, seed: int, max_time, log) -> dict:
    """Run ``script --one`` in a niced one-thread subprocess; return its cached info."""
    import json
    import os
    import subprocess
    import sys

    from _common import ONE_THREAD_ENV

    cmd = ["nice", "-n", "10", sys.executable, str(script), "--one", dataset, method, str(seed)]
    if max_time:
        cmd += ["--max-time", str(max_time)]
    env = {**os.environ, **ONE_THREAD_ENV}
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    path = run_path(kind, dataset, method, seed).with_suffix(".json")
    if path.exists() and path.stat().st_mtime >= t0 - 1:
        info = json.loads(path.read_text())
    else:
        info = {"dataset": dataset, "method": method, "seed": seed, "status": "failed",
                "reason": f"subprocess exit {proc.returncode}: {proc.stderr[-1500:]}"}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=1))
    log.write(f"{time.strftime('%H:%M:%S')} {dataset} {method} seed{seed}: {info.get('status')} "
              f"{info.get('seconds', 0) or 0:.0f}s {info.get('reason', '')[:300]}\n")
    log.flush()
    return info


def fmt(m, sd, digits=3):
    if m is None:
        return "–"
    return f"{m:.{digits}f}" if sd is None else f"{m:.{digits}f} ± {sd:.{digits}f}"


def summary_table(records: list[dict], datasets: list[str], methods: list[str], columns: list[tuple],
                  extra_cols=("seconds", "peak_rss_gib", "epochs")) -> tuple[str, list[dict]]:
    """Markdown table (mean ± sd over seeds, best per column per dataset in bold) and the summary rows.

    ``columns``: (metric key, header, higher_is_better)."""
    from _common import mean_sd

    lines, rows = [], []
    head = ["dataset", "method", "seeds"] + [c[1] for c in columns] + ["seconds", "peak GiB", "epochs"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for ds in datasets:
        block = []
        for meth in methods:
            rs = [r for r in records if r["dataset"] == ds and r["method"] == meth]
            if not rs:
                continue
            ok = [r for r in rs if r.get("status") == "ok"]
            row = {"dataset": ds, "method": meth, "seeds": sorted(r["seed"] for r in ok), "status":
                   "ok" if ok else rs[0].get("status"), "reason": None if ok else rs[0].get("reason")}
            for key, *_ in columns:
                row[key] = mean_sd([r["metrics"].get(key) for r in ok if r.get("metrics")])
            for key in extra_cols:
                row[key] = mean_sd([r.get(key) for r in ok])
            block.append(row)
        best = {}
        for key, _, hib in columns:
            vals = [r[key][0] for r in block if r[key][0] is not None]
            if vals and hib is not None:
                best[key] = max(vals) if hib else min(vals)
        for row in block:
            if row["status"] != "ok":
                why = (row["reason"] or "")[:160].replace("|", "/").replace("\n", " ")
                lines.append(f"| {ds} | {row['method']} | – | " + " | ".join(["–"] * len(columns))
                             + f" | – | – | {row['status']}: {why} |")
                rows.append(row)
                continue
            cells = []
            for key, _, hib in columns:
                m, sd, _n = row[key]
                c = fmt(m, sd, 1 if key.startswith("k_") else 3)
                if m is not None and best.get(key) is not None and round(m, 3) == round(best[key], 3):
                    c = f"**{c}**"
                cells.append(c)
            ep = row["epochs"][0]
            lines.append(f"| {ds} | {row['method']} | {','.join(map(str, row['seeds']))} | " + " | ".join(cells)
                         + f" | {fmt(row['seconds'][0], row['seconds'][1], 0)} | {fmt(row['peak_rss_gib'][0], None, 2)}"
                         + f" | {'–' if ep is None else f'{ep:.0f}'} |")
            rows.append(row)
    return "\n".join(lines) + "\n", rows


def _cellbridge_source() -> dict:
    """Where the imported CellBridge came from (it is put on PYTHONPATH, not installed)."""
    import subprocess

    import cellbridge

    src = Path(cellbridge.__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", "-C", str(src), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {"path": str(src), "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))}


def main(kind: str, script: Path, adapters: dict, datasets: list[str], methods: list[str],
         time_boxes: dict, score, columns, doc: str, applicable=None) -> None:
    """CLI of a peer suite: run (cached) methods in subprocesses, score them, write the results."""
    import argparse
    import json
    import sys

    from _common import DATA, RESULTS, merge_records, provenance, write_results

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=datasets)
    ap.add_argument("--methods", nargs="+", default=methods)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--merge", action="store_true", help="add/replace rows in the existing result file")
    ap.add_argument("--rerun", action="store_true", help="ignore cached runs under /work/peer_runs")
    ap.add_argument("--metrics-only", action="store_true", help="score cached runs only, run nothing")
    ap.add_argument("--rescore", action="store_true",
                    help="recompute the metrics from the cached embeddings (else cached metrics are reused)")
    ap.add_argument("--time-box", nargs="*", default=[], metavar="METHOD[@DATASET]=SECONDS",
                    help="override the training time boxes")
    ap.add_argument("--out", default=str(RESULTS / "peers" / kind))
    ap.add_argument("--note", default="")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--max-time", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        ds, meth, seed = args.one
        child(kind, adapters, ds, meth, int(seed), args.max_time, DATA)
        return
    boxes = {k: dict(v) for k, v in time_boxes.items()}
    for item in args.time_box:
        key, sec = item.split("=")
        meth, _, ds = key.partition("@")
        boxes.setdefault(meth, {})[ds or "*"] = float(sec)
    RUNS.mkdir(parents=True, exist_ok=True)
    log = open(RUNS / f"{kind}.log", "a")
    records = []
    for ds in args.datasets:
        for seed in args.seeds:
            for meth in args.methods:
                if applicable and not applicable(ds, meth):
                    continue
                path = run_path(kind, ds, meth, seed)
                cached = path.with_suffix(".json").exists() and not args.rerun
                if not cached and args.metrics_only:
                    continue
                if not cached:
                    box = boxes.get(meth, {})
                    spawn(script, kind, ds, meth, seed, box.get(ds, box.get("*")), log)
                info = json.loads(path.with_suffix(".json").read_text())
                rec = {k: v for k, v in info.items() if k != "traceback"}
                if info.get("status") == "ok":
                    mpath = path.with_suffix(".metrics.json")
                    if (mpath.exists() and not args.rescore
                            and mpath.stat().st_mtime >= path.with_suffix(".npz").stat().st_mtime):
                        rec.update(json.loads(mpath.read_text()))
                    else:
                        t0 = time.perf_counter()
                        rec["metrics"] = score(np.load(path.with_suffix(".npz"), allow_pickle=False), info)
                        rec["metric_seconds"] = time.perf_counter() - t0
                        mpath.write_text(json.dumps({k: rec[k] for k in ("metrics", "metric_seconds")}))
                records.append(rec)
                print(f"{ds} {meth} seed{seed}: {rec.get('status')} "
                      f"{json.dumps(rec.get('metrics', rec.get('reason')), default=str)[:300]}", flush=True)
    out = Path(args.out)
    old = []
    if args.merge and out.with_suffix(".json").exists():
        prev = json.loads(out.with_suffix(".json").read_text())
        old = prev["records"]
        notes = prev.get("notes", [])
    else:
        notes = []
    records = merge_records(old, records)
    prov = provenance()
    prov["cellbridge_source"] = _cellbridge_source()
    prov["notes"] = notes + ([f"{prov['date']}: {args.note}"] if args.note else [])
    prov["commands"] = (json.loads(out.with_suffix(".json").read_text()).get("commands", [])
                        if args.merge and out.with_suffix(".json").exists() else []) + [prov["command"]]
    all_ds = [d for d in datasets if any(r["dataset"] == d for r in records)]
    all_m = [m for m in methods if any(r["method"] == m for r in records)]
    table, summary = summary_table(records, all_ds, all_m, columns)
    for r in summary:
        for key in list(r):
            if isinstance(r[key], tuple):
                r[key] = {"mean": r[key][0], "sd": r[key][1], "n": r[key][2]}
    prov["summary"] = summary
    md = doc.split("\n\n")[0] + "\n\n" + table
    if prov["notes"]:
        md += "\nNotes:\n\n" + "\n".join(f"- {n}" for n in prov["notes"]) + "\n"
    md += "\nAll commands that produced these rows: " + " ; ".join(f"`{c}`" for c in prov["commands"]) + "\n"
    write_results(out, records, md, prov)
    print(table)
    sys.stdout.flush()
