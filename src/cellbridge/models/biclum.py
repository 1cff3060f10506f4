"""BiCLUM: bilateral contrastive learning for unpaired single-cell multi-omics integration."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from .._errors import CellBridgeInputError
from .._validate import check_finite, row_blocks
from ..pairs import ANN_METHODS, mnn_pairs
from ..pp.rna import ARRAYS, ExpressionTransform
from ..pp.unpaired import UnpairedData, prepare_unpaired
from ._biclum_module import OTHER, RNA, BiCLUMModule
from ._biclum_train import BiCLUMTrainer, TrainConfig, TrainInputs, encode_all, make_config
from .training import load_model_dir, save_model_dir, select_device, set_seed

logger = logging.getLogger("cellbridge")

# Reference hyper-parameters (METHODS §1.6): RNA+ATAC from "PBMC unpaired", CITE from "BM CITE-seq".
_PER_MODALITY = {
    "atac": dict(tau_cell=0.5, tau_feature=0.5, alpha=1e4, beta=1e4, k_mnn=100, n_latent=50, target="counts"),
    "protein": dict(tau_cell=100.0, tau_feature=50.0, alpha=100.0, beta=1e5, k_mnn=500, n_latent=25, target="scaled"),
}
_REFERENCE = dict(
    mnn_rep="scaled", mnn_dims=50, mnn_ann="hnsw", hnsw_ef=None, ivf_nprobe=8, similarity="dot", feature_mode="exact", profile="cells", n_profile=None, feature_batch=256,
    lr=1e-4, weight_decay=5e-5, batch_size=256, max_epochs=1000, patience=30, gamma=(1.0, 1.0),
    precision="32",
)
# CellBridge's default = the reference plus these changes (each one an option in the reference
# preset too), chosen on mop_snare and TEA-seq: see docs/methods.md and benchmarks/results/biclum.md.
DEFAULT_CHANGES = dict(
    mnn_rep="pca", k_mnn=30, mnn_ann="ivf", feature_mode="sampled", profile="metacells", n_profile=1024, max_epochs=150,
)
PRESETS = ("reference", "default")
MODALITY_NAMES = {"atac": "atac", "protein": "adt"}


def resolve_params(preset: str, modality: str, overrides: dict) -> dict:
    """Preset values, then per-modality reference values, then the user's explicit overrides."""
    if preset not in PRESETS:
        raise CellBridgeInputError(f"preset must be one of {PRESETS}, got {preset!r}.")
    params = {**_REFERENCE, **_PER_MODALITY[modality], **(DEFAULT_CHANGES if preset == "default" else {})}
    unknown = set(overrides) - set(params)
    if unknown:
        raise CellBridgeInputError(f"unknown BiCLUM parameter(s) {sorted(unknown)}; known: {sorted(params)}.")
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


