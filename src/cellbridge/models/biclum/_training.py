"""BiCLUM training (METHODS §1.5-1.6): cell-level and feature-level contrast + reconstruction,
in one process or data-parallel.

The loop is written once against the group strategy of :mod:`cellbridge.models.distributed`.
Data-parallel: one global batch of ``batch_size`` anchors is split into ``world_size`` equal
slices, one per process. Every process draws the same anchor permutation, MNN partners and
feature batches from the shared seed, so the processes only exchange what the single-process
step computes from the whole batch: cell embeddings are gathered (autograd-aware) so NT-Xent
sees the whole global batch; cell-encoder BatchNorm statistics are those of the global batch;
DDP averages the gradients; the epoch losses are averaged, so early stopping stops all processes
together.

Gradient equivalence: DDP averages gradients over the ``W`` processes, so the per-process losses
``L_r`` must satisfy ``Σ_r L_r = W · L`` (``L`` = single-process loss of the global batch;
gradients reaching a process through the collectives count towards ``Σ_r``):

- L_rec: each process takes the mean over its ``B/W`` rows; the mean of these equal-sized means
  is the global mean, so ``Σ_r L_rec,r = W · L_rec`` (weight 1).
- L_cell: every process computes the same NT-Xent over the gathered global batch, so
  ``Σ_r L_cell,r = W · L_cell`` (weight 1); the gather's backward sums the ``W`` identical
  gradient contributions for each block of rows and DDP divides by ``W``.
- L_feat: the feature batch is drawn with the shared generator and is identical on all
  processes, so the term is replicated and needs weight 1 as well.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..._errors import CellBridgeInputError
from ..distributed import LOCAL, DataParallelGroup, LocalGroup, cpu_state, launch, sync_batchnorm
from ..losses import nt_xent
from ..training import (
    Checkpoint,
    EarlyStopping,
    autocast,
    check_finite_loss,
    fingerprint,
    rng_state,
    set_rng_state,
    set_seed,
)
from ._data import PartnerSampler
from ._module import OTHER, RNA, BiCLUMModule
from ._presets import BiCLUMParams

logger = logging.getLogger("cellbridge")

DENSE_LIMIT = 50_000_000  # cells x features kept dense on the device below this many values


@dataclass
class TrainConfig:
    tau_cell: float
    tau_feature: float
    alpha: float
    beta: float
    gamma: tuple[float, float]
    similarity: str
    feature_mode: str  # "exact": all features every step (reference); "sampled": a batch per step
    feature_batch: int
    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    max_time: float | None
    seed: int
    precision: str = "32"  # "32" or "bf16-mixed" (autocast to bfloat16)


class RowSource:
    """Target rows (``"counts"`` or ``"scaled"``) of one modality as dense tensors.

    Small data live densely on the device; above ``DENSE_LIMIT`` values, rows are gathered from
    the sparse matrices per batch so memory does not grow with the dataset.
    """

    def __init__(self, data, kind: str, device: torch.device):
        self.data, self.kind, self.device = data, kind, device
        self._dense = None
        if data.counts.shape[0] * data.counts.shape[1] <= DENSE_LIMIT:
            values = data.values(kind)
            values = values.toarray() if sp.issparse(values) else values
            self._dense = torch.as_tensor(values, dtype=torch.float32, device=device)

    def rows(self, idx: np.ndarray, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``idx``, restricted to ``columns`` (feature indices on the device) when given."""
        if self._dense is not None:
            out = self._dense.index_select(0, torch.as_tensor(idx, device=self.device))
        else:
            values = self.data.values(self.kind, np.asarray(idx))
            values = values.toarray() if sp.issparse(values) else values
            out = torch.as_tensor(values, dtype=torch.float32, device=self.device)
        return out if columns is None else out.index_select(1, columns)


@dataclass
class TrainTensors:
    """Device-side training data; index 0 = other modality, 1 = RNA."""

    cells: list[torch.Tensor]  # PCA inputs of the cell encoders
    targets: list[RowSource]  # reconstruction targets
    profiles: list[torch.Tensor]  # feature-encoder inputs (features x profile width)
    feature_pairs: torch.Tensor  # (n_pairs, 2)


