"""scMDCF torch network and training loop (tensors and batch sources; no AnnData here).

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

from ._scmdcf_data import PairedBatches
from .losses import (
    dec_kl_loss,
    dec_soft_assignment,
    dec_target_distribution,
    mse_reconstruction_loss,
    mutual_information_loss,
)


class LocalGroup:
    """The process group of single-process training: every cross-process operation is the identity.

    :class:`cellbridge.models.scmdcf_distributed.DataParallelGroup` implements the same methods
    with ``torch.distributed``; the training loop is written once against this interface.
    """

    rank = 0
    world_size = 1

    def split(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's rows of the global batch ``idx``."""
        return idx

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of ``x`` over processes (autograd-aware)."""
        return x

    def mean_weight(self, n_local: int, n_global: int) -> float:
        """Factor turning a mean over ``n_local`` rows into this process's share of the global mean."""
        return 1.0

    def share(self, n: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``n`` cells that this process embeds."""
        return 0, n

    def assemble(self, part: torch.Tensor, start: int, n: int) -> torch.Tensor:
        """All ``n`` rows from each process's rows ``part`` (starting at ``start``)."""
        return part

    def average(self, values: dict[str, float]) -> dict[str, float]:
        """Mean over processes of per-process numbers (epoch losses)."""
        return values

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``x`` on every process."""
        return x

    def wrap(self, module: nn.Module, step: Callable) -> Callable:
        """The callable that runs a training ``step`` (DDP's forward in a data-parallel group)."""
        return step


LOCAL = LocalGroup()


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
def embed(module: ScMDCFModule, data: PairedBatches | torch.Tensor, x_other: torch.Tensor | None = None,
          chunk: int = 4096, group: LocalGroup | None = None) -> torch.Tensor:
    """``z`` for all cells with BatchNorm in evaluation mode, ``chunk`` cells at a time.

    ``data`` is a :class:`PairedBatches` (or the dense RNA tensor, with ``x_other``). In a
    data-parallel ``group`` every process embeds its share of the cells and all receive all rows.
    """
    source = PairedBatches.from_tensors(data, x_other) if x_other is not None else data
    group = group or LOCAL
    start, stop = group.share(source.n_obs)
    was_training = module.training
    module.eval()
    parts = [module(*source.rows(slice(i, min(i + chunk, stop))))["z"] for i in range(start, stop, chunk)]
    module.train(was_training)
    z = torch.cat(parts) if parts else module.centers.new_zeros(0, module.centers.shape[1])
    return group.assemble(z, start, source.n_obs)


def _terms(module, out, xb_rna, xb_other, lamb, group: LocalGroup | None = None) -> dict[str, torch.Tensor]:
    return {
        "rec_rna": mse_reconstruction_loss(out["rec_rna"], xb_rna),
        "rec_other": mse_reconstruction_loss(out["rec_other"], xb_other),
        "cl": mutual_information_loss(out["h_rna"].softmax(dim=1), out["h_other"].softmax(dim=1), lamb,
                                      reduce=None if group is None else group.all_sum),
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
    group: LocalGroup = LOCAL,
) -> list[dict[str, float]]:
    """``n_epochs`` passes over ``n`` cells in the batches of :func:`batch_indices`.

    ``step(idx, global_step)`` returns the loss terms of the global batch ``idx``; the epoch
    history holds their means over batches (and over processes in a data-parallel ``group``).
    """
    history: list[dict[str, float]] = []
    bar = tqdm(range(n_epochs), desc=f"scMDCF {phase}", disable=not progress or group.rank != 0, leave=False)
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
        sums = group.average(sums)
        history.append({"phase": phase, "epoch": epoch, **sums})
        bar.set_postfix({k: f"{v:.3g}" for k, v in sums.items()})
    return history


def _rescale_means(terms: dict[str, torch.Tensor], keys: Sequence[str], weight: float) -> None:
    """Multiply per-cell-mean terms by ``weight`` (1 in one process: left untouched)."""
    if weight != 1.0:
        for key in keys:
            terms[key] = terms[key] * weight


def _check_source(source) -> PairedBatches:
    if not isinstance(source, PairedBatches):
        raise TypeError(f"expected a PairedBatches batch source (PairedBatches.from_tensors(x_rna, x_other) "
                        f"wraps two tensors), got {type(source).__name__}")
    return source


def pretrain(module: ScMDCFModule, source: PairedBatches, cfg: dict[str, Any], generator: torch.Generator,
             progress: bool = True, group: LocalGroup = LOCAL) -> list[dict[str, float]]:
    """Reconstruction + weighted contrastive loss (reference: Adam 1e-2 amsgrad, 1·1·0.1).

    ``source`` gives the scaled rows of each batch; in a data-parallel ``group`` each process
    takes its slice of every global batch. The DEC centroids are frozen (unused) in this phase.
    """
    source = _check_source(source)
    w = cfg["pretrain_weights"]
    module.train()
    opt = make_optimizer(cfg["pretrain_optimizer"], module.parameters(), cfg["pretrain_lr"])

    def step(idx, _):
        local = group.split(idx)
        xb_rna, xb_other = source.rows(local)
        t = _terms(module, module(xb_rna, xb_other), xb_rna, xb_other, cfg["lamb"], group)
        _rescale_means(t, ("rec_rna", "rec_other"), group.mean_weight(len(local), len(idx)))
        t["loss"] = w["rec_rna"] * t["rec_rna"] + w["rec_other"] * t["rec_other"] + w["cl"] * t["cl"]
        return t

    module.centers.requires_grad_(False)
    try:
        return _run_epochs("pretrain", cfg["pretrain_epochs"], group.wrap(module, step), opt, source.n_obs,
                           cfg, generator, progress, group)
    finally:
        module.centers.requires_grad_(True)


def finetune(module: ScMDCFModule, source: PairedBatches, cfg: dict[str, Any], generator: torch.Generator,
             progress: bool = True, group: LocalGroup = LOCAL) -> list[dict[str, float]]:
    """DEC fine-tuning: weighted reconstruction + KL(P‖Q) + contrastive loss.

    ``cfg["dec_target"] == "live"`` recomputes P from the batch's Q with gradient (reference,
    defect E3); ``"fixed"`` computes P on all cells (in chunks) without gradient every
    ``cfg["target_update_interval"]`` steps (standard DEC). The cluster frequencies
    ``f_j = Σ_i q_ij`` of the live target are summed over the whole global batch.
    """
    source = _check_source(source)
    w = cfg["finetune_weights"]
    module.train()
    opt = make_optimizer(cfg["finetune_optimizer"], module.parameters(), cfg["finetune_lr"],
                         cfg["rho"])
    state: dict[str, torch.Tensor] = {}

    def step(idx, global_step):
        local = group.split(idx)
        xb_rna, xb_other = source.rows(local)
        out = module(xb_rna, xb_other)
        q = dec_soft_assignment(out["z"], module.centers, cfg["alpha"])
        if cfg["dec_target"] == "live":
            p = dec_target_distribution(q, group.all_sum)
        else:
            if global_step % cfg["target_update_interval"] == 0:
                with torch.no_grad():
                    q_all = dec_soft_assignment(embed(module, source, group=group), module.centers, cfg["alpha"])
                    state["p"] = dec_target_distribution(q_all)
            p = state["p"][local]
        t = _terms(module, out, xb_rna, xb_other, cfg["lamb"], group)
        t["kl"] = dec_kl_loss(p, q)
        _rescale_means(t, ("rec_rna", "rec_other", "kl"), group.mean_weight(len(local), len(idx)))
        t["loss"] = (w["rec_rna"] * t["rec_rna"] + w["rec_other"] * t["rec_other"]
                     + w["kl"] * t["kl"] + w["cl"] * t["cl"])
        return t

    return _run_epochs("finetune", cfg["finetune_epochs"], group.wrap(module, step), opt, source.n_obs,
                       cfg, generator, progress, group)


KMEANS_MAX_CELLS = 100_000
"""Above this many cells the DEC centroids are initialised by KMeans on a seeded sample."""


def kmeans_centers(z: np.ndarray, n_clusters: int, seed: int, n_init: int = 20,
                   max_cells: int | None = KMEANS_MAX_CELLS) -> np.ndarray:
    """Centroids of KMeans (``n_init`` restarts) on ``z``, or on a seeded sample of ``max_cells``
    rows when ``z`` is larger (None: always all rows)."""
    from sklearn.cluster import KMeans

    if max_cells is not None and z.shape[0] > max_cells:
        z = z[np.sort(np.random.default_rng(seed).choice(z.shape[0], max_cells, replace=False))]
    return KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(z).cluster_centers_


def init_centers(module: ScMDCFModule, z: np.ndarray, n_clusters: int, seed: int,
                 n_init: int = 20, group: LocalGroup = LOCAL,
                 max_cells: int | None = KMEANS_MAX_CELLS) -> np.ndarray:
    """KMeans centroids of ``z`` (see :func:`kmeans_centers`) copied into the module.

    In a data-parallel ``group`` KMeans runs on rank 0 and the centroids are broadcast.
    Returns the centroids.
    """
    if group.rank == 0:
        centers = torch.as_tensor(kmeans_centers(z, n_clusters, seed, n_init, max_cells),
                                  dtype=module.centers.dtype)
    else:
        centers = torch.zeros(n_clusters, z.shape[1], dtype=module.centers.dtype)
    centers = group.broadcast(centers.to(module.centers.device))
    module.centers = nn.Parameter(centers)
    return centers.cpu().numpy()