class BiCLUM:
    """Integrate unpaired RNA with gene activity (ATAC) or surface protein (ADT).

    Parameters
    ----------
    rna
        Cells x genes raw counts (scRNA-seq).
    other
        ``modality="atac"``: cells x genes gene activity (:func:`cellbridge.pp.gene_activity`);
        ``modality="protein"``: cells x proteins raw ADT counts.
    modality
        ``"atac"`` or ``"protein"``.
    preset
        ``"reference"`` reproduces the published code (dot similarity, all features re-encoded
        from all cells every step, raw-count targets, MNN on the scaled shared features);
        ``"default"`` is the reference plus :data:`DEFAULT_CHANGES`: MNN (k=30) on a joint PCA,
        a feature batch per step, feature profiles over 1024 metacells, at most 150 epochs.
    n_top_genes, n_pcs
        HVGs per modality (union used) and PCA size of the cell-encoder input.
    seed
        Seeds python, numpy and torch; CPU training is deterministic.
    accelerator
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    **params
        Any preset value: ``tau_cell, tau_feature, alpha, beta, k_mnn, n_latent, target``
        (``"counts"``/``"scaled"``), ``mnn_rep`` (``"scaled"``/``"pca"``), ``mnn_dims``,
        ``mnn_ann`` (approximate MNN search above 20,000 cells: ``"hnsw"``, hnswlib as the
        reference, or ``"ivf"``, a faiss inverted file whose time grows linearly), ``hnsw_ef``
        (hnswlib search width; None: ``max(50, k_mnn)``), ``ivf_nprobe`` (inverted lists searched
        per cell), ``similarity`` (``"dot"``/``"cosine"``), ``feature_mode``
        (``"exact"``/``"sampled"``), ``profile`` (``"cells"``/``"subsample"``/``"metacells"``),
        ``n_profile``, ``feature_batch``, ``lr``, ``weight_decay``, ``batch_size``, ``max_epochs``,
        ``patience``, ``gamma``, ``precision`` (``"32"`` or ``"bf16-mixed"``: bfloat16 autocast
        for training and embedding).

    Examples
    --------
    >>> model = cellbridge.BiCLUM(rna, gene_activity, modality="atac")
    >>> model.train()
    >>> rna.obsm["X_biclum"] = model.get_latent(rna)
    """

    def __init__(
        self,
        rna: AnnData,
        other: AnnData,
        *,
        modality: str = "atac",
        preset: str = "default",
        n_top_genes: int = 2000,
        n_pcs: int = 100,
        layer_rna: str | None = None,
        layer_other: str | None = None,
        protein_map=None,
        seed: int = 0,
        accelerator: str = "auto",
        **params,
    ):
        self.params = resolve_params(preset, modality, params)
        self.preset, self.modality, self.seed = preset, modality, seed
        self.device = select_device(accelerator)
        self.rna, self.other = rna, other
        set_seed(seed)
        clock = time.perf_counter()
        self.data: UnpairedData | None = prepare_unpaired(
            rna, other, modality=modality, n_top_genes=n_top_genes, n_pcs=n_pcs,
            protein_map=protein_map, layer_rna=layer_rna, layer_other=layer_other, seed=seed,
        )
        self.timings = {"prepare": time.perf_counter() - clock}
        self.transforms = (self.data.other.transform, self.data.rna.transform)
        clock = time.perf_counter()
        self.cell_pairs = self._cell_pairs()
        self.timings["pairs"] = time.perf_counter() - clock
        self.feature_pairs = self.data.feature_pairs
        self.profiles = self._build_profiles()
        self.module = self._build_module()
        self.history: dict[str, list[float]] = {}

    # ---------------------------------------------------------------- setup
    def _cell_pairs(self) -> np.ndarray:
        """MNN on the scaled shared features (reference) or on their joint PCA (``mnn_rep="pca"``)."""
        p = self.params
        if p["mnn_ann"] not in ANN_METHODS:
            raise CellBridgeInputError(f"mnn_ann must be one of {ANN_METHODS}, got {p['mnn_ann']!r}.")
        if p["mnn_rep"] == "pca":
            a, b = self.data.shared_pca(p["mnn_dims"], seed=self.seed)
        elif p["mnn_rep"] == "scaled":
            a, b = self.data.shared_views()
        else:
            raise CellBridgeInputError(f"mnn_rep must be 'scaled' or 'pca', got {p['mnn_rep']!r}.")
        return mnn_pairs(a, b, k=p["k_mnn"], ann=p["mnn_ann"], seed=self.seed, ef=p["hnsw_ef"], nprobe=p["ivf_nprobe"])

    def _modality_data(self, k: int):
        return (self.data.other, self.data.rna)[k]

    def _build_profiles(self) -> list[np.ndarray]:
        """Feature-encoder inputs: each feature's values across all cells, a subsample, or metacells."""
        rng = np.random.default_rng(self.seed)
        out = []
        target = self.params["target"]
        for k in (OTHER, RNA):
            data = self._modality_data(k)
            n_profile = self.params["n_profile"] or data.n_cells
            if self.params["profile"] == "cells" or n_profile >= data.n_cells:
                summary = data.values(target)
            elif self.params["profile"] == "subsample":
                summary = data.values(target, np.sort(rng.choice(data.n_cells, n_profile, replace=False)))
            elif self.params["profile"] == "metacells":
                summary = _metacells(data, target, n_profile, self.seed)
            else:
                raise CellBridgeInputError(f"profile must be 'cells', 'subsample' or 'metacells', got {self.params['profile']!r}.")
            summary = summary.toarray() if sp.issparse(summary) else np.asarray(summary)
            out.append(np.ascontiguousarray(summary.T, dtype=np.float32))
        return out

    def _build_module(self) -> BiCLUMModule:
        data = self.data
        return BiCLUMModule(
            (data.other.pca.shape[1], data.rna.pca.shape[1]),
            (self.profiles[0].shape[1], self.profiles[1].shape[1]),
            (len(data.other.features), len(data.rna.features)),
            self.params["n_latent"],
        ).to(self.device)

    # ---------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int | None = None,
        *,
        max_time: float | None = None,
        progress: bool = True,
        world_size: int = 1,
        **params,
    ) -> dict[str, list[float]]:
        """Train with early stopping (best weights restored); returns the per-epoch history.

        ``max_time`` (seconds) stops after the epoch that crosses it. ``world_size > 1`` trains
        data-parallel in that many processes (:func:`cellbridge.models.distributed.train_distributed`).
        Other keyword arguments override ``lr``, ``batch_size``, ``patience``... for this run.
        """
        if world_size > 1:
            from .distributed import train_distributed

            return train_distributed(self, world_size=world_size, max_epochs=max_epochs, max_time=max_time,
                                     progress=progress, **params)
        config = self._train_config(max_epochs, max_time, params)
        set_seed(self.seed)
        inputs = self._train_inputs()
        trainer = BiCLUMTrainer(self.module, inputs.to_device(self.device), inputs.sampler(), config)
        self.history = trainer.fit(progress=progress)
        self.train_config = asdict(config)
        return self.history

    def _train_config(self, max_epochs: int | None, max_time: float | None, overrides: dict) -> TrainConfig:
        if self.data is None:
            raise RuntimeError("this model was loaded without its training data; it can embed but not train.")
        params = {**self.params, **{k: v for k, v in overrides.items() if v is not None}}
        if max_epochs is not None:
            params["max_epochs"] = max_epochs
        return make_config(params, max_time=max_time, seed=self.seed)

    def _train_inputs(self) -> TrainInputs:
        return TrainInputs((self.data.other, self.data.rna), self.params["target"], self.profiles,
                           np.asarray(self.feature_pairs), np.asarray(self.cell_pairs))

    # ---------------------------------------------------------------- outputs
    def _modality_index(self, adata: AnnData | None, modality: str | None) -> int:
        if modality is not None:
            if modality not in ("rna", "other", self.modality, MODALITY_NAMES[self.modality]):
                raise CellBridgeInputError(f"modality must be 'rna' or 'other' ({self.modality}), got {modality!r}.")
            return RNA if modality == "rna" else OTHER
        if adata is self.rna:
            return RNA
        if adata is self.other:
            return OTHER
        raise CellBridgeInputError("say which modality `adata` holds: get_latent(adata, modality='rna' or 'other').")

    def get_latent(self, adata: AnnData | None = None, modality: str | None = None, *, layer: str | None = None) -> np.ndarray:
        """Cell embeddings (cells x d) in the shared space.

        ``adata`` may be a training modality or new cells (query mapping: the training
        normalisation, scaling and PCA are applied; features missing from ``adata`` count as 0).
        With ``adata=None``, ``modality`` (``"rna"``/``"other"``) selects the training cells.
        """
        if adata is None:
            k = RNA if modality == "rna" else OTHER if modality in ("other", self.modality) else None
            if k is None or self.data is None:
                raise CellBridgeInputError("pass `adata`, or modality='rna'/'other' on a model that holds its training data.")
            pca = (self.data.other, self.data.rna)[k].pca
        else:
            k = self._modality_index(adata, modality)
            pca = self._project(adata, k, layer)
        self.module.eval()
        x = torch.as_tensor(pca, device=self.device)
        return encode_all(lambda part: self.module.encode_cells(part, k), x, precision=self.params["precision"])

    def _project(self, adata: AnnData, k: int, layer: str | None) -> np.ndarray:
        transform = self.transforms[k]
        X = adata.layers[layer] if layer else adata.X
        check_finite(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
        idx = adata.var_names.get_indexer(transform.features)
        missing = int((idx < 0).sum())
        if missing == len(idx):
            raise CellBridgeInputError("`adata` has none of the model's features; is it the right modality?")
        if missing:
            logger.warning("%d of %d model features are missing from `adata` and count as 0", missing, len(idx))
        cols = np.where(idx < 0, X.shape[1], idx)  # missing features read an all-zero column
        keep_all = np.array_equal(cols, np.arange(X.shape[1]))
        parts = []
        for block in row_blocks(X):  # one block of cells normalised at a time (backed: read per block)
            block = sp.csr_matrix(block, dtype=np.float32)
            if not keep_all:
                zero = sp.csr_matrix((block.shape[0], 1), dtype=np.float32)
                block = sp.hstack([block, zero], format="csr")[:, cols]
            parts.append(transform.embed(block))
        return np.vstack(parts)

    def get_feature_embeddings(self) -> dict[str, pd.DataFrame]:
        """Feature (gene / protein) embeddings per modality: ``{"rna": df, "other": df}``."""
        self.module.eval()
        out = {}
        for k, name in ((OTHER, "other"), (RNA, "rna")):
            profiles = torch.as_tensor(self.profiles[k], device=self.device)
            emb = encode_all(lambda part: self.module.encode_features(part, k), profiles, precision=self.params["precision"])
            out[name] = pd.DataFrame(emb, index=self.transforms[k].features)
        return out

    def to_mudata(self, key: str = "X_biclum"):
        """Copies of both modalities with ``obsm[key]``, ``varm[key]`` (NaN for non-model features) and history."""
        import mudata as md

        feats = self.get_feature_embeddings()
        mods = {}
        for k, name, adata in ((RNA, "rna", self.rna), (OTHER, MODALITY_NAMES[self.modality], self.other)):
            out = adata.copy()
            out.obsm[key] = self.get_latent(adata, "rna" if k == RNA else "other")
            emb = feats["rna" if k == RNA else "other"].reindex(out.var_names)
            out.varm[key] = emb.to_numpy(dtype=np.float32)
            mods[name] = out
        with md.set_options(pull_on_update=False):
            mdata = md.MuData(mods)
        mdata.uns["biclum"] = {"history": {k: np.asarray(v) for k, v in self.history.items()},
                               "params": _jsonable(self.params), "modality": self.modality,
                               "n_cell_pairs": len(self.cell_pairs), "n_feature_pairs": len(self.feature_pairs)}
        return mdata

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save weights, preprocessing and feature profiles (tensors) plus JSON metadata; no pickles."""
        metas, extra = [], {}
        for k, t in enumerate(self.transforms):
            meta, arrays = t.to_dict()
            metas.append(meta)
            extra.update({f"transform{k}.{name}": a for name, a in arrays.items()})
            extra[f"profiles{k}"] = self.profiles[k]
        metadata = {"model": "BiCLUM", "modality": self.modality, "preset": self.preset, "seed": self.seed,
                    "params": _jsonable(self.params), "transforms": metas,
                    "history": {k: list(map(float, v)) for k, v in self.history.items()}}
        save_model_dir(path, self.module, metadata, overwrite=overwrite, extra=extra)

    @classmethod
    def load(cls, path: str | os.PathLike, rna: AnnData | None = None, other: AnnData | None = None,
             *, accelerator: str = "auto") -> BiCLUM:
        """Load a saved model; ``rna``/``other`` (optional) are attached for :meth:`get_latent`."""
        state, meta = load_model_dir(path)
        if meta.get("model") != "BiCLUM":
            raise CellBridgeInputError(f"{path} holds a {meta.get('model')} model, not BiCLUM.")
        self = cls.__new__(cls)
        self.modality, self.preset, self.seed = meta["modality"], meta["preset"], meta["seed"]
        self.params = meta["params"]
        self.device = select_device(accelerator)
        self.rna, self.other, self.data, self.history = rna, other, None, meta["history"]
        extra = {k[len("extra/"):]: v.numpy() for k, v in state.items() if k.startswith("extra/")}
        self.transforms = tuple(
            ExpressionTransform.from_dict(m, {n: extra[f"transform{k}.{n}"] for n in ARRAYS})
            for k, m in enumerate(meta["transforms"])
        )
        self.profiles = [extra["profiles0"], extra["profiles1"]]
        self.module = BiCLUMModule(
            tuple(t.components.shape[0] for t in self.transforms),
            tuple(p.shape[1] for p in self.profiles),
            tuple(len(t.features) for t in self.transforms),
            self.params["n_latent"],
        )
        self.module.load_state_dict({k: v for k, v in state.items() if not k.startswith("extra/")})
        self.module.to(self.device)
        return self


def _metacells(data, target: str, n: int, seed: int) -> np.ndarray:
    """Mean raw or scaled values over ``n`` k-means groups of cells in PCA space (sparse products)."""
    from sklearn.cluster import MiniBatchKMeans

    labels = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=1, batch_size=4096).fit_predict(data.pca)
    onehot = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(n, len(labels)))
    average = sp.diags(1 / np.maximum(np.asarray(onehot.sum(1)).ravel(), 1)) @ onehot
    if target == "counts":
        return (average @ data.counts).toarray()
    means = average @ data.normalized
    means = means.toarray() if sp.issparse(means) else np.asarray(means)
    return (means - data.transform.mean) / data.transform.std  # mean of z-scores = z-score of means


def _jsonable(params: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
