"""scMDCF training (METHODS §2.4): pre-training, KMeans initialisation of the DEC centroids,
DEC fine-tuning, in one process or data-parallel.

The loop is written once against the group strategy of :mod:`cellbridge.models.distributed`
(:class:`~cellbridge.models.distributed.LocalGroup` in one process,
:class:`~cellbridge.models.distributed.DataParallelGroup` in each process of a data-parallel
group). Tensors and batch sources only; no AnnData here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..._errors import CellBridgeInputError
from ..._utils import subsample_rows
from ...tl.clustering import estimate_n_clusters
from ..distributed import LOCAL, DataParallelGroup, LocalGroup, cpu_state, launch, sync_batchnorm
from ..losses import (
    dec_kl_loss,
    dec_soft_assignment,
    dec_target_distribution,
    mse_reconstruction_loss,
    mutual_information_loss,
)
from ..training import Checkpoint, check_finite_loss, make_optimizer, rng_state, set_rng_state, set_seed
from ._data import PairedBatches
from ._module import ScMDCFModule
from ._presets import ScMDCFParams


@dataclass
class RunState:
    """Checkpointing of one scMDCF training (all ensemble members, single process).

    ``done`` holds the finished members' results and weights; ``resume`` the saved state of the
    member being trained when the run continues from a checkpoint (None: start it afresh).
    :func:`_run_epochs` calls :meth:`epoch_end` after every epoch.
    """

    checkpoint: Checkpoint
    member: int = 0
    done: list[dict[str, Any]] = field(default_factory=list)
    resume: dict[str, Any] | None = None
    _context: dict[str, Any] = field(default_factory=dict)

    def begin(self, phase: str, history: list[dict[str, float]], n_clusters: int | None) -> None:
        """Record what precedes the epochs of ``phase`` (for the checkpoint)."""
        self._context = {"phase": phase, "history": history, "n_clusters": n_clusters}

    def resumed_phase(self, phase: str) -> dict[str, Any] | None:
        """The saved state when this member resumes inside ``phase`` (used once), else None."""
        if self.resume is not None and self.resume["phase"] == phase:
            state, self.resume = self.resume, None
            return state
        return None

    def epoch_end(self, epoch: int, n_epochs: int, module, optimizer, generator, global_step: int,
                  history: list[dict[str, float]], extra: dict[str, torch.Tensor]) -> None:
        ckpt = self.checkpoint
        if not (ckpt.stop_requested or ckpt.due()):
            return
        ctx = self._context
        meta = {"member": self.member, "phase": ctx["phase"], "epoch": epoch, "global_step": global_step,
                "history": ctx["history"] + history, "n_clusters": ctx["n_clusters"],
                "done": [{k: v for k, v in d.items() if k != "state"} for d in self.done]}
        tensors = {"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                   "generator": generator.get_state(), "rng": rng_state(), "extra": dict(extra),
                   "done": [d["state"] for d in self.done]}
        ckpt.save(meta, tensors)
        if ckpt.stop_requested:
            raise ckpt.interrupted(f"{ctx['phase']} epoch {epoch + 1} of {n_epochs} (ensemble member "
                                   f"{self.member + 1})")


_DIVERGED_HINTS = ("pretrain_lr / finetune_lr too large (try 10x smaller), alpha (the DEC degrees of "
                   "freedom) too small, or loss weights / lamb too large")


def fit_module(module: ScMDCFModule, source: PairedBatches, cfg: ScMDCFParams,
               n_clusters: int | None, seed: int, progress: bool = True,
               group: LocalGroup = LOCAL, run: RunState | None = None) -> dict[str, Any]:
    """Pre-train, initialise the centroids (estimating K when None), fine-tune (METHODS §2.4).

    One member's whole training, run by one process or by every process of a data-parallel
    ``group`` (Leiden and KMeans then run on rank 0, their results are broadcast). With ``run``
    (single process) the state is checkpointed after epochs and a saved state is resumed.

    Returns
    -------
    ``{"history": per-epoch loss terms of both phases, "n_clusters": K used}``.
    """
    set_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if run is not None and run.resume is not None and run.resume["phase"] == "finetune":
        n_clusters = int(run.resume["n_clusters"])
        history = [row for row in run.resume["history"] if row["phase"] == "pretrain"]
        module.centers = nn.Parameter(torch.empty_like(run.resume["tensors"]["module"]["centers"]))
    else:
        if run is not None:
            run.begin("pretrain", [], n_clusters)
        history = pretrain(module, source, cfg, gen, progress, group, run=run)
        z = embed(module, source, group=group).cpu().numpy()
        if n_clusters is None:
            k = max(2, estimate_n_clusters(z, resolution=cfg.leiden_resolution, seed=seed, flavor="leidenalg")) if group.rank == 0 else 0
            n_clusters = int(group.broadcast(torch.tensor([k], device=module.centers.device)).item())
        init_centers(module, z, n_clusters, seed, cfg.n_init, group)
    if run is not None:
        run.begin("finetune", history, n_clusters)
    history += finetune(module, source, cfg, gen, progress, group, run=run)
    return {"history": history, "n_clusters": n_clusters}


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


def _run_epochs(
    phase: str,
    n_epochs: int,
    step: Callable[[torch.Tensor, int], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    n: int,
    cfg: ScMDCFParams,
    generator: torch.Generator,
    progress: bool,
    group: LocalGroup = LOCAL,
    run: RunState | None = None,
    module: nn.Module | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """``n_epochs`` passes over ``n`` cells in the batches of :func:`batch_indices`.

    ``step(idx, global_step)`` returns the loss terms of the global batch ``idx``; the epoch
    history holds their means over batches (and over processes in a data-parallel ``group``).
    With ``run``, ``module`` and ``extra`` (tensors the step keeps between batches) are
    checkpointed after epochs, and restored when the run resumes inside this phase.
    """
    history: list[dict[str, float]] = []
    first, global_step = 0, 0
    saved = run.resumed_phase(phase) if run is not None else None
    if saved is not None:
        tensors = saved["tensors"]
        module.load_state_dict(tensors["module"])
        optimizer.load_state_dict(tensors["optimizer"])
        generator.set_state(tensors["generator"])
        set_rng_state(tensors["rng"])
        extra.update({k: v.to(module.centers.device) for k, v in tensors["extra"].items()})
        history = [row for row in saved["history"] if row["phase"] == phase]
        first, global_step = int(saved["epoch"]) + 1, int(saved["global_step"])
    bar = tqdm(range(first, n_epochs), desc=f"scMDCF {phase}", disable=not progress or group.rank != 0,
               initial=first, total=n_epochs)
    for epoch in bar:
        sums: dict[str, float] = {}
        batches = batch_indices(n, cfg.batch_size, generator)
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
        check_finite_loss(sums, model="scMDCF", epoch=epoch, phase=phase, hints=_DIVERGED_HINTS)
        if run is not None:
            run.epoch_end(epoch, n_epochs, module, optimizer, generator, global_step, history, extra or {})
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


def pretrain(module: ScMDCFModule, source: PairedBatches, cfg: ScMDCFParams, generator: torch.Generator,
             progress: bool = True, group: LocalGroup = LOCAL, run: RunState | None = None
             ) -> list[dict[str, float]]:
    """Reconstruction + weighted contrastive loss (reference: Adam 1e-2 amsgrad, 1·1·0.1).

    ``source`` gives the scaled rows of each batch; in a data-parallel ``group`` each process
    takes its slice of every global batch. The DEC centroids are frozen (unused) in this phase.
    """
    source = _check_source(source)
    w = cfg.pretrain_weights
    module.train()
    opt = make_optimizer(cfg.pretrain_optimizer, module.parameters(), cfg.pretrain_lr)

    def step(idx, _):
        local = group.split(idx)
        xb_rna, xb_other = source.rows(local)
        t = _terms(module, module(xb_rna, xb_other), xb_rna, xb_other, cfg.lamb, group)
        _rescale_means(t, ("rec_rna", "rec_other"), group.mean_weight(len(local), len(idx)))
        t["loss"] = w["rec_rna"] * t["rec_rna"] + w["rec_other"] * t["rec_other"] + w["cl"] * t["cl"]
        return t

    module.centers.requires_grad_(False)
    try:
        return _run_epochs("pretrain", cfg.pretrain_epochs, group.wrap(module, step), opt, source.n_obs,
                           cfg, generator, progress, group, run=run, module=module, extra={})
    finally:
        module.centers.requires_grad_(True)


def finetune(module: ScMDCFModule, source: PairedBatches, cfg: ScMDCFParams, generator: torch.Generator,
             progress: bool = True, group: LocalGroup = LOCAL, run: RunState | None = None
             ) -> list[dict[str, float]]:
    """DEC fine-tuning: weighted reconstruction + KL(P‖Q) + contrastive loss.

    ``cfg.dec_target == "live"`` recomputes P from the batch's Q with gradient (reference,
    defect E3); ``"fixed"`` computes P on all cells (in chunks) without gradient every
    ``cfg.target_update_interval`` steps (standard DEC). The cluster frequencies
    ``f_j = Σ_i q_ij`` of the live target are summed over the whole global batch.
    """
    source = _check_source(source)
    w = cfg.finetune_weights
    module.train()
    opt = make_optimizer(cfg.finetune_optimizer, module.parameters(), cfg.finetune_lr,
                         cfg.rho)
    state: dict[str, torch.Tensor] = {}

    def step(idx, global_step):
        local = group.split(idx)
        xb_rna, xb_other = source.rows(local)
        out = module(xb_rna, xb_other)
        q = dec_soft_assignment(out["z"], module.centers, cfg.alpha)
        if cfg.dec_target == "live":
            p = dec_target_distribution(q, group.all_sum)
        else:
            if global_step % cfg.target_update_interval == 0:
                with torch.no_grad():
                    q_all = dec_soft_assignment(embed(module, source, group=group), module.centers, cfg.alpha)
                    state["p"] = dec_target_distribution(q_all)
            p = state["p"][local]
        t = _terms(module, out, xb_rna, xb_other, cfg.lamb, group)
        t["kl"] = dec_kl_loss(p, q)
        _rescale_means(t, ("rec_rna", "rec_other", "kl"), group.mean_weight(len(local), len(idx)))
        t["loss"] = (w["rec_rna"] * t["rec_rna"] + w["rec_other"] * t["rec_other"]
                     + w["kl"] * t["kl"] + w["cl"] * t["cl"])
        return t

    return _run_epochs("finetune", cfg.finetune_epochs, group.wrap(module, step), opt, source.n_obs,
                       cfg, generator, progress, group, run=run, module=module, extra=state)


KMEANS_MAX_CELLS = 100_000
"""Above this many cells the DEC centroids are initialised by KMeans on a seeded sample."""


def kmeans_centers(z: np.ndarray, n_clusters: int, seed: int, n_init: int = 20,
                   max_cells: int | None = KMEANS_MAX_CELLS) -> np.ndarray:
    """Centroids of KMeans (``n_init`` restarts) on ``z``, or on a seeded sample of ``max_cells``
    rows when ``z`` is larger (None: always all rows)."""
    from sklearn.cluster import KMeans

    rows = subsample_rows(z.shape[0], max_cells, seed)
    z = z if rows is None else z[rows]
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


@dataclass
class _Job:
    """What a worker needs: the initial module, the data, the settings."""

    module: ScMDCFModule
    source: PairedBatches
    cfg: ScMDCFParams
    n_clusters: int | None
    seed: int
    progress: bool


def fit_distributed(module: ScMDCFModule, source: PairedBatches, cfg: ScMDCFParams, n_clusters: int | None,
                    seed: int, progress: bool = True, *, world_size: int, backend: str = "gloo",
                    init_method: str | None = None, threads_per_process: int = 1) -> dict[str, Any]:
    """:func:`fit_module` data-parallel on ``world_size`` processes (same result up to float
    rounding); the trained weights are loaded into ``module``.

    Every process draws the same batch permutation from the shared seed and trains on its
    contiguous slice of each global batch (near-equal slices). The processes exchange exactly what
    the single-process step computes from the whole global batch: the contrastive joint
    distribution and the live DEC target's cluster frequencies are all-reduced (autograd-aware);
    the fixed target is computed from all cells, each process embedding a share; every BatchNorm
    uses the global batch's statistics; per-cell means are weighted ``W · n_r / N`` so that the
    gradients DDP averages are those of the global-batch loss; K estimation and the KMeans
    initialisation run on rank 0 and are broadcast.

    Checkpoints and resuming are supported in single-process training only (:func:`fit_module`
    with a :class:`RunState`); :meth:`cellbridge.scMDCF.train` refuses ``checkpoint_dir`` /
    ``resume`` with ``world_size > 1`` or under ``torchrun``. A non-finite loss stops every
    process with :class:`~cellbridge._errors.TrainingDivergedError` (the averaged losses are checked).

    Parameters
    ----------
    world_size
        Number of processes (under ``torchrun``: ``WORLD_SIZE``); every global batch must have at
        least ``world_size`` cells.
    backend, init_method, threads_per_process
        As for :func:`cellbridge.models.distributed.launch`.
    """
    _check_batches_cover_ranks(source.n_obs, cfg.batch_size, world_size)
    job = _Job(copy.deepcopy(module).cpu(), source.to(torch.device("cpu")), cfg, n_clusters, seed, progress)
    result = launch(_train_rank, job, world_size=world_size, backend=backend, init_method=init_method,
                    threads_per_process=threads_per_process)
    device = module.centers.device
    module.centers = nn.Parameter(torch.empty_like(result["state"]["centers"]))
    module.load_state_dict(result["state"])
    module.to(device)
    return result


def _check_batches_cover_ranks(n_cells: int, batch_size: int | None, world_size: int) -> None:
    """Every process must get at least one cell of every global batch."""
    smallest = n_cells if batch_size is None or batch_size >= n_cells else n_cells // math.ceil(n_cells / batch_size)
    if smallest < world_size:
        raise CellBridgeInputError(
            f"the smallest global batch has {smallest} cells, fewer than world_size={world_size} "
            "processes; use a larger batch_size or fewer processes."
        )


def _train_rank(job: _Job, device: torch.device) -> dict:
    """One process's training inside an initialised process group (rank 0's result is kept)."""
    module = sync_batchnorm(copy.deepcopy(job.module).to(device), device)
    group = DataParallelGroup(device)
    result = fit_module(module, job.source.to(device), job.cfg, job.n_clusters, job.seed,
                        job.progress and group.rank == 0, group)
    return {**result, "state": cpu_state(module)}
