"""Data-parallel scMDCF training with ``torch.distributed`` (DistributedDataParallel).

Every process draws the same batch permutation from the shared seed and trains on its contiguous
slice of each global batch (near-equal slices; the global batch need not divide evenly). The
processes exchange exactly what the single-process step computes from the whole global batch:

- the contrastive joint distribution ``Σ_n a_nᵀ r_n`` is all-reduced (autograd-aware) before it
  is symmetrised and normalised, so every process computes the global-batch loss;
- the live DEC target's cluster frequencies ``f_j = Σ_i q_ij`` are all-reduced likewise; the
  fixed target is computed from all cells, each process embedding a share;
- every BatchNorm uses the global batch's statistics (``nn.SyncBatchNorm`` on GPUs, the CPU
  all-reduce BatchNorm of :mod:`cellbridge.models.distributed`);
- per-cell means (reconstruction, KL) are weighted ``W · n_r / N`` so that the gradients DDP
  averages are those of the global-batch loss; epoch losses are averaged over processes;
- K estimation (Leiden) and the KMeans initialisation run on rank 0 and are broadcast.

The collectives, the CPU BatchNorm and the process launcher are those of BiCLUM's data-parallel
training (:mod:`cellbridge.models.distributed`).
"""

from __future__ import annotations

import copy
import gc
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._errors import CellBridgeInputError
from . import scmdcf_module as M
from ._scmdcf_data import PairedBatches
from .distributed import (
    StepModule,
    all_reduce_sum,
    cpu_state,
    launch,
    mean_over_ranks,
    sync_batchnorm,
)

if TYPE_CHECKING:
    from .scmdcf import scMDCF


class DataParallelGroup(M.LocalGroup):
    """:class:`~cellbridge.models.scmdcf_module.LocalGroup` of one process of an initialised
    ``torch.distributed`` group (see the module docstring for what each method exchanges)."""

    def __init__(self, device: torch.device):
        self.rank, self.world_size, self.device = dist.get_rank(), dist.get_world_size(), device

    def split(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.tensor_split(idx, self.world_size)[self.rank]

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(x)

    def mean_weight(self, n_local: int, n_global: int) -> float:
        return self.world_size * n_local / n_global

    def share(self, n: int) -> tuple[int, int]:
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def assemble(self, part: torch.Tensor, start: int, n: int) -> torch.Tensor:
        full = part.new_zeros(n, *part.shape[1:])
        full[start:start + part.shape[0]] = part
        dist.all_reduce(full)
        return full

    def average(self, values: dict[str, float]) -> dict[str, float]:
        return mean_over_ranks(values, self.device)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        dist.broadcast(x, src=0)
        return x

    def wrap(self, module: nn.Module, step):
        # One DDP per phase (init_centers replaces the centroid parameter between phases); the
        # previous one must be gone first, or its gradient hooks would fire in the next phase.
        self._ddp = None
        gc.collect()
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(StepModule(module, step), device_ids=device_ids)
        return self._ddp


@dataclass
class _Job:
    """What a worker needs: the initial module, the data, the settings."""

    module: M.ScMDCFModule
    source: PairedBatches
    cfg: dict[str, Any]
    n_clusters: int | None
    seed: int
    progress: bool


def train_distributed(
    model: scMDCF,
    *,
    world_size: int | None = None,
    pretrain_epochs: int | None = None,
    finetune_epochs: int | None = None,
    progress: bool = True,
    backend: str = "gloo",
    init_method: str | None = None,
    threads_per_process: int = 1,
) -> list[dict[str, float]]:
    """Train ``model`` data-parallel on ``world_size`` processes (same result as ``model.train()``
    up to float rounding); the trained weights are loaded into ``model.modules_`` (one
    data-parallel run per ensemble member).

    Parameters
    ----------
    model
        An untrained or trained :class:`~cellbridge.scMDCF` (training restarts from its current
        weights, as :meth:`scMDCF.train` does).
    world_size
        Number of processes; under ``torchrun`` read from ``WORLD_SIZE`` (a given value must
        agree). Every global batch must have at least ``world_size`` cells.
    pretrain_epochs, finetune_epochs, progress
        As for :meth:`scMDCF.train`.
    backend, init_method, threads_per_process
        As for :func:`cellbridge.models.distributed.train_distributed`.

    Returns
    -------
    The per-epoch history (loss terms averaged over processes), also in ``model.history_``.

    Examples
    --------
    ``model.train(world_size=2)`` spawns two local processes. Under ``torchrun
    --nproc_per_node=N script.py`` every process builds the model and calls
    ``train_distributed(model)``.
    """
    from .distributed import _resolve_world_size

    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world_size = _resolve_world_size(world_size, torchrun)
    cfg = model.train_settings(pretrain_epochs, finetune_epochs)
    _check_split(model.rna.n_obs, cfg["batch_size"], world_size)
    source = model._source().to(torch.device("cpu"))

    def fit(module: M.ScMDCFModule, seed: int, n_clusters: int | None) -> dict:
        job = _Job(copy.deepcopy(module).cpu(), source, cfg, n_clusters, seed, progress)
        result = launch(_train_rank, job, world_size=world_size, backend=backend,
                        init_method=init_method, threads_per_process=threads_per_process)
        module.centers = nn.Parameter(torch.empty_like(result["state"]["centers"]))
        module.load_state_dict(result["state"])
        module.to(model.device)
        return result

    model.fit_members(cfg, fit)
    model._train_cfg.update(world_size=world_size)
    return model.history_


def _check_split(n_cells: int, batch_size: int | None, world_size: int) -> None:
    """Every process must get at least one cell of every global batch."""
    smallest = n_cells if batch_size is None or batch_size >= n_cells else n_cells // math.ceil(n_cells / batch_size)
    if smallest < world_size:
        raise CellBridgeInputError(
            f"the smallest global batch has {smallest} cells, fewer than world_size={world_size} "
            "processes; use a larger batch_size or fewer processes."
        )


def _train_rank(job: _Job, device: torch.device) -> dict:
    """One process's training inside an initialised process group (rank 0's result is kept)."""
    from .scmdcf import fit_module

    module = sync_batchnorm(copy.deepcopy(job.module).to(device), device)
    group = DataParallelGroup(device)
    result = fit_module(module, job.source.to(device), job.cfg, job.n_clusters, job.seed,
                        job.progress and group.rank == 0, group)
    return {**result, "state": cpu_state(module)}
