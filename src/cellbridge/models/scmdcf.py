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
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import torch

from .._errors import CellBridgeInputError
from ..pp.paired import infer_modality, prepare_paired, split_mudata
from . import scmdcf_module as M
from .scmdcf_presets import effective_batch_size, resolve_hyperparams
from .training import load_model_dir, save_model_dir, select_device, set_seed

logger = logging.getLogger("cellbridge")

_PREP_KEYS = ("n_top_rna", "n_top_other", "atac_representation", "n_lsi", "rna_representation",
              "n_pcs", "clip")


def knn_igraph(z: np.ndarray, n_neighbors: int = 15):
    """Symmetrised unweighted ``n_neighbors``-NN graph of ``z`` as an ``igraph.Graph``."""
    import igraph as ig
    from sklearn.neighbors import kneighbors_graph

    k = max(1, min(n_neighbors, z.shape[0] - 1))
    adj = kneighbors_graph(np.asarray(z, dtype=np.float64), k, mode="connectivity")
    adj = ((adj + adj.T) > 0).tocoo()
    keep = adj.row < adj.col
    return ig.Graph(n=z.shape[0], edges=list(zip(adj.row[keep].tolist(), adj.col[keep].tolist())))


def leiden_membership(graph, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Leiden (RB-configuration, ``resolution``) community of each vertex."""
    import leidenalg

    part = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition,
                                    resolution_parameter=resolution, seed=seed, n_iterations=2)
    return np.asarray(part.membership)


def estimate_n_clusters(z: np.ndarray, *, resolution: float = 1.0, n_neighbors: int = 15,
                        seed: int = 0) -> int:
    """Number of Leiden communities on the kNN graph of ``z`` (at least 2)."""
    labels = leiden_membership(knn_igraph(z, n_neighbors), resolution, seed)
    return max(2, len(np.unique(labels)))


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
        Seeds weights, batches and KMeans; training on CPU is deterministic (defect E7).
    accelerator
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    **hyperparams
        Overrides of the preset (see ``cellbridge.models.scmdcf_presets``), e.g.
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
        self.hyperparams = resolve_hyperparams(preset, self.modality, hyperparams)
        self.rna, self.other = prepare_paired(
            rna_ad, other_ad, modality=self.modality, layer_rna=layer_rna, layer_other=layer_other,
            seed=seed, **{k: self.hyperparams[k] for k in _PREP_KEYS},
        )
        if n_clusters is not None:
            self._check_k(n_clusters)
        self._init = {"modality": self.modality, "n_clusters": n_clusters, "preset": preset,
                      "layer_rna": layer_rna, "layer_other": layer_other, "seed": seed,
                      "hyperparams": hyperparams}
        self.seed, self.preset = seed, preset
        self.device = select_device(accelerator)
        self.n_clusters_ = n_clusters
        self.n_clusters_source_ = "given" if n_clusters is not None else None
        self.history_: list[dict[str, float]] = []
        self.is_trained_ = False
        self.module = self._build_module(n_clusters or 1)

    # ------------------------------------------------------------------ setup
    def _check_k(self, k: int) -> None:
        if int(k) != k or k < 2 or k > self.rna.n_obs:
            raise CellBridgeInputError(
                f"`n_clusters`={k} is invalid: it must be an integer between 2 and the number of "
                f"cells ({self.rna.n_obs}); pass a smaller K or None to estimate it."
            )

    def _build_module(self, n_clusters: int) -> M.ScMDCFModule:
        hp = self.hyperparams
        set_seed(self.seed)
        return M.ScMDCFModule(
            self.rna.n_vars, self.other.n_vars, enc_hidden=tuple(hp["enc_hidden"]),
            fusion_hidden=tuple(hp["fusion_hidden"]), dec_hidden=tuple(hp["dec_hidden"]),
            z_dim=hp["z_dim"], n_clusters=n_clusters, output_activation=hp["output_activation"],
            latent_activation=hp["latent_activation"],
        ).to(self.device)

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        to = {"dtype": torch.float32, "device": self.device}
        return torch.as_tensor(self.rna.X, **to), torch.as_tensor(self.other.X, **to)

    # ------------------------------------------------------------------ training
    def train(self, pretrain_epochs: int | None = None, finetune_epochs: int | None = None, *,
              progress: bool = True) -> scMDCF:
        """Pre-train, initialise the DEC centroids by KMeans, fine-tune (METHODS §2.4).

        Parameters
        ----------
        pretrain_epochs, finetune_epochs
            Epochs of each phase (None: the preset's, 200 + 200).
        progress
            Show a tqdm bar with each loss term.
        """
        cfg = dict(self.hyperparams)
        cfg["pretrain_epochs"] = cfg["pretrain_epochs"] if pretrain_epochs is None else pretrain_epochs
        cfg["finetune_epochs"] = cfg["finetune_epochs"] if finetune_epochs is None else finetune_epochs
        cfg["batch_size"] = effective_batch_size(cfg, self.rna.n_obs)
        set_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        x_rna, x_other = self._tensors()
        self.history_ = M.pretrain(self.module, x_rna, x_other, cfg, gen, progress)
        z = M.embed(self.module, x_rna, x_other).cpu().numpy()
        if self.n_clusters_ is None:
            self.n_clusters_ = estimate_n_clusters(z, resolution=cfg["leiden_resolution"], seed=self.seed)
            self.n_clusters_source_ = f"estimated (Leiden, resolution {cfg['leiden_resolution']})"
            logger.info("scMDCF: estimated K=%d clusters (Leiden on the pre-trained embedding)",
                        self.n_clusters_)
        M.init_centers(self.module, z, self.n_clusters_, self.seed, cfg["n_init"])
        self.history_ += M.finetune(self.module, x_rna, x_other, cfg, gen, progress)
        self.is_trained_ = True
        self._train_cfg = {k: cfg[k] for k in ("pretrain_epochs", "finetune_epochs", "batch_size")}
        return self

    # ------------------------------------------------------------------ outputs
    def _require_trained(self) -> None:
        if not self.is_trained_:
            raise RuntimeError("The scMDCF model is not trained yet; call `.train()` first.")

    def get_latent(self) -> np.ndarray:
        """Fused embedding ``z`` (cells x z_dim) of the prepared cells (``self.rna.obs_names``)."""
        self._require_trained()
        return M.embed(self.module, *self._tensors()).cpu().numpy()

    def predict_clusters(self, method: str | None = None) -> np.ndarray:
        """Cluster labels 0..K-1: ``"kmeans"`` on ``z`` (reference, n_init restarts) or ``"dec"``
        (argmax of the soft assignment). None uses the preset's ``cluster_method``."""
        self._require_trained()
        method = method or self.hyperparams["cluster_method"]
        z = self.get_latent()
        if method == "kmeans":
            from sklearn.cluster import KMeans

            return KMeans(self.n_clusters_, n_init=self.hyperparams["n_init"],
                          random_state=self.seed).fit_predict(z)
        if method == "dec":
            from .losses import dec_soft_assignment

            q = dec_soft_assignment(torch.as_tensor(z), self.module.centers.detach().cpu(),
                                    self.hyperparams["alpha"])
            return q.argmax(dim=1).numpy()
        raise CellBridgeInputError(f'`method` must be "kmeans" or "dec", got {method!r}.')

    def write_results(self, rna=None, other=None, *, copy: bool = True, key_added: str = "scmdcf",
                      method: str | None = None):
        """Write ``obsm[f"X_{key_added}"]`` and ``obs[f"{key_added}_cluster"]``.

        With ``copy=True`` (default) returns ``(rna_out, other_out)``: copies of the given objects
        (default: the prepared ones) restricted to the model's cells, in the model's order. With
        ``copy=False`` writes in place (cells the model dropped get NaN) and returns None.
        """
        z, labels = self.get_latent(), self.predict_clusters(method)
        targets = [a for a in ((rna, other) if rna is not None else (self.rna, self.other)) if a is not None]
        if copy:
            outs = [a[self.rna.obs_names].copy() for a in targets]
            for a in outs:
                a.obsm[f"X_{key_added}"] = z
                a.obs[f"{key_added}_cluster"] = pd.Categorical(labels.astype(str))
            return tuple(outs)
        for a in targets:
            pos = a.obs_names.get_indexer(self.rna.obs_names)
            full = np.full((a.n_obs, z.shape[1]), np.nan, dtype=np.float32)
            full[pos] = z
            lab = np.full(a.n_obs, None, dtype=object)
            lab[pos] = labels.astype(str)
            a.obsm[f"X_{key_added}"] = full
            a.obs[f"{key_added}_cluster"] = pd.Categorical(lab)
        return None

    # ------------------------------------------------------------------ persistence
    def save(self, dir_path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the state dict and a JSON of init arguments, features and history."""
        self._require_trained()
        meta = {"model": "scMDCF", "init": self._init, "n_clusters_": self.n_clusters_,
                "n_clusters_source_": self.n_clusters_source_, "history": self.history_,
                "var_names_rna": self.rna.var_names.tolist(),
                "var_names_other": self.other.var_names.tolist(),
                "obs_names": self.rna.obs_names.tolist()}
        return save_model_dir(dir_path, self.module, meta, overwrite=overwrite)

    @classmethod
    def load(cls, dir_path: str | os.PathLike, rna, other: ad.AnnData | None = None, *,
             accelerator: str = "auto") -> scMDCF:
        """Rebuild a saved model on the same data (preprocessed again with the saved settings)."""
        state, meta = load_model_dir(dir_path)
        if meta.get("model") != "scMDCF":
            raise CellBridgeInputError(f"{dir_path} does not hold an scMDCF model.")
        init = dict(meta["init"])
        hyper = init.pop("hyperparams")
        init["n_clusters"] = meta["n_clusters_"]
        model = cls(rna, other, accelerator=accelerator, **init, **hyper)
        for side, key in ((model.rna, "var_names_rna"), (model.other, "var_names_other")):
            if side.var_names.tolist() != meta[key]:
                raise CellBridgeInputError(
                    f"The features selected from the data given to `load` differ from the saved "
                    f"model's ({key}); pass the same data the model was trained on."
                )
        model.module.load_state_dict(state)
        model.n_clusters_source_ = meta["n_clusters_source_"]
        model.history_ = meta["history"]
        model.is_trained_ = True
        return model

    def __repr__(self) -> str:
        return (f"scMDCF(RNA {self.rna.n_vars} + {self.modality} {self.other.n_vars} features, "
                f"{self.rna.n_obs} cells, preset={self.preset!r}, K={self.n_clusters_}, "
                f"trained={self.is_trained_})")


def cluster_paired(rna, other: ad.AnnData | None = None, *, modality: str | None = None,
                   n_clusters: int | None = None, preset: str = "default",
                   layer_rna: str | None = None, layer_other: str | None = None, seed: int = 0,
                   accelerator: str = "auto", progress: bool = True,
                   **hyperparams: Any) -> tuple[md.MuData, scMDCF]:
    """Train scMDCF and return ``(MuData, model)`` — what ``cellbridge cluster`` calls.

    The MuData holds copies of the inputs (restricted to the kept cells) under ``"rna"`` and
    ``"atac"``/``"adt"`` with ``obsm["X_scmdcf"]`` and ``obs["scmdcf_cluster"]``, and
    ``uns["scmdcf"]`` (K, how K was chosen, preset, seed).
    """
    model = scMDCF(rna, other, modality=modality, n_clusters=n_clusters, preset=preset,
                   layer_rna=layer_rna, layer_other=layer_other, seed=seed,
                   accelerator=accelerator, **hyperparams).train(progress=progress)
    if hasattr(rna, "mod"):
        rna, other = rna.mod["rna"], next(a for k, a in rna.mod.items() if k != "rna")
    rna_out, other_out = model.write_results(rna, other)
    mdata = md.MuData({"rna": rna_out, "atac" if model.modality == "atac" else "adt": other_out})
    mdata.uns["scmdcf"] = {"n_clusters": int(model.n_clusters_), "preset": preset, "seed": seed,
                           "n_clusters_source": model.n_clusters_source_}
    return mdata, model
