"""BiCLUM: bilateral contrastive learning for unpaired single-cell multi-omics integration."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from ..._errors import CellBridgeInputError
from ..._validate import check_finite, check_model_embedding, row_blocks
from ...pp.paired import MUDATA_KEYS, infer_modality, split_mudata
from .._params import to_json
from ..distributed import resolve_world_size
from ..training import (
    Checkpoint,
    encode_all,
    load_model_dir,
    save_model_dir,
    select_device,
    set_seed,
)
from ._data import (
    ARRAYS,
    ExpressionTransform,
    UnpairedData,
    cell_pairs,
    feature_profiles,
    prepare_unpaired,
)
from ._module import OTHER, RNA, BiCLUMModule
from ._presets import BiCLUMParams, resolve_params
from ._training import TrainConfig, TrainInputs, checkpoint_run, fit, fit_distributed, make_config

logger = logging.getLogger("cellbridge")


class BiCLUM:
    """Integrate unpaired RNA with gene activity (ATAC) or surface protein (ADT).

    Parameters
    ----------
    rna
        Cells x genes raw counts (scRNA-seq), or one MuData holding ``"rna"`` and
        ``"gene_activity"`` (ATAC) or ``"adt"``/``"prot"``/``"protein"`` (then ``other=None``), as
        :class:`cellbridge.scMDCF` accepts; a MuData whose ATAC modality holds peaks is refused
        with the fix (add its gene activity as ``"gene_activity"``).
    other
        ``modality="atac"``: cells x genes gene activity (:func:`cellbridge.pp.gene_activity`);
        ``modality="protein"``: cells x proteins raw ADT counts. None with a MuData ``rna``.
    modality
        ``"atac"`` or ``"protein"``; None: from the MuData's modality names, ``"atac"`` for an
        AnnData pair.
    preset
        ``"reference"`` reproduces the published code (dot similarity, all features re-encoded
        from all cells every step, raw-count targets, MNN on the scaled shared features);
        ``"default"`` is the reference plus :data:`~cellbridge.models.biclum.DEFAULT_CHANGES`: MNN (k=30) on a joint PCA,
        a feature batch per step, feature profiles over 1024 metacells, at most 75 epochs,
        linked features smoothed over 15 neighbours, one CCA refinement of the pairs (ridge 1.0),
        and per-modality centred embeddings.
    n_top_genes, n_pcs
        HVGs per modality (union used) and PCA size of the cell-encoder input.
    layer_rna, layer_other
        Layers of ``rna`` / ``other`` holding the raw values (None: ``.X``).
    protein_map
        ``modality="protein"``: a protein -> gene table (TSV/CSV path, DataFrame or dict with
        columns ``protein`` and ``gene``) whose entries override the built-in one (see
        :func:`cellbridge.pp.protein_to_gene`); None: the built-in table only.
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
        per cell), ``mnn_smooth`` (neighbours, in each modality's own PCA, over which the linked
        features are averaged before the MNN search, MaxFuse-style; 0: off), ``mnn_smooth_weight``
        (weight kept by the cell itself), ``pair_refine`` (rounds of refinement: a CCA between the
        paired cells' full PCAs, then MNN pairs searched again in its ``cca_dims`` components;
        ``cca_reg``: its ridge, as a fraction of each side's mean variance),
        ``similarity`` (``"dot"``/``"cosine"``), ``latent_centering`` (``"per_modality"``: each
        modality's cell embeddings are centred on their training mean, which :meth:`decode` adds
        back; ``"none"``: the encoder outputs as trained), ``feature_mode``
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
        rna,
        other: AnnData | None = None,
        *,
        modality: str | None = None,
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
        rna, other, modality = _split_inputs(rna, other, modality)
        self.params: BiCLUMParams = resolve_params(preset, modality, params)
        _check_count("n_top_genes", n_top_genes, 1)
        _check_count("n_pcs", n_pcs, 1)
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
        self._transforms = (self.data.other.transform, self.data.rna.transform)  # module index order
        clock = time.perf_counter()
        self.cell_pairs = cell_pairs(self.data, self.params, seed)
        self.timings["pairs"] = time.perf_counter() - clock
        self.feature_pairs = _module_order(self.data.feature_pairs)  # (rna feature, other feature)
        self._profiles = feature_profiles(self.data, self.params, seed)  # module index order
        self.module = self._build_module()
        self.history_: list[dict[str, Any]] = []
        self.train_summary_: dict[str, Any] = {}
        self.is_trained_ = False

    @property
    def transforms(self) -> dict[str, ExpressionTransform]:
        """The fitted normalisation, scaling and PCA of each modality (``{"rna": ..., "other": ...}``),
        applied to new cells by :meth:`get_latent`."""
        return {"rna": self._transforms[RNA], "other": self._transforms[OTHER]}

    @property
    def profiles(self) -> dict[str, np.ndarray]:
        """The feature-encoder input of each modality (features x profile width)."""
        return {"rna": self._profiles[RNA], "other": self._profiles[OTHER]}

    # ---------------------------------------------------------------- setup
    def _build_module(self) -> BiCLUMModule:
        data = self.data
        return BiCLUMModule(
            (data.other.pca.shape[1], data.rna.pca.shape[1]),
            (self._profiles[0].shape[1], self._profiles[1].shape[1]),
            (len(data.other.features), len(data.rna.features)),
            self.params.n_latent,
        ).to(self.device)

    # ---------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int | None = None,
        *,
        max_time: float | None = None,
        progress: bool = True,
        world_size: int = 1,
        backend: str = "gloo",
        init_method: str | None = None,
        threads_per_process: int = 1,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        checkpoint_seconds: float | None = 600.0,
        resume: bool = False,
        **params,
    ) -> BiCLUM:
        """Train with early stopping (best weights restored).

        Parameters
        ----------
        max_epochs
            Upper bound on epochs (None: the preset's ``max_epochs``).
        max_time
            Seconds; training stops after the epoch that crosses it.
        progress
            Show a tqdm bar with the loss terms.
        world_size
            ``> 1`` trains data-parallel in that many processes
            (:func:`cellbridge.models.biclum._training.fit_distributed`); under ``torchrun`` the
            group's size is used. Same optimisation up to float rounding.
        backend, init_method, threads_per_process
            Data-parallel settings: ``"gloo"`` (CPU) or ``"nccl"`` (GPUs), the rendezvous URL, and
            threads per spawned process.
        checkpoint_dir
            Folder for ``checkpoint.pt``, the training state (weights, optimiser, early stopping,
            random states, history, epoch), written atomically every ``checkpoint_every`` epochs
            and/or ``checkpoint_seconds`` seconds, on Ctrl-C (after the current epoch; the
            :class:`~cellbridge._errors.TrainingInterrupted` raised then says how to resume) and
            when training ends. None: no checkpoints. Single-process training only.
        checkpoint_every
            Epochs between checkpoints (None: by time only).
        checkpoint_seconds
            Seconds between checkpoints (None: by epochs only); default 10 minutes.
        resume
            Continue the run saved in ``checkpoint_dir`` (built on the same data with the same
            options and seed): the result is identical to an uninterrupted run on CPU. Resuming a
            finished run restores its result without training. ``max_epochs`` and ``max_time``
            may be raised for the continued run.
        **params
            Overrides of ``lr``, ``batch_size``, ``patience``... for this run.

        Returns
        -------
        The trained model (``self``); per-epoch losses in ``history_``, best epoch and time in
        ``train_summary_``.
        """
        config = self._train_config(max_epochs, max_time, params)
        torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        if resume and checkpoint_dir is None:
            raise CellBridgeInputError("resume=True needs the checkpoint_dir of the run to continue.")
        if world_size > 1 or torchrun:
            if checkpoint_dir is not None:
                raise CellBridgeInputError("checkpoints and resume are supported in single-process training only; "
                                           "drop checkpoint_dir/resume or train with world_size=1.")
            world_size = resolve_world_size(world_size if world_size > 1 else None, torchrun)
            history, summary = fit_distributed(
                self.module, self._train_inputs(), config, progress, world_size=world_size, backend=backend,
                init_method=init_method, threads_per_process=threads_per_process)
        else:
            inputs = self._train_inputs()
            checkpoint = None if checkpoint_dir is None else Checkpoint(
                checkpoint_dir, run=checkpoint_run(config, inputs, self.module), model="BiCLUM",
                resume_hint=f"the same BiCLUM(...).train(..., checkpoint_dir={str(checkpoint_dir)!r}, `resume=True`)",
                every=checkpoint_every, seconds=checkpoint_seconds)
            history, summary = fit(self.module, inputs, config, progress, checkpoint=checkpoint, resume=resume)
        self.history_, self.train_summary_, self.is_trained_ = history, summary, True
        self._set_latent_mean()
        return self

    def _set_latent_mean(self) -> None:
        """The joint space's origin per modality: with ``latent_centering="per_modality"`` the mean
        encoder output of each modality's training cells (zeros otherwise), subtracted by
        :meth:`get_latent` and added back by :meth:`decode`."""
        mean = torch.zeros_like(self.module.latent_mean)
        if self.params.latent_centering == "per_modality":
            self.module.eval()
            for k, data in ((OTHER, self.data.other), (RNA, self.data.rna)):
                x = torch.as_tensor(data.pca, device=self.device)
                z = encode_all(lambda part: self.module.encode_cells(part, k), x, precision=self.params.precision)
                mean[k] = torch.as_tensor(z.mean(axis=0, dtype=np.float64), dtype=mean.dtype)
        self.module.latent_mean.copy_(mean)

    def _train_config(self, max_epochs: int | None, max_time: float | None, overrides: dict) -> TrainConfig:
        if self.data is None:
            raise CellBridgeInputError("this model was loaded without its training data; it can embed but not "
                                       "train (build a new BiCLUM on the data to train).")
        if max_time is not None and (isinstance(max_time, bool) or not isinstance(max_time, (int, float))
                                     or not max_time > 0):
            raise CellBridgeInputError(f"`max_time` must be a number of seconds above 0 (or None), got {max_time!r}.")
        return make_config(self.params.replace(max_epochs=max_epochs, **overrides), max_time=max_time,
                           seed=self.seed)

    def _train_inputs(self) -> TrainInputs:
        return TrainInputs((self.data.other, self.data.rna), self.params.target, self._profiles,
                           _module_order(self.feature_pairs), _module_order(self.cell_pairs))

    # ---------------------------------------------------------------- outputs
    def _modality_index(self, adata: AnnData | None, modality: str | None) -> int:
        if modality is not None:
            if modality not in ("rna", "other", self.modality, MUDATA_KEYS[self.modality]):
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

        Parameters
        ----------
        adata
            Cells to embed: the training ``rna`` or ``other`` object, or new cells of either
            modality. None: the training cells of ``modality`` (needs a model that holds its
            training data, not one loaded from disk).
        modality
            ``"rna"`` or ``"other"`` (also the modality's name, e.g. ``"atac"``/``"adt"``): which
            encoder to use. None: inferred when ``adata`` is the training ``rna`` or ``other``
            object itself.
        layer
            Layer of ``adata`` holding the raw values (None: ``.X``); not used with
            ``adata=None``.

        Returns
        -------
        numpy.ndarray
            Cells x ``n_latent`` embedding, rows in the order of ``adata``'s cells.
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
        z = encode_all(lambda part: self.module.embed_cells(part, k), x, precision=self.params.precision)
        return check_model_embedding(z, model="BiCLUM", what=f"{('other', 'rna')[k]} cells", inputs=pca)

    def _project(self, adata: AnnData, k: int, layer: str | None) -> np.ndarray:
        transform = self._transforms[k]
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
            profiles = torch.as_tensor(self._profiles[k], device=self.device)
            emb = encode_all(lambda part: self.module.encode_features(part, k), profiles, precision=self.params.precision)
            out[name] = pd.DataFrame(emb, index=self._transforms[k].features)
        return out

    def decode(self, z: np.ndarray, modality: str = "rna") -> pd.DataFrame:
        """The decoder's prediction of every model feature of one modality at points of the joint space.

        Parameters
        ----------
        z
            Points of the joint space (rows x ``n_latent``), e.g. cluster centroids of cell embeddings.
        modality
            ``"rna"`` or ``"other"``.

        Returns
        -------
        pandas.DataFrame
            Rows of ``z`` x features, in the decoder's target units (raw counts with
            ``target="counts"``, z-scored values with ``"scaled"``).
        """
        k = self._modality_index(None, modality)
        features = self.get_feature_embeddings()["rna" if k == RNA else "other"]
        self.module.eval()
        with torch.no_grad():
            v = torch.as_tensor(features.to_numpy(np.float32), device=self.device)
            x = self.module.decode_joint(torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.device), v, k)
        return pd.DataFrame(x.float().cpu().numpy(), columns=features.index)

    def to_mudata(self, key_added: str = "biclum", *, atac: AnnData | None = None):
        """The result as one MuData laid out for joint analysis (:func:`cellbridge.io.joint_mudata`).

        Modalities: ``"rna"`` and ``"gene_activity"`` (``modality="atac"``) or ``"adt"``, copies of
        the training objects with ``obsm[f"X_{key_added}"]`` (cell embedding) and
        ``varm[f"X_{key_added}"]`` (feature embedding, NaN for features the model did not use);
        with ``atac``, also ``"atac"``: the peaks of the gene-activity cells (no embedding of its
        own: its cells are those of ``"gene_activity"``). Top level: ``obsm[f"X_{key_added}"]`` of
        every cell, ``obs["modality"]`` (``"rna"`` or ``"atac"``/``"adt"``), the modalities' ``obs``
        columns (labels...) and ``uns[key_added]`` (history, parameters, pair counts), so that
        ``sc.pp.neighbors(mdata, use_rep="X_biclum")`` works. RNA and other cells sharing names are
        renamed ``NAME_rna`` / ``NAME_atac`` (input names in ``obs["input_obs_name"]``); feature
        names that collide with the RNA's get their modality as prefix (``"gene_activity:CD4"``,
        input names in ``var["input_var_name"]``).

        Parameters
        ----------
        key_added
            Name of the ``obsm`` / ``varm`` keys (``f"X_{key_added}"``) and of the ``uns`` entry.
        atac
            ``modality="atac"``: the peak matrix the gene activity was computed from (it must hold
            the gene-activity cells), kept as modality ``"atac"``; None: the peaks are not kept.

        Returns
        -------
        mudata.MuData
            The joint MuData described above (the training objects are not changed).
        """
        from ... import io

        key = f"X_{key_added}"
        other_name = "gene_activity" if self.modality == "atac" else MUDATA_KEYS[self.modality]
        side = MUDATA_KEYS[self.modality]
        feats = self.get_feature_embeddings()
        mods = {}
        for k, name, adata in ((RNA, "rna", self.rna), (OTHER, other_name, self.other)):
            out = adata.copy()
            out.obsm[key] = self.get_latent(adata, "rna" if k == RNA else "other")
            emb = feats["rna" if k == RNA else "other"].reindex(out.var_names)
            out.varm[key] = emb.to_numpy(dtype=np.float32)
            mods[name] = out
        sides = {"rna": "rna", other_name: side}
        if atac is not None:
            if self.modality != "atac" or not isinstance(atac, AnnData):
                raise CellBridgeInputError("`atac` (an AnnData of peaks) is only kept for a model of RNA + gene activity.")
            missing = self.other.obs_names.difference(atac.obs_names)
            if len(missing):
                raise CellBridgeInputError(
                    f"`atac` lacks {len(missing)} of the gene-activity cells (e.g. {list(missing[:2])}); pass the peak "
                    "matrix the gene activity was computed from, or atac=None.")
            mods["atac"] = atac[self.other.obs_names].copy()
            sides["atac"] = side
        mdata = io.joint_mudata(mods, sides=sides, obsm_keys=(key,))
        mdata.uns[key_added] = {"history": pd.DataFrame(self.history_), "train_summary": self.train_summary_,
                                "params": to_json(self.params), "modality": self.modality,
                                "n_cell_pairs": len(self.cell_pairs), "n_feature_pairs": len(self.feature_pairs)}
        return mdata

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save weights, preprocessing and feature profiles (tensors) plus JSON metadata; no pickles.

        Parameters
        ----------
        path
            Folder to write ``model.pt`` and ``metadata.json`` into (created when missing).
        overwrite
            Replace the files of a folder that exists and is not empty (otherwise
            :class:`FileExistsError`).
        """
        metas, extra = [], {}
        for k, t in enumerate(self._transforms):
            meta, arrays = t.to_dict()
            metas.append(meta)
            extra.update({f"transform{k}.{name}": a for name, a in arrays.items()})
            extra[f"profiles{k}"] = self._profiles[k]
        metadata = {"model": "BiCLUM", "modality": self.modality, "preset": self.preset, "seed": self.seed,
                    "params": to_json(self.params), "transforms": metas,
                    "history": self.history_, "train_summary": self.train_summary_}
        save_model_dir(path, self.module, metadata, overwrite=overwrite, extra=extra)

    @classmethod
    def load(cls, path: str | os.PathLike, rna: AnnData | None = None, other: AnnData | None = None,
             *, accelerator: str = "auto") -> BiCLUM:
        """Load a saved model; ``rna``/``other`` (optional) are attached for :meth:`get_latent`.

        Parameters
        ----------
        path
            Folder written by :meth:`save`.
        rna
            The RNA AnnData to attach as ``model.rna`` (None: none); it is not preprocessed again.
        other
            The other modality's AnnData to attach as ``model.other`` (None: none).
        accelerator
            ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

        Returns
        -------
        BiCLUM
            The trained model (without its training data: embed cells with :meth:`get_latent`).
        """
        state, meta = load_model_dir(path)
        if meta.get("model") != "BiCLUM":
            raise CellBridgeInputError(f"{path} holds a {meta.get('model')} model, not BiCLUM.")
        self = cls.__new__(cls)
        self.modality, self.preset, self.seed = meta["modality"], meta["preset"], meta["seed"]
        self.params = resolve_params(meta["preset"], meta["modality"], meta["params"])
        self.device = select_device(accelerator)
        self.rna, self.other, self.data = rna, other, None
        self.history_, self.train_summary_ = meta["history"], meta.get("train_summary", {})
        self.is_trained_ = True
        extra = {k[len("extra/"):]: v.numpy() for k, v in state.items() if k.startswith("extra/")}
        self._transforms = tuple(
            ExpressionTransform.from_dict(m, {n: extra[f"transform{k}.{n}"] for n in ARRAYS})
            for k, m in enumerate(meta["transforms"])
        )
        self._profiles = [extra["profiles0"], extra["profiles1"]]
        self.module = BiCLUMModule(
            tuple(t.components.shape[0] for t in self._transforms),
            tuple(p.shape[1] for p in self._profiles),
            tuple(len(t.features) for t in self._transforms),
            self.params.n_latent,
        )
        weights = {k: v for k, v in state.items() if not k.startswith("extra/")}
        weights.setdefault("latent_mean", self.module.latent_mean)  # saved before latent centring existed
        self.module.load_state_dict(weights)
        self.module.to(self.device)
        return self


def _split_inputs(rna, other, modality: str | None) -> tuple[AnnData, AnnData, str]:
    """``(rna, other, modality)`` from an AnnData pair or from one MuData (see :class:`BiCLUM`)."""
    if not hasattr(rna, "mod"):
        if other is None:
            raise CellBridgeInputError(
                "`other` is missing: pass the gene activity (or ADT) AnnData as the second argument, or one MuData "
                'with modalities "rna" and "gene_activity" (or "adt").')
        return rna, other, modality or "atac"
    mods = dict(rna.mod)
    if other is None and "rna" in mods and "gene_activity" in mods:
        if any(name.lower() in ("adt", "prot", "protein") for name in mods):
            raise CellBridgeInputError(f"The MuData holds both gene activity and proteins ({list(mods)}); pass the "
                                       "two AnnData objects to integrate: BiCLUM(mdata['rna'], mdata['adt']).")
        return mods["rna"], mods["gene_activity"], modality or "atac"
    rna_ad, other_ad, hint = split_mudata(rna, other)
    if hint == "atac" and _holds_peaks(other_ad):
        raise CellBridgeInputError(
            "BiCLUM integrates RNA with gene activity, but the MuData's ATAC modality holds peaks; add its gene "
            'activity first: mdata.mod["gene_activity"] = cellbridge.pp.gene_activity(mdata["atac"], annotation); '
            "mdata.update(); then pass the MuData again.")
    return rna_ad, other_ad, modality or hint


def _holds_peaks(adata: AnnData) -> bool:
    try:
        return infer_modality(adata) == "atac"
    except CellBridgeInputError:  # many features that are not peaks: genes
        return False


def _check_count(name: str, value, low: int) -> None:
    """Refuse a count option that is not a whole number >= ``low`` (never silently replaced)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise CellBridgeInputError(f"BiCLUM `{name}` must be a whole number of at least {low}, got {value!r}.")


def _module_order(pairs: np.ndarray) -> np.ndarray:
    """Swap the two columns of index pairs: (rna, other), the order of the user API, <-> (other,
    rna), the order of the network's modality index (``OTHER, RNA = 0, 1``)."""
    return np.ascontiguousarray(np.asarray(pairs)[:, ::-1])