@dataclass
class TrainInputs:
    """Host-side training data (numpy / scipy, picklable for worker processes)."""

    modalities: tuple  # (other, rna) ModalityData
    target: str  # "counts" or "scaled"
    profiles: list[np.ndarray]
    feature_pairs: np.ndarray
    cell_pairs: np.ndarray

    def to_device(self, device: torch.device) -> TrainTensors:
        return TrainTensors(
            cells=[torch.as_tensor(m.pca, device=device) for m in self.modalities],
            targets=[RowSource(m, self.target, device) for m in self.modalities],
            profiles=[torch.as_tensor(p, device=device) for p in self.profiles],
            feature_pairs=torch.as_tensor(self.feature_pairs, device=device),
        )

    def sampler(self) -> PartnerSampler:
        return PartnerSampler(self.cell_pairs, self.modalities[OTHER].n_cells, self.modalities[RNA].n_cells)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this training data in a checkpoint (sizes and hashes of the pairs and inputs)."""
        return {"target": self.target, "cells": [m.pca.shape for m in self.modalities],
                "profiles": [p.shape for p in self.profiles],
                "hash": fingerprint(self.cell_pairs, self.feature_pairs, *(m.pca for m in self.modalities),
                                    *self.profiles)}


def checkpoint_run(config: TrainConfig, inputs: TrainInputs, module: BiCLUMModule) -> dict[str, Any]:
    """The description of a run that a checkpoint must match to be resumed (see
    :class:`~cellbridge.models.training.Checkpoint`)."""
    shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
    return {**dataclasses.asdict(config), "data": inputs.fingerprint(), "module": shapes}


def _diverged_hints(cfg: TrainConfig) -> str:
    return (f"tau_cell={cfg.tau_cell} / tau_feature={cfg.tau_feature} too small (the contrastive logits "
            f"overflow; the reference uses 0.5 for ATAC, 100/50 for protein), lr={cfg.lr} too large (try 10x "
            f"smaller), alpha={cfg.alpha:g} / beta={cfg.beta:g} very large, or precision={cfg.precision!r} "
            "(try '32')")


def make_config(params: BiCLUMParams, *, max_time: float | None, seed: int) -> TrainConfig:
    """The training configuration from resolved model parameters."""
    keys = ("tau_cell", "tau_feature", "alpha", "beta", "similarity", "feature_mode", "feature_batch",
            "lr", "weight_decay", "batch_size", "max_epochs", "patience", "precision")
    return TrainConfig(**{k: getattr(params, k) for k in keys}, gamma=tuple(params.gamma), max_time=max_time,
                       seed=seed)


History = list[dict[str, Any]]


class BiCLUMTrainer:
    """Runs the optimisation of a :class:`BiCLUMModule` in one process, or in one process of a
    data-parallel ``group`` (created after ``torch.distributed.init_process_group``; ``module``
    is then this process's private copy, its cell-encoder BatchNorm layers synchronised in place).
    """

    def __init__(self, module: BiCLUMModule, data: TrainTensors, sampler: PartnerSampler, config: TrainConfig,
                 group: LocalGroup = LOCAL):
        self.module, self.data, self.sampler, self.cfg, self.group = module, data, sampler, config, group
        self.rng = np.random.default_rng(config.seed)
        self.device = data.cells[0].device
        self.history: History = []
        if group.world_size > 1:
            check_split(len(sampler), config.batch_size, group.world_size)
            # Only the cell encoders see a split batch; feature batches are replicated, so their
            # local BatchNorm statistics already are the global ones.
            module.cell_encoders = sync_batchnorm(module.cell_encoders, self.device)
        self._run_step = group.wrap(module, self._step)

    def fit(self, progress: bool = True, checkpoint: Checkpoint | None = None, resume: bool = False
            ) -> tuple[History, dict[str, Any]]:
        """Train; returns the per-epoch history rows and a summary (best epoch, seconds...).

        With a ``checkpoint`` (single process only) the state is saved as it describes; with
        ``resume`` training continues from its state, to the same result as an uninterrupted run.
        """
        cfg, group = self.cfg, self.group
        # foreach: the multi-tensor update of all parameters (bit-identical to the per-tensor loop on CPU)
        opt = torch.optim.Adam(self.module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        stopper = EarlyStopping(patience=cfg.patience)
        first, elapsed = 0, 0.0
        if checkpoint is not None and resume:
            meta, tensors = checkpoint.load()
            if meta["finished"]:
                self.module.load_state_dict(tensors["module"])
                self.history = meta["history"]
                return self.history, meta["summary"]
            first, elapsed = self._restore(meta, tensors, opt, stopper)
            logger.info("BiCLUM: resuming from %s after epoch %d", checkpoint.path, first)
        elif checkpoint is not None:
            checkpoint.check_fresh()
        start = time.perf_counter() - elapsed
        bar = tqdm(range(first, cfg.max_epochs), desc="BiCLUM", disable=not progress or group.rank != 0,
                   initial=first, total=cfg.max_epochs)
        with checkpoint.interruptible() if checkpoint is not None else contextlib.nullcontext():
            for epoch in bar:
                terms = group.average(self._epoch(opt))
                self.history.append({"phase": "train", "epoch": epoch, **terms})
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
                check_finite_loss(terms, model="BiCLUM", epoch=epoch, hints=_diverged_hints(cfg))
                if stopper.step(terms["loss"], epoch, self.module):
                    logger.info("early stopping at epoch %d (best %d)", epoch, stopper.best_epoch)
                    break
                if group.any(self._time_is_up(start)):  # one slow process stops everyone
                    logger.info("time limit of %.0f s reached after %d epochs", cfg.max_time, epoch + 1)
                    break
                if checkpoint is not None and (checkpoint.stop_requested or checkpoint.due()):
                    checkpoint.save(*self._state(epoch, opt, stopper, time.perf_counter() - start))
                    if checkpoint.stop_requested:
                        raise checkpoint.interrupted(f"epoch {epoch + 1} of {cfg.max_epochs}")
        stopper.restore(self.module)  # D3: the reference kept the last epoch's weights
        summary = {"epochs": len(self.history), "best_epoch": stopper.best_epoch,
                   "seconds": time.perf_counter() - start, "world_size": group.world_size}
        if group.world_size > 1:
            summary.update(local_batch_size=cfg.batch_size // group.world_size,
                           epochs_per_rank=group.gather_object(len(self.history)))
        if checkpoint is not None:
            checkpoint.save({"history": self.history, "summary": summary}, {"module": self.module.state_dict()},
                            finished=True)
        return self.history, summary

    def _state(self, epoch: int, opt, stopper: EarlyStopping, seconds: float) -> tuple[dict, dict]:
        """``(meta, tensors)`` of the state after ``epoch``: everything the next epoch depends on."""
        meta = {"epoch": epoch, "seconds": seconds, "history": self.history,
                "sampler_rng": self.rng.bit_generator.state}
        tensors = {"module": self.module.state_dict(), "optimizer": opt.state_dict(),
                   "stopper": stopper.state_dict(), "rng": rng_state()}
        return meta, tensors

    def _restore(self, meta: dict, tensors: dict, opt, stopper: EarlyStopping) -> tuple[int, float]:
        """Load a saved state; returns the first epoch still to run and the seconds already spent."""
        self.module.load_state_dict(tensors["module"])
        opt.load_state_dict(tensors["optimizer"])
        stopper.load_state_dict(tensors["stopper"])
        self.history = list(meta["history"])
        self.rng.bit_generator.state = meta["sampler_rng"]
        set_rng_state(tensors["rng"])
        return int(meta["epoch"]) + 1, float(meta["seconds"])

    def _epoch(self, opt) -> dict[str, float]:
        self.module.train()
        other_idx, rna_idx, flag = self.sampler.draw(self.rng)
        order = self.rng.permutation(len(flag))
        n_batches = max(len(order) // self.cfg.batch_size, 1)
        sums = dict.fromkeys(("loss", "rec", "cell", "feature"), 0.0)
        for b in range(n_batches):
            batch = order[b * self.cfg.batch_size : (b + 1) * self.cfg.batch_size]
            if self.group.world_size > 1:  # this process's slice of the global batch
                batch = self.group.split(torch.as_tensor(batch)).numpy()
            with autocast(self.device, self.cfg.precision):
                terms = self._run_step(other_idx[batch], rna_idx[batch], flag[batch])
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            for key in sums:
                sums[key] += float(terms[key].detach())
        return {k: v / n_batches for k, v in sums.items()}

    def _step(self, other_cells, rna_cells, has_partner) -> dict[str, torch.Tensor]:
        cfg, m = self.cfg, self.module
        cells = (other_cells, rna_cells)
        # index_select: the same rows as indexing, several times faster on CPU
        z = [m.encode_cells(self.data.cells[k].index_select(0, torch.as_tensor(cells[k], device=self.device)), k)
             for k in (OTHER, RNA)]
        v, decoded, loss_feature = self._features()
        rec = z[0].new_zeros(())
        for k in (OTHER, RNA):
            target = self.data.targets[k].rows(cells[k], decoded[k])
            rec = rec + cfg.gamma[k] * F.mse_loss(m.decode(z[k], v[k], k, decoded[k]), target)
        loss_cell = self._cell_loss(z, has_partner)
        loss = rec + cfg.alpha * loss_cell + cfg.beta * loss_feature
        return {"loss": loss, "rec": rec.detach(), "cell": loss_cell.detach(), "feature": loss_feature.detach()}

    def _cell_loss(self, z: list[torch.Tensor], has_partner: np.ndarray) -> torch.Tensor:
        """L_cell: NT-Xent over the (global) batch's anchors that have an MNN partner."""
        mask = torch.as_tensor(has_partner, device=self.device)
        if self.group.world_size > 1:
            z = [self.group.gather(t) for t in z]
            mask = self.group.gather(mask.to(torch.uint8)).bool()
        if not mask.any():  # D4: no MNN pair in the batch; the reference produced NaN here
            return z[0].new_zeros(())
        return nt_xent(z[0][mask], z[1][mask], self.cfg.tau_cell, self.cfg.similarity)

    def _time_is_up(self, start: float) -> bool:
        """True once ``max_time`` seconds have passed since ``start``."""
        return self.cfg.max_time is not None and time.perf_counter() - start > self.cfg.max_time

    def _features(self):
        """Feature embeddings used in this step, the decoded feature subsets, and L_feat."""
        if self.cfg.feature_mode == "exact":
            return self._all_features()
        return self._sampled_features()

    def _all_features(self):
        """Reference: every feature re-encoded, L_feat averaged over shuffled pair batches."""
        m, cfg, pairs = self.module, self.cfg, self.data.feature_pairs
        v = [_encode_in_chunks(m, self.data.profiles[k], k, cfg.feature_batch, self.rng) for k in (OTHER, RNA)]
        order = torch.as_tensor(self.rng.permutation(len(pairs)), device=self.device)
        losses = [
            nt_xent(v[0][pairs[c, 0]], v[1][pairs[c, 1]], cfg.tau_feature, cfg.similarity)
            for c in order.split(cfg.feature_batch)
        ]
        return v, (None, None), torch.stack(losses).mean()

    def _sampled_features(self):
        """Fast mode: one batch of feature pairs plus a batch of decoded features per modality."""
        m, cfg, pairs = self.module, self.cfg, self.data.feature_pairs
        chosen = pairs[torch.as_tensor(self._sample(len(pairs)), device=self.device)]
        decoded, v = [], []
        for k in (OTHER, RNA):
            n_features = self.data.profiles[k].shape[0]
            feats = torch.unique(torch.cat([chosen[:, k], torch.as_tensor(self._sample(n_features), device=self.device)]))
            decoded.append(feats)
            v.append(m.encode_features(self.data.profiles[k].index_select(0, feats), k))
        pos = [torch.searchsorted(decoded[k], chosen[:, k].contiguous()) for k in (OTHER, RNA)]
        loss_feature = nt_xent(v[0][pos[0]], v[1][pos[1]], cfg.tau_feature, cfg.similarity)
        return v, decoded, loss_feature

    def _sample(self, n: int) -> np.ndarray:
        size = min(self.cfg.feature_batch, n)
        return np.sort(self.rng.choice(n, size=size, replace=False))


def _encode_in_chunks(module, profiles, k, chunk, rng) -> torch.Tensor:
    """Encode all features in shuffled chunks of about ``chunk`` rows (never a 1-row BatchNorm batch)."""
    n = profiles.shape[0]
    order = rng.permutation(n)
    parts = np.array_split(order, max(int(np.ceil(n / chunk)), 1))
    out = torch.cat([module.encode_features(profiles.index_select(0, torch.as_tensor(p, device=profiles.device)), k)
                     for p in parts])
    return out[torch.as_tensor(np.argsort(np.concatenate(parts)), device=profiles.device)]


def check_split(n_anchors: int, batch_size: int, world_size: int) -> None:
    """A data-parallel run splits every global batch evenly and needs at least one full batch."""
    if batch_size % world_size:
        raise CellBridgeInputError(
            f"batch_size={batch_size} must be a multiple of world_size={world_size}: the global batch is split evenly."
        )
    if n_anchors < batch_size:
        raise CellBridgeInputError(
            f"distributed training needs at least one full batch: {n_anchors} anchors < batch_size={batch_size}."
        )


def fit(module: BiCLUMModule, inputs: TrainInputs, config: TrainConfig, progress: bool = True, *,
        checkpoint: Checkpoint | None = None, resume: bool = False) -> tuple[History, dict[str, Any]]:
    """Train ``module`` in this process (best weights restored); with a ``checkpoint``, saving and
    resuming as :meth:`BiCLUMTrainer.fit` describes."""
    set_seed(config.seed)
    device = next(module.parameters()).device
    trainer = BiCLUMTrainer(module, inputs.to_device(device), inputs.sampler(), config)
    return trainer.fit(progress=progress, checkpoint=checkpoint, resume=resume)


@dataclass
class _Job:
    """What a worker needs to train: numpy data, the initial module and the configuration."""

    module: BiCLUMModule
    config: TrainConfig
    inputs: TrainInputs
    progress: bool


def fit_distributed(module: BiCLUMModule, inputs: TrainInputs, config: TrainConfig, progress: bool = True, *,
                    world_size: int, backend: str = "gloo", init_method: str | None = None,
                    threads_per_process: int = 1) -> tuple[History, dict[str, Any]]:
    """:func:`fit` data-parallel on ``world_size`` processes (the same optimisation up to float
    rounding, with dropout off: dropout masks are drawn per process); the trained weights are
    loaded into ``module``.

    Checkpoints and resuming are supported in single-process training only (:func:`fit`);
    :meth:`cellbridge.BiCLUM.train` refuses ``checkpoint_dir`` / ``resume`` with ``world_size > 1``
    or under ``torchrun``. A non-finite loss stops every process with
    :class:`~cellbridge._errors.TrainingDivergedError`: the losses checked are the averaged ones,
    identical on all processes.

    Parameters
    ----------
    world_size
        Number of processes (under ``torchrun``: its ``WORLD_SIZE``).
    backend
        ``"gloo"`` (CPU) or ``"nccl"`` (one CUDA device per process, ``cuda:LOCAL_RANK``).
    init_method
        Rendezvous URL for ``init_process_group``, e.g. ``"file:///tmp/pg"``; default a free
        local TCP port when spawning, ``"env://"`` under ``torchrun``.
    threads_per_process
        ``torch.set_num_threads`` in each spawned process.
    """
    check_split(len(inputs.sampler()), config.batch_size, world_size)
    job = _Job(copy.deepcopy(module).cpu(), config, inputs, progress)
    result = launch(_train_rank, job, world_size=world_size, backend=backend, init_method=init_method,
                    threads_per_process=threads_per_process)
    module.load_state_dict(result["state"])
    return result["history"], result["summary"]


def _train_rank(job: _Job, device: torch.device) -> dict:
    """Train this process's copy of the module inside an initialised process group."""
    import torch.distributed as dist

    set_seed(job.config.seed + dist.get_rank())  # torch RNG (dropout) only; anchors use the shared seed
    # A private copy: tensors handed over by torch.multiprocessing live in memory shared by all workers.
    module = copy.deepcopy(job.module).to(device)
    trainer = BiCLUMTrainer(module, job.inputs.to_device(device), job.inputs.sampler(), job.config,
                            DataParallelGroup(device))
    history, summary = trainer.fit(progress=job.progress)
    return {"history": history, "summary": summary, "state": cpu_state(module)}
