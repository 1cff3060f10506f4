"""scMDCF torch network and training loop (tensors only; no AnnData here).

METHODS §2.2 (network) and §2.4 (pre-training, KMeans initialisation, DEC fine-tuning).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .losses import (
    dec_kl_loss,
    dec_soft_assignment,
    dec_target_distribution,
    mse_reconstruction_loss,
    mutual_information_loss,
)


def mlp(dims: Sequence[int], *, last_activation: bool = True) -> nn.Sequential:
    """Linear → BatchNorm1d → ReLU for every layer; the last layer is plain Linear when
    ``last_activation`` is False."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if last_activation or i < len(dims) - 2:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU()]
    return nn.Sequential(*layers)


class ScMDCFModule(nn.Module):
    """Two encoders, a fusion block giving ``z``, two decoders from ``z`` and DEC centroids.

    Parameters
    ----------
    n_rna, n_other
        Input widths of the two modalities.
    enc_hidden
        Encoder widths after the input, e.g. ``(512, 64)`` (ATAC) or ``(512, 64, 8)`` (ADT).
    fusion_hidden
        Fusion widths between the concatenated codes and ``z`` (``(32,)`` ATAC, ``()`` ADT).
    dec_hidden
        Decoder widths between ``z`` and the output, e.g. ``(64, 512)``.
    z_dim, n_clusters
        Width of the fused embedding and number of DEC centroids.
    output_activation
        ``"relu_bn"`` (reference) or ``"linear"`` decoder output layer (defect E2).
    latent_activation
        ``"relu_bn"`` (reference) or ``"linear"`` last fusion layer.
    """

    def __init__(
        self,
        n_rna: int,
        n_other: int,
        *,
        enc_hidden: Sequence[int] = (512, 64),
        fusion_hidden: Sequence[int] = (32,),
        dec_hidden: Sequence[int] = (64, 512),
        z_dim: int = 8,
        n_clusters: int = 2,
        output_activation: str = "relu_bn",
        latent_activation: str = "relu_bn",
    ):
        super().__init__()
        out_act = output_activation == "relu_bn"
        self.enc_rna = mlp([n_rna, *enc_hidden])
        self.enc_other = mlp([n_other, *enc_hidden])
        self.fusion = mlp([2 * enc_hidden[-1], *fusion_hidden, z_dim],
                          last_activation=latent_activation == "relu_bn")
        self.dec_rna = mlp([z_dim, *dec_hidden, n_rna], last_activation=out_act)
        self.dec_other = mlp([z_dim, *dec_hidden, n_other], last_activation=out_act)
        self.centers = nn.Parameter(torch.zeros(n_clusters, z_dim))

    def forward(self, x_rna: torch.Tensor, x_other: torch.Tensor) -> dict[str, torch.Tensor]:
        h_rna, h_other = self.enc_rna(x_rna), self.enc_other(x_other)
        z = self.fusion(torch.cat([h_rna, h_other], dim=1))
        return {"h_rna": h_rna, "h_other": h_other, "z": z,
                "rec_rna": self.dec_rna(z), "rec_other": self.dec_other(z)}


# ---------------------------------------------------------------------------------------------
# training loop
# ---------------------------------------------------------------------------------------------


