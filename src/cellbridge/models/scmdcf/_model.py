"""scMDCF: joint embedding and clustering of paired multi-omics (RNA + ATAC or RNA + ADT).

User class in the scvi-tools style (METHODS §2). Usage::

    import cellbridge as cb
    model = cb.scMDCF(rna, adt, n_clusters=8)          # preprocessing runs here (§2.1)
    model.train()                                      # pre-training + DEC fine-tuning (§2.4)
    z, labels = model.get_latent(), model.predict_clusters()
    rna_out, adt_out = model.write_results(rna, adt)   # obsm["X_scmdcf"], obs["scmdcf_cluster"]
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import torch

from ..._errors import CellBridgeInputError, CellBridgeWarning
from ..._validate import check_model_embedding
from ...pp.paired import MUDATA_KEYS, infer_modality, split_mudata
from ...tl.clustering import consensus_clusters, leiden
from ..distributed import resolve_world_size
from ..losses import dec_soft_assignment
from .._params import to_json
from ..training import Checkpoint, fingerprint, load_model_dir, save_model_dir, select_device, set_seed
from ._data import PairedBatches, modality_agreement_weights, prepare_paired
from ._module import ScMDCFModule
from ._presets import CLUSTER_METHODS, ScMDCFParams, check_n_clusters, resolve_params
from ._training import RunState, embed, fit_distributed, fit_module

logger = logging.getLogger("cellbridge")

_PREP_KEYS = ("n_top_rna", "n_top_other", "atac_representation", "n_lsi", "rna_representation",
              "n_pcs", "clip")
PHASES = ("pretrain", "finetune")


def _pretrain_fit(history: list[dict[str, Any]], weights: dict[str, float]) -> float:
    """``Σ_m weights_m · rec_m`` of the last pre-training epoch in ``history`` (inf without one)."""
    rows = [row for row in history if row["phase"] == "pretrain"]
    if not rows:
        return float("inf")
    return weights["rec_rna"] * rows[-1]["rec_rna"] + weights["rec_other"] * rows[-1]["rec_other"]


def _warn_dropped_modality(weights: tuple[float, float], modality: str, floor: float) -> None:
    """Warn when the agreement weighting leaves a modality out of the losses."""
    names = ("RNA", modality)
    for i in (0, 1):
        if weights[i] == 0.0:
            dropped, kept = names[i], names[1 - i]
            warnings.warn(
                f"The {dropped} input agrees too little with {kept} (agreement weight below {floor}) "
                f"and was left out of scMDCF's losses: the clusters come essentially from {kept} "
                f"alone. Compare them with KMeans/Leiden on {kept} PCA (docs/scmdcf.md, 'Where the "
                "default does not beat the best baseline'), or pass modality_weighting='none' to "
                "keep both.", CellBridgeWarning, stacklevel=4)


class scMDCF:  # the published method's name
    """Paired multi-omics deep clustering with cross-modal contrastive learning (scMDCF).

    Parameters
    ----------
    rna
        RNA counts (cells x genes), or a MuData with ``"rna"`` and ``"atac"``/``"adt"``.
    other
        ATAC peak or ADT counts of the same cells (matched by ``obs_names``).
    modality
        ``"atac"`` or ``"protein"``; inferred from the features when None.
    n_clusters
        Number of clusters K. When None, K is estimated by Leiden on the pre-trained embedding
        (defect E4); the value used is in ``n_clusters_`` and ``n_clusters_source_``.
    preset
        ``"default"`` (ours, chosen by benchmark) or ``"reference"`` (published code).
    layer_rna, layer_other
        Layers with raw counts (None: ``.X``).
    seed
        Seeds weights, batches and KMeans; training on CPU is deterministic (defect E7). With an
        ensemble (``n_models`` > 1) member ``i`` is seeded ``seed + 1000 * i``.
    accelerator
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    **hyperparams
        Overrides of the preset (fields of :class:`~cellbridge.models.scmdcf.ScMDCFParams`), e.g.
        ``output_activation="linear"``, ``dec_target="fixed"``, ``batch_size=256``, ``lamb=1``.
    """

    def __init__(
        self,
        rna,
        other: ad.AnnData | None = None,
        *,
        modality: str | None = None,
        n_clusters: int | None = None,
        preset: str = "default",
        layer_rna: str | None = None,
        layer_other: str | None = None,
        seed: int = 0,
        accelerator: str = "auto",
        **hyperparams: Any,
    ):
        rna_ad, other_ad, hint = split_mudata(rna, other)
        if not isinstance(other_ad, ad.AnnData):
            raise CellBridgeInputError(f"`other` must be an AnnData, got {type(other_ad).__name__}.")
        self.modality = modality or hint or infer_modality(other_ad)
        self.params: ScMDCFParams = resolve_params(preset, self.modality, hyperparams)
        check_n_clusters(n_clusters)  # before the preprocessing; the upper bound once the cells are known
        self.rna, self.other = prepare_paired(
            rna_ad, other_ad, modality=self.modality, layer_rna=layer_rna, layer_other=layer_other,
            seed=seed, sparse_above=self.params.sparse_threshold(),
            **{k: getattr(self.params, k) for k in _PREP_KEYS},
        )
        if n_clusters is not None:
            self._check_k(n_clusters)
        self.modality_weights_ = self._apply_modality_weighting(n_clusters, seed)
        self._init = {"modality": self.modality, "n_clusters": n_clusters, "preset": preset,
                      "layer_rna": layer_rna, "layer_other": layer_other, "seed": seed,
                      "hyperparams": hyperparams}
        self.seed, self.preset = seed, preset
        self.device = select_device(accelerator)
        self.n_clusters_ = n_clusters
        self.n_clusters_source_ = "given" if n_clusters is not None else None
        self.history_: list[dict[str, Any]] = []
        self.train_summary_: dict[str, Any] = {}
        self.is_trained_ = False
        self.obs_names_ = self.rna.obs_names.copy()
        self.var_names_ = {"rna": self.rna.var_names.copy(), "other": self.other.var_names.copy()}
        self._latents: list[np.ndarray] | None = None
        self.member_ids_ = list(range(self.params.effective_n_models(self.rna.n_obs)))
        self.modules_ = [self._build_module(n_clusters or 1, self.member_seed(i)) for i in self.member_ids_]

    @property
    def module(self) -> ScMDCFModule:
        """The network of the first (with ``n_models=1`` the only) ensemble member."""
        return self.modules_[0]

    def member_seed(self, i: int) -> int:
        """Seed of ensemble member ``i`` (member 0 uses ``seed`` itself).

        Parameters
        ----------
        i
            Index of the ensemble member (0 to ``n_models - 1``).

        Returns
        -------
        int
            ``seed + 1000 * i``.
        """
        return self.seed + 1000 * i

    # ------------------------------------------------------------------ setup
    def _check_k(self, k: int) -> None:
        check_n_clusters(k, self.rna.n_obs)

    def _apply_modality_weighting(self, n_clusters: int | None, seed: int) -> tuple[float, float]:
        """With ``modality_weighting="agreement"``, weights ``w`` = :func:`modality_agreement_weights`
        raised to ``modality_weight_power`` (and set to 0 below ``modality_weight_floor``) multiply
        each modality's reconstruction weight in both phases, and the smaller one the contrastive
        weight (aligning with a noise modality is harmful); returns ``w`` ((1, 1) without weighting)."""
        if self.params.modality_weighting == "none":
            return 1.0, 1.0
        w = modality_agreement_weights(self.rna.X, self.other.X, n_clusters, seed=seed)
        w = tuple(float(v ** self.params.modality_weight_power) for v in w)
        w = tuple(v if v >= self.params.modality_weight_floor else 0.0 for v in w)
        scaled = {}
        for phase in ("pretrain_weights", "finetune_weights"):
            weights = dict(getattr(self.params, phase))
            weights["rec_rna"] *= w[0]
            weights["rec_other"] *= w[1]
            weights["cl"] *= min(w)
            scaled[phase] = weights
        self.params = self.params.replace(**scaled)
        logger.info("scMDCF: modality weights RNA %.3f, %s %.3f", w[0], self.modality, w[1])
        _warn_dropped_modality(w, self.modality, self.params.modality_weight_floor)
        return w

    def _build_module(self, n_clusters: int, seed: int, n_rna: int | None = None,
                      n_other: int | None = None) -> ScMDCFModule:
        p = self.params
        set_seed(seed)
        return ScMDCFModule(
            n_rna or self.rna.n_vars, n_other or self.other.n_vars, enc_hidden=p.enc_hidden,
            fusion_hidden=p.fusion_hidden,
            dec_hidden=p.dec_hidden, z_dim=p.z_dim, n_clusters=n_clusters,
            output_activation=p.output_activation, latent_activation=p.latent_activation,
        ).to(self.device)

    def _source(self) -> PairedBatches:
        """Batches of the prepared data (dense tensors, or sparse values scaled per batch)."""
        if self.rna is None:
            raise CellBridgeInputError(
                "this scMDCF model was loaded without its data: it holds the trained cells' embedding and "
                "clusters but cannot train; load it with the training data (scMDCF.load(dir, rna, other)).")
        return PairedBatches.from_prepared(self.rna, self.other, self.device)

    # ------------------------------------------------------------------ training
    def train(self, pretrain_epochs: int | None = None, finetune_epochs: int | None = None, *,
              progress: bool = True, world_size: int = 1, checkpoint_dir: str | os.PathLike | None = None,
              checkpoint_every: int | None = None, checkpoint_seconds: float | None = 600.0,
              resume: bool = False, **distributed: Any) -> scMDCF:
        """Pre-train, initialise the DEC centroids by KMeans, fine-tune (METHODS §2.4).

        Parameters
        ----------
        pretrain_epochs, finetune_epochs
            Epochs of each phase (None: the preset's, 200 + 200; 0 skips the phase).
        progress
            Show a tqdm bar with each loss term.
        world_size
            ``> 1`` trains data-parallel in that many processes, each on a near-equal slice of every
            global batch (:func:`cellbridge.models.scmdcf._training.fit_distributed`); under
            ``torchrun`` the group's size is used.
        checkpoint_dir
            Folder for ``checkpoint.pt``, the training state of every ensemble member (weights,
            optimiser, batch generator and random states, DEC target, history, phase and epoch),
            written atomically every ``checkpoint_every`` epochs and/or ``checkpoint_seconds``
            seconds, on Ctrl-C (after the current epoch; the
            :class:`~cellbridge._errors.TrainingInterrupted` raised then says how to resume) and
            when training ends. None: no checkpoints. Single-process training only.
        checkpoint_every
            Epochs between checkpoints (None: by time only).
        checkpoint_seconds
            Seconds between checkpoints (None: by epochs only); default 10 minutes.
        resume
            Continue the run saved in ``checkpoint_dir`` (a model built on the same data with the
            same options and seed): the result is identical to an uninterrupted run on CPU.
            Resuming a finished run restores its result without training.
        **distributed
            ``backend``, ``init_method``, ``threads_per_process`` for ``world_size > 1``.

        Returns
        -------
        The trained model (``self``).
        """
        cfg = self.train_settings(pretrain_epochs, finetune_epochs)
        torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        if resume and checkpoint_dir is None:
            raise CellBridgeInputError("resume=True needs the checkpoint_dir of the run to continue.")
        if checkpoint_dir is not None:
            if world_size > 1 or torchrun:
                raise CellBridgeInputError("checkpoints and resume are supported in single-process training only; "
                                           "drop checkpoint_dir/resume or train with world_size=1.")
            self._fit_checkpointed(cfg, progress, Checkpoint(
                checkpoint_dir, run=self._checkpoint_run(cfg), model="scMDCF",
                resume_hint=f"the same scMDCF(...).train(..., checkpoint_dir={str(checkpoint_dir)!r}, `resume=True`)",
                every=checkpoint_every, seconds=checkpoint_seconds), resume)
            self.train_summary_["world_size"] = 1
            return self
        if world_size > 1 or torchrun:
            world_size = resolve_world_size(world_size if world_size > 1 else None, torchrun)
            source = self._source().to(torch.device("cpu"))

            def fit(module, seed, k):
                return fit_distributed(module, source, cfg, k, seed, progress, world_size=world_size,
                                       **distributed)
        else:
            if distributed:
                raise CellBridgeInputError(f"{sorted(distributed)} only apply with world_size > 1.")
            source = self._source()

            def fit(module, seed, k):
                return fit_module(module, source, cfg, k, seed, progress)
        self._fit_members(cfg, fit)
        self.train_summary_["world_size"] = world_size
        return self

    def _fit_members(self, cfg: ScMDCFParams, fit: Callable[[ScMDCFModule, int, int | None], dict]) -> None:
        """Train every ensemble member by ``fit(module, seed, n_clusters)`` (a :func:`fit_module`
        result) and record the results; the K of the first member (given or estimated) is used by
        the others."""
        k, results = self.n_clusters_, []
        for i, module in zip(self.member_ids_, self.modules_):
            results.append(fit(module, self.member_seed(i), k))
            k = results[-1]["n_clusters"]
            if len(self.modules_) > 1:
                logger.info("scMDCF: ensemble member %d/%d trained", i + 1, len(self.modules_))
        self._set_trained(results, cfg)

    def _checkpoint_run(self, cfg: ScMDCFParams) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: settings, members, cells, features and data."""
        rows = slice(0, min(self.rna.n_obs, 2000))
        dense = [x[rows].toarray() if hasattr(x, "toarray") else np.asarray(x[rows]) for x in (self.rna.X, self.other.X)]
        return {"params": to_json(cfg), "seed": self.seed, "n_clusters": self.n_clusters_,
                "member_ids": list(self.member_ids_), "modality_weights": list(self.modality_weights_),
                "shape": [self.rna.shape, self.other.shape],
                "hash": fingerprint(np.asarray(self.obs_names_, dtype=str), np.asarray(self.var_names_["rna"], dtype=str),
                                    np.asarray(self.var_names_["other"], dtype=str), *dense)}

    def _fit_checkpointed(self, cfg: ScMDCFParams, progress: bool, checkpoint: Checkpoint, resume: bool) -> None:
        """:meth:`_fit_members` in one process with checkpoints (and resuming from one)."""
        run = RunState(checkpoint)
        if resume:
            meta, tensors = checkpoint.load()
            for result, state, module in zip(meta["done"], tensors["done"], self.modules_):
                module.centers = torch.nn.Parameter(torch.empty_like(state["centers"]))
                module.load_state_dict(state)
                run.done.append({**result, "state": state})
            if meta["finished"]:
                self._set_trained([{k: v for k, v in d.items() if k != "state"} for d in run.done], cfg)
                return
            run.member, run.resume = int(meta["member"]), {**meta, "tensors": tensors}
            logger.info("scMDCF: resuming from %s (member %d, %s epoch %d)", checkpoint.path, run.member + 1,
                        meta["phase"], meta["epoch"] + 1)
        else:
            checkpoint.check_fresh()
        source = self._source()
        k = run.done[0]["n_clusters"] if run.done else self.n_clusters_
        with checkpoint.interruptible():
            for pos in range(len(run.done), len(self.modules_)):
                run.member = pos
                result = fit_module(self.modules_[pos], source, cfg, k, self.member_seed(self.member_ids_[pos]),
                                    progress, run=run)
                k = result["n_clusters"]
                run.done.append({**result, "state": self.modules_[pos].state_dict()})
                if len(self.modules_) > 1:
                    logger.info("scMDCF: ensemble member %d/%d trained", pos + 1, len(self.modules_))
        results = [{k: v for k, v in d.items() if k != "state"} for d in run.done]
        checkpoint.save({"done": results}, {"done": [d["state"] for d in run.done]}, finished=True)
        self._set_trained(results, cfg)

    def train_settings(self, pretrain_epochs: int | None = None, finetune_epochs: int | None = None
                       ) -> ScMDCFParams:
        """The hyper-parameters of a training run (epochs overridden, batch size resolved).

        Parameters
        ----------
        pretrain_epochs, finetune_epochs
            Epochs of each phase (None: the model's ``params``; 0 skips the phase).

        Returns
        -------
        ScMDCFParams
            ``params`` with these epochs and ``batch_size`` resolved for the model's number of
            cells (None: full batch; see :meth:`ScMDCFParams.effective_batch_size`).
        """
        return self.params.replace(
            pretrain_epochs=self.params.pretrain_epochs if pretrain_epochs is None else pretrain_epochs,
            finetune_epochs=self.params.finetune_epochs if finetune_epochs is None else finetune_epochs,
            batch_size=self.params.effective_batch_size(self.rna.n_obs))

    def _set_trained(self, results: list[dict[str, Any]], cfg: ScMDCFParams) -> None:
        """Record what :func:`fit_module` returned for each member (history rows get ``member``)."""
        self.history_ = [{**row, "member": i} for i, r in zip(self.member_ids_, results) for row in r["history"]]
        if len(self.modules_) > 1 and cfg.ensemble_combine == "select":
            self._keep_best_fit(results, cfg)
        if self.n_clusters_ is None:
            self.n_clusters_ = int(results[0]["n_clusters"])
            self.n_clusters_source_ = f"estimated (Leiden, resolution {cfg.leiden_resolution})"
            logger.info("scMDCF: estimated K=%d clusters (Leiden on the pre-trained embedding)",
                        self.n_clusters_)
        self.is_trained_ = True
        self._latents = None
        self.train_summary_ = {"pretrain_epochs": cfg.pretrain_epochs, "finetune_epochs": cfg.finetune_epochs,
                               "batch_size": cfg.batch_size, "n_models": len(self.modules_)}

    def _keep_best_fit(self, results: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
        """Keep only the member with the lowest reconstruction part of the pre-training objective
        (``Σ_m weight_m · rec_m`` of its last pre-training epoch), as KMeans keeps its restart
        with the lowest inertia; the scores are in ``member_scores_``."""
        scores = [_pretrain_fit(r["history"], cfg.pretrain_weights) for r in results]
        best = int(np.argmin(scores))
        self.member_scores_ = dict(zip(self.member_ids_, map(float, scores)))
        self.member_ids_, self.modules_ = [self.member_ids_[best]], [self.modules_[best]]
        logger.info("scMDCF: kept ensemble member %d (lowest reconstruction error)", self.member_ids_[0])

    # ------------------------------------------------------------------ outputs
    def _require_trained(self) -> None:
        if not self.is_trained_:
            raise RuntimeError("The scMDCF model is not trained yet; call `.train()` first.")

    def get_latent(self, adata: ad.AnnData | None = None, modality: str | None = None) -> np.ndarray:
        """Fused embedding ``z``: cells x z_dim, or the members' ``z`` side by side (cells x
        n_models·z_dim) for an ensemble.

        Parameters
        ----------
        adata
            None: the model's cells in its order (``self.rna.obs_names``). An AnnData of the
            training cells (either modality; matched by ``obs_names``, any order): their rows. The
            fused embedding needs both modalities of a cell, so only trained cells can be embedded.
        modality
            Accepted for the same signature as :meth:`cellbridge.BiCLUM.get_latent`; both
            modalities of a cell share one fused ``z``.
        """
        if modality is not None and modality not in ("rna", "other", self.modality, MUDATA_KEYS[self.modality]):
            raise CellBridgeInputError(f"modality must be 'rna' or 'other' ({self.modality}), got {modality!r}.")
        z = np.hstack(self._member_latents())
        if adata is None:
            return z
        pos = self.obs_names_.get_indexer(adata.obs_names)
        if (pos < 0).any():
            raise CellBridgeInputError(
                f"{int((pos < 0).sum())} of the {adata.n_obs} cells of `adata` (e.g. "
                f"{list(adata.obs_names[pos < 0][:2])}) are not among the model's cells; scMDCF embeds "
                "the paired cells it was trained on (train a new model for new cells).")
        return z[pos]

    def _member_latents(self) -> list[np.ndarray]:
        """Each ensemble member's ``z`` of the prepared cells (embedded once after training)."""
        self._require_trained()
        if self._latents is None:
            source = self._source()
            self._latents = [check_model_embedding(embed(module, source).cpu().numpy(), model="scMDCF",
                                                   what=f"trained cells (ensemble member {i})")
                             for i, module in zip(self.member_ids_, self.modules_)]
        return [z.copy() for z in self._latents]

    def predict_clusters(self, method: str | None = None) -> np.ndarray:
        """Cluster labels by ``method`` on each member's ``z``, combined over an ensemble by
        :func:`cellbridge.tl.consensus_clusters` (co-association, average linkage, K clusters).

        ``method``: ``"kmeans"`` (reference, n_init restarts), ``"leiden"`` (15-NN graph of ``z``,
        resolution bisected to give K communities; the closest count when K is not reachable),
        ``"dec"`` (argmax of the soft assignment) or ``"kmeans_dec_init"`` (KMeans on ``z``
        started from the fine-tuned DEC centroids, one run). None uses the preset's
        ``cluster_method``.

        Parameters
        ----------
        method
            ``"kmeans"``, ``"leiden"``, ``"dec"`` or ``"kmeans_dec_init"`` (see above); None: the
            preset's ``cluster_method``.

        Returns
        -------
        numpy.ndarray
            Integer cluster label per cell, in the model's cell order (``obs_names_``).
        """
        return self._combine(self.member_clusters(method))

    def member_clusters(self, method: str | None = None, latents: list[np.ndarray] | None = None
                        ) -> list[np.ndarray]:
        """Each ensemble member's labels by ``method`` (see :meth:`predict_clusters`) on its own
        ``z`` (``latents``: the members' ``z`` when already computed).

        Parameters
        ----------
        method
            Clustering method (see :meth:`predict_clusters`); None: the preset's
            ``cluster_method``.
        latents
            The members' ``z`` (one cells x z_dim array per member, in member order) when already
            computed; None: embedded here.

        Returns
        -------
        list of numpy.ndarray
            One integer label array per ensemble member, in the model's cell order.
        """
        method = method or self.params.cluster_method
        if method not in CLUSTER_METHODS:
            raise CellBridgeInputError(f"`method` must be one of {CLUSTER_METHODS}, got {method!r}.")
        latents = self._member_latents() if latents is None else latents
        return [self._cluster_member(module, z, self.member_seed(i), method)
                for i, module, z in zip(self.member_ids_, self.modules_, latents)]

    def _combine(self, labelings: list[np.ndarray]) -> np.ndarray:
        """The only member's labels, or the consensus of the members' labels."""
        if len(labelings) == 1:
            return labelings[0]
        return consensus_clusters(labelings, self.n_clusters_, seed=self.seed)

    def _cluster_member(self, module: ScMDCFModule, z: np.ndarray, seed: int, method: str) -> np.ndarray:
        """One member's labels (see :meth:`predict_clusters`)."""
        from sklearn.cluster import KMeans

        centers = module.centers.detach().cpu()
        if method == "kmeans":
            return KMeans(self.n_clusters_, n_init=self.params.n_init, random_state=seed).fit_predict(z)
        if method == "kmeans_dec_init":
            return KMeans(self.n_clusters_, init=centers.numpy().astype(np.float64), n_init=1
                          ).fit_predict(z.astype(np.float64))
        if method == "leiden":
            return leiden(z, n_clusters=self.n_clusters_, seed=seed, flavor="leidenalg")
        return dec_soft_assignment(torch.as_tensor(z), centers, self.params.alpha).argmax(dim=1).numpy()

    def write_results(self, rna=None, other=None, *, copy: bool = True, key_added: str = "scmdcf",
                      method: str | None = None):
        """Write ``obsm[f"X_{key_added}"]`` and ``obs[f"{key_added}_cluster"]``.

        With ``copy=True`` (default) returns ``(rna_out, other_out)``: copies of the given objects
        (default: the prepared ones) restricted to the model's cells, in the model's order. With
        ``copy=False`` writes in place (cells the model dropped get NaN) and returns None.

        Parameters
        ----------
        rna
            The RNA AnnData to write into (None: the model's prepared ``rna`` and ``other``).
        other
            The other modality's AnnData to write into (None: only ``rna``, when ``rna`` is
            given).
        copy
            Return written copies (True) or write into the given objects in place (False).
        key_added
            The keys written: ``obsm[f"X_{key_added}"]`` (fused embedding) and
            ``obs[f"{key_added}_cluster"]`` (categorical labels).
        method
            Clustering method (see :meth:`predict_clusters`); None: the preset's
            ``cluster_method``.

        Returns
        -------
        tuple of anndata.AnnData or None
            With ``copy=True`` the written copies (one per object written into), else None.
        """
        latents = self._member_latents()  # embedded once for both outputs
        z, labels = np.hstack(latents), self._combine(self.member_clusters(method, latents))
        targets = [a for a in ((rna, other) if rna is not None else (self.rna, self.other)) if a is not None]
        if not targets:
            raise CellBridgeInputError("pass the AnnData objects to write into: write_results(rna, other).")
        if copy:
            outs = [a[self.obs_names_].copy() for a in targets]
            for a in outs:
                a.obsm[f"X_{key_added}"] = z
                a.obs[f"{key_added}_cluster"] = pd.Categorical(labels.astype(str))
            return tuple(outs)
        for a in targets:
            pos = a.obs_names.get_indexer(self.obs_names_)
            full = np.full((a.n_obs, z.shape[1]), np.nan, dtype=np.float32)
            full[pos] = z
            lab = np.full(a.n_obs, None, dtype=object)
            lab[pos] = labels.astype(str)
            a.obsm[f"X_{key_added}"] = full
            a.obs[f"{key_added}_cluster"] = pd.Categorical(lab)
        return None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the weights, the trained cells' fused embedding and a JSON of the parameters,
        features, cells and history (no pickles).

        Parameters
        ----------
        path
            Folder to write ``model.pt`` and ``metadata.json`` into (created when missing).
        overwrite
            Replace the files of a folder that exists and is not empty (otherwise
            :class:`FileExistsError`).

        Returns
        -------
        pathlib.Path
            The folder written.
        """
        self._require_trained()
        meta = {"model": "scMDCF", "init": self._init, "params": to_json(self.params),
                "modality_weights": list(self.modality_weights_), "n_clusters_": self.n_clusters_,
                "n_clusters_source_": self.n_clusters_source_, "history": self.history_,
                "train_summary": self.train_summary_, "member_ids": self.member_ids_,
                "var_names_rna": self.var_names_["rna"].tolist(),
                "var_names_other": self.var_names_["other"].tolist(),
                "obs_names": self.obs_names_.tolist()}
        latents = {f"z{i}": z for i, z in enumerate(self._member_latents())}
        return save_model_dir(path, torch.nn.ModuleList(self.modules_), meta, overwrite=overwrite, extra=latents)

    @classmethod
    def load(cls, path: str | os.PathLike, rna=None, other: ad.AnnData | None = None, *,
             accelerator: str = "auto") -> scMDCF:
        """Load a saved model.

        Without data the model is self-contained: :meth:`get_latent`, :meth:`predict_clusters` and
        :meth:`write_results` use the saved embedding of the trained cells. With the training data
        (``rna``, ``other`` or one MuData) it is preprocessed again with the saved settings, the
        selected features are checked against the saved ones, and the model can train further.

        Parameters
        ----------
        path
            Folder written by :meth:`save`.
        rna
            None, the training RNA AnnData, or one MuData holding both modalities.
        other
            The training data's other modality (ATAC or ADT AnnData) with an AnnData ``rna``;
            None otherwise.
        accelerator
            ``"auto"``, ``"cpu"`` or ``"cuda"``.

        Returns
        -------
        scMDCF
            The trained model.
        """
        state, meta = load_model_dir(path)
        if meta.get("model") != "scMDCF":
            raise CellBridgeInputError(f"{path} does not hold an scMDCF model.")
        latents = [state.pop(f"extra/z{i}").numpy() for i in range(len(meta["member_ids"]))]
        init = dict(meta["init"])
        if rna is not None:
            hyper = init.pop("hyperparams")
            init["n_clusters"] = meta["n_clusters_"]
            model = cls(rna, other, accelerator=accelerator, **init, **hyper)
            for side, key in (("rna", "var_names_rna"), ("other", "var_names_other")):
                if model.var_names_[side].tolist() != meta[key]:
                    raise CellBridgeInputError(
                        f"The features selected from the data given to `load` differ from the saved "
                        f"model's ({key}); pass the same data the model was trained on, or load without data."
                    )
            kept = meta["member_ids"]
            model.member_ids_, model.modules_ = kept, [model.modules_[i] for i in kept]
        else:
            model = cls.__new__(cls)
            model.modality, model.seed, model.preset = init["modality"], init["seed"], init["preset"]
            model._init, model.rna, model.other = init, None, None
            model.device = select_device(accelerator)
            model.params = resolve_params(init["preset"], init["modality"], meta["params"])
            model.modality_weights_ = tuple(meta.get("modality_weights", (1.0, 1.0)))
            model.obs_names_ = pd.Index(meta["obs_names"])
            model.var_names_ = {"rna": pd.Index(meta["var_names_rna"]), "other": pd.Index(meta["var_names_other"])}
            model.member_ids_ = meta["member_ids"]
            model.modules_ = [model._build_module(meta["n_clusters_"], model.member_seed(i), len(model.var_names_["rna"]),
                                                  len(model.var_names_["other"])) for i in model.member_ids_]
        torch.nn.ModuleList(model.modules_).load_state_dict(state)
        model.n_clusters_, model.n_clusters_source_ = meta["n_clusters_"], meta["n_clusters_source_"]
        model.history_, model.train_summary_ = meta["history"], meta.get("train_summary", {})
        model.is_trained_, model._latents = True, latents
        return model

    def __repr__(self) -> str:
        return (f"scMDCF(RNA {len(self.var_names_['rna'])} + {self.modality} {len(self.var_names_['other'])} "
                f"features, {len(self.obs_names_)} cells, preset={self.preset!r}, K={self.n_clusters_}, "
                f"trained={self.is_trained_})")


def cluster_paired(rna, other: ad.AnnData | None = None, *, modality: str | None = None,
                   n_clusters: int | None = None, preset: str = "default",
                   layer_rna: str | None = None, layer_other: str | None = None, seed: int = 0,
                   accelerator: str = "auto", progress: bool = True,
                   checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
                   checkpoint_seconds: float | None = 600.0, resume: bool = False,
                   **hyperparams: Any) -> tuple[md.MuData, scMDCF]:
    """Train scMDCF and return ``(MuData, model)`` — what ``cellbridge cluster`` calls.

    The MuData (laid out by :func:`cellbridge.io.joint_mudata`) holds copies of the inputs
    (restricted to the kept cells) under ``"rna"`` and ``"atac"``/``"adt"``, each with
    ``obs["scmdcf_cluster"]``; one row per cell at the top level with the fused embedding
    ``obsm["X_scmdcf"]`` (only there: it is one embedding of both modalities, not one per
    modality), ``obs["scmdcf_cluster"]``, ``obs["modality"]`` (``"rna+adt"`` / ``"rna+atac"``: every
    cell was measured in both) and the inputs' ``obs`` columns; ``uns["scmdcf"]`` (K, how K was
    chosen, preset, seed, ensemble size). Feature names the second modality shares with the RNA
    get its name as prefix (``"adt:CD4"``, input names in ``var["input_var_name"]``).

    Parameters
    ----------
    rna
        RNA counts (cells x genes), or a MuData with ``"rna"`` and ``"atac"``/``"adt"``.
    other
        ATAC peak or ADT counts of the same cells (matched by ``obs_names``); None with a MuData.
    modality
        ``"atac"`` or ``"protein"``; inferred from the features when None.
    n_clusters
        Number of clusters K; None: estimated by Leiden on the pre-trained embedding.
    preset
        ``"default"`` (ours, chosen by benchmark) or ``"reference"`` (published code).
    layer_rna, layer_other
        Layers with raw counts (None: ``.X``).
    seed
        Seeds weights, batches and KMeans (see :class:`scMDCF`).
    accelerator
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress
        Show a tqdm bar during training.
    checkpoint_dir, checkpoint_every, checkpoint_seconds, resume
        Checkpoints of the training state and resuming from one (see :meth:`scMDCF.train`).
    **hyperparams
        Overrides of the preset (fields of :class:`~cellbridge.models.scmdcf.ScMDCFParams`).

    Returns
    -------
    tuple
        ``(mdata, model)``: the MuData described above and the trained :class:`scMDCF`.
    """
    model = scMDCF(rna, other, modality=modality, n_clusters=n_clusters, preset=preset,
                   layer_rna=layer_rna, layer_other=layer_other, seed=seed,
                   accelerator=accelerator, **hyperparams).train(
        progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds, resume=resume)
    from ... import io

    rna, other, _ = split_mudata(rna, other)
    rna_out, other_out = model.write_results(rna, other)
    name = MUDATA_KEYS[model.modality]
    mdata = io.joint_mudata({"rna": rna_out, name: other_out}, sides={"rna": f"rna+{name}", name: f"rna+{name}"},
                            obsm_keys=("X_scmdcf",), keep_obsm_in_mods=False)
    mdata.uns["scmdcf"] = {"n_clusters": int(model.n_clusters_), "preset": preset, "seed": seed,
                           "n_clusters_source": model.n_clusters_source_, "n_models": len(model.modules_)}
    return mdata, model