def batch_indices(n: int, batch_size: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    """Full batch in order when ``batch_size`` is None or ≥ n; else a seeded permutation split
    into near-equal batches (no batch smaller than half the size, so BatchNorm always works)."""
    if batch_size is None or batch_size >= n:
        return [torch.arange(n)]
    perm = torch.randperm(n, generator=generator)
    return list(torch.tensor_split(perm, math.ceil(n / batch_size)))


@torch.no_grad()
def embed(module: ScMDCFModule, x_rna: torch.Tensor, x_other: torch.Tensor,
          chunk: int = 4096) -> torch.Tensor:
    """``z`` for all cells with BatchNorm in evaluation mode."""
    was_training = module.training
    module.eval()
    z = torch.cat([module(x_rna[i:i + chunk], x_other[i:i + chunk])["z"]
                   for i in range(0, x_rna.shape[0], chunk)])
    module.train(was_training)
    return z


def _terms(module, out, xb_rna, xb_other, lamb) -> dict[str, torch.Tensor]:
    return {
        "rec_rna": mse_reconstruction_loss(out["rec_rna"], xb_rna),
        "rec_other": mse_reconstruction_loss(out["rec_other"], xb_other),
        "cl": mutual_information_loss(out["h_rna"].softmax(dim=1), out["h_other"].softmax(dim=1), lamb),
    }


def make_optimizer(name: str, params, lr: float, rho: float = 0.8) -> torch.optim.Optimizer:
    """``"adam"`` (amsgrad, as the reference pre-training) or ``"adadelta"`` (reference fine-tuning)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, amsgrad=True)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=rho)
    raise ValueError(f'optimizer must be "adam" or "adadelta", got {name!r}')


def _run_epochs(
    phase: str,
    n_epochs: int,
    step: Callable[[torch.Tensor, int], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    n: int,
    cfg: dict[str, Any],
    generator: torch.Generator,
    progress: bool,
) -> list[dict[str, float]]:
    history: list[dict[str, float]] = []
    bar = tqdm(range(n_epochs), desc=f"scMDCF {phase}", disable=not progress, leave=False)
    global_step = 0
    for epoch in bar:
        sums: dict[str, float] = {}
        batches = batch_indices(n, cfg["batch_size"], generator)
        for idx in batches:
            terms = step(idx, global_step)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            global_step += 1
            for key, val in terms.items():
                sums[key] = sums.get(key, 0.0) + float(val.detach()) / len(batches)
        history.append({"phase": phase, "epoch": epoch, **sums})
        bar.set_postfix({k: f"{v:.3g}" for k, v in sums.items()})
    return history


def pretrain(module: ScMDCFModule, x_rna, x_other, cfg: dict[str, Any], generator,
             progress: bool = True) -> list[dict[str, float]]:
    """Reconstruction + weighted contrastive loss (reference: Adam 1e-2 amsgrad, 1·1·0.1)."""
    w = cfg["pretrain_weights"]
    module.train()
    opt = make_optimizer(cfg["pretrain_optimizer"], module.parameters(), cfg["pretrain_lr"])

    def step(idx, _):
        t = _terms(module, module(x_rna[idx], x_other[idx]), x_rna[idx], x_other[idx], cfg["lamb"])
        t["loss"] = w["rec_rna"] * t["rec_rna"] + w["rec_other"] * t["rec_other"] + w["cl"] * t["cl"]
        return t

    return _run_epochs("pretrain", cfg["pretrain_epochs"], step, opt, x_rna.shape[0], cfg,
                       generator, progress)


def finetune(module: ScMDCFModule, x_rna, x_other, cfg: dict[str, Any], generator,
             progress: bool = True) -> list[dict[str, float]]:
    """DEC fine-tuning: weighted reconstruction + KL(P‖Q) + contrastive loss.

    ``cfg["dec_target"] == "live"`` recomputes P from the batch's Q with gradient (reference,
    defect E3); ``"fixed"`` computes P on all cells without gradient every
    ``cfg["target_update_interval"]`` steps (standard DEC).
    """
    w = cfg["finetune_weights"]
    module.train()
    opt = make_optimizer(cfg["finetune_optimizer"], module.parameters(), cfg["finetune_lr"],
                         cfg["rho"])
    state: dict[str, torch.Tensor] = {}

    def step(idx, global_step):
        out = module(x_rna[idx], x_other[idx])
        q = dec_soft_assignment(out["z"], module.centers, cfg["alpha"])
        if cfg["dec_target"] == "live":
            p = dec_target_distribution(q)
        else:
            if global_step % cfg["target_update_interval"] == 0:
                with torch.no_grad():
                    z_all = embed(module, x_rna, x_other)
                    q_all = dec_soft_assignment(z_all, module.centers, cfg["alpha"])
                    state["p"] = dec_target_distribution(q_all)
            p = state["p"][idx]
        t = _terms(module, out, x_rna[idx], x_other[idx], cfg["lamb"])
        t["kl"] = dec_kl_loss(p, q)
        t["loss"] = (w["rec_rna"] * t["rec_rna"] + w["rec_other"] * t["rec_other"]
                     + w["kl"] * t["kl"] + w["cl"] * t["cl"])
        return t

    return _run_epochs("finetune", cfg["finetune_epochs"], step, opt, x_rna.shape[0], cfg,
                       generator, progress)


def init_centers(module: ScMDCFModule, z: np.ndarray, n_clusters: int, seed: int,
                 n_init: int = 20) -> np.ndarray:
    """KMeans (``n_init`` restarts) on ``z``; copies the centroids into the module."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(z)
    centers = torch.as_tensor(km.cluster_centers_, dtype=module.centers.dtype)
    module.centers = nn.Parameter(centers.to(module.centers.device))
    return km.labels_
