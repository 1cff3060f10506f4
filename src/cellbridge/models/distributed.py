"""Data-parallel BiCLUM training with ``torch.distributed`` (DistributedDataParallel).

One global batch of ``batch_size`` anchors is split into ``world_size`` equal slices, one per
process. Every process draws the same anchor permutation, MNN partners and feature batches from
the shared seed, so the processes only exchange what the single-process step would have computed
from the whole batch:

- cell embeddings are gathered (autograd-aware) so NT-Xent sees the whole global batch;
- cell-encoder BatchNorm statistics are those of the global batch (``nn.SyncBatchNorm`` on GPUs,
  an all-reduce BatchNorm on CPU, where ``SyncBatchNorm`` does not run);
- DDP averages the gradients; the per-process losses are chosen so that this average is the
  gradient of the single-process global-batch loss (see :class:`DistributedBiCLUMTrainer`);
- the epoch losses are averaged over processes, so early stopping stops all of them together.

Launch with :func:`train_distributed` (spawns local processes) or run a script that calls it under
``torchrun --nproc_per_node=N script.py``.

The collectives, :func:`sync_batchnorm`, :class:`StepModule`, :func:`mean_over_ranks` and the
launcher :func:`launch` are model-agnostic and also used by
:mod:`cellbridge.models.scmdcf_distributed`.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._errors import CellBridgeInputError
from ..pairs import PartnerSampler
from ._biclum_module import BiCLUMModule
from ._biclum_train import BiCLUMTrainer, TrainConfig, TrainInputs, TrainTensors
from .training import set_seed

if TYPE_CHECKING:
    from .biclum import BiCLUM

logger = logging.getLogger("cellbridge")

History = dict[str, list[float]]


# ---------------------------------------------------------------------------------------------
# Autograd-aware collectives
# ---------------------------------------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """``y = Σ_ranks x``; the gradient of each rank's ``x`` is the sum of all ranks' ``dy``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class _GatherRows(torch.autograd.Function):
    """Concatenate equal-shaped row blocks of all ranks (rank order); gradients flow back.

    Same semantics as ``torch.distributed.nn.functional.all_gather`` (deprecated since torch
    2.x in favour of a private module): each rank's block receives the sum over ranks of the
    gradients of its rows. The backward all-reduces the whole gradient and keeps this rank's
    rows, which every backend (gloo included) supports.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        blocks = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(blocks, x)
        ctx.rows = x.shape[0]
        return torch.cat(blocks)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` from every rank, concatenated in rank order (autograd-aware)."""
    return _GatherRows.apply(x)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """``Σ_ranks x`` on every rank (autograd-aware: each rank's ``x`` gets the summed gradient)."""
    return _AllReduceSum.apply(x)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean over ranks of per-rank numbers (e.g. epoch losses), identical on every rank."""
    buf = torch.tensor([values[k] for k in values], dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    return dict(zip(values, (buf / dist.get_world_size()).tolist()))


class AllReduceBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the batch summed over all ranks.

    A CPU stand-in for :class:`torch.nn.SyncBatchNorm`, which only runs on accelerators. Mean
    and (biased) variance are computed in two passes from all-reduced sums; the running
    variance uses the unbiased global variance, as :func:`torch.nn.functional.batch_norm` does.
    Outside training, or without a process group, it is a plain ``BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.tensor([float(x.shape[0])], device=x.device, dtype=x.dtype)
        dist.all_reduce(count)
        n = float(count.item())
        mean = _AllReduceSum.apply(x.sum(0)) / n
        var = _AllReduceSum.apply(((x - mean) ** 2).sum(0)) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        return x_hat * self.weight + self.bias if self.affine else x_hat

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * var * n / max(n - 1, 1.0))


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make ``module``'s BatchNorm layers use global-batch statistics on ``device``."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            new = AllReduceBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(device))
        else:
            sync_batchnorm(child, device)
    return module


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


def local_slice(n: int, rank: int, world_size: int) -> slice:
    """Rows of a global batch of ``n`` anchors that ``rank`` trains on (contiguous, equal sizes)."""
    if n % world_size:
        raise CellBridgeInputError(f"a batch of {n} anchors cannot be split evenly over {world_size} processes.")
    size = n // world_size
    return slice(rank * size, (rank + 1) * size)


class StepModule(nn.Module):
    """Gives DDP a ``forward``: one training step's loss terms computed with ``module``.

    DDP's gradient hooks need the step (forward and losses) to run inside its ``forward``;
    ``module``'s parameters are this wrapper's parameters.
    """

    def __init__(self, module: nn.Module, step: Callable[..., dict[str, torch.Tensor]]):
        super().__init__()
        self.module = module
        self._step_fn = step

    def forward(self, *args):
        return self._step_fn(*args)


class DistributedBiCLUMTrainer(BiCLUMTrainer):
    """:class:`BiCLUMTrainer` for one process of a data-parallel group.

    Must be created after ``torch.distributed.init_process_group``. ``module`` should be this
    process's private copy; its cell-encoder BatchNorm layers are synchronised in place.

    Gradient equivalence: DDP averages gradients over the ``W`` processes, so the per-process
    losses ``L_r`` must satisfy ``Σ_r L_r = W · L`` (``L`` = single-process loss of the global
    batch; gradients reaching a process through the collectives count towards ``Σ_r``):

    - L_rec: each process takes the mean over its ``B/W`` rows; the mean of these equal-sized
      means is the global mean, so ``Σ_r L_rec,r = W · L_rec`` (weight 1).
    - L_cell: every process computes the same NT-Xent over the gathered global batch, so
      ``Σ_r L_cell,r = W · L_cell`` (weight 1); the gather's backward sums the ``W`` identical
      gradient contributions for each block of rows and DDP divides by ``W``.
    - L_feat: the feature batch is drawn with the shared generator and is identical on all
      processes, so the term is replicated and needs weight 1 as well.
    """

    def __init__(self, module: BiCLUMModule, data: TrainTensors, sampler: PartnerSampler, config: TrainConfig):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        _check_split(len(sampler), config.batch_size, self.world_size)
        device = data.cells[0].device
        # Only the cell encoders see a split batch; feature batches are replicated, so their
        # local BatchNorm statistics already are the global ones.
        module.cell_encoders = sync_batchnorm(module.cell_encoders, device)
        super().__init__(module, data, sampler, config)
        wrapper = StepModule(module, super()._step)
        self.ddp = DistributedDataParallel(wrapper, device_ids=[device.index] if device.type == "cuda" else None)

    def fit(self, progress: bool = True) -> History:
        history = super().fit(progress=progress and self.rank == 0)
        epochs = [None] * self.world_size
        dist.all_gather_object(epochs, len(history["loss"]))
        history.update(world_size=[self.world_size], local_batch_size=[self.cfg.batch_size // self.world_size],
                       epochs_per_rank=epochs)
        return history

    def _epoch(self, opt) -> dict[str, float]:
        return self._mean_over_ranks(super()._epoch(opt))

    def _step(self, other_cells, rna_cells, has_partner) -> dict[str, torch.Tensor]:
        part = local_slice(len(has_partner), self.rank, self.world_size)
        return self.ddp(other_cells[part], rna_cells[part], has_partner[part])

    def _cell_loss(self, z: list[torch.Tensor], has_partner: np.ndarray) -> torch.Tensor:
        mask = torch.as_tensor(has_partner, device=self.device).to(torch.uint8)
        masks = [torch.empty_like(mask) for _ in range(self.world_size)]
        dist.all_gather(masks, mask)
        return super()._cell_loss([gather_rows(t) for t in z], torch.cat(masks).bool())

    def _time_is_up(self, start: float) -> bool:
        if self.cfg.max_time is None:
            return False
        flag = torch.tensor([float(super()._time_is_up(start))], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # one slow process stops everyone
        return bool(flag.item())

    def _mean_over_ranks(self, terms: dict[str, float]) -> dict[str, float]:
        return mean_over_ranks(terms, self.device)


def _check_split(n_anchors: int, batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise CellBridgeInputError(
            f"batch_size={batch_size} must be a multiple of world_size={world_size}: the global batch is split evenly."
        )
    if n_anchors < batch_size:
        raise CellBridgeInputError(
            f"distributed training needs at least one full batch: {n_anchors} anchors < batch_size={batch_size}."
        )


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """What a worker needs to train: numpy data, the initial module and the configuration."""

    module: BiCLUMModule
    config: TrainConfig
    inputs: TrainInputs
    progress: bool


def train_distributed(
    model: BiCLUM,
    *,
    world_size: int | None = None,
    backend: str = "gloo",
    init_method: str | None = None,
    threads_per_process: int = 1,
    **train_kwargs,
) -> History:
    """Train ``model`` data-parallel on ``world_size`` processes; same result as :meth:`BiCLUM.train`.

    The global batch (``batch_size`` anchors) is split evenly over the processes, each of which
    trains on ``batch_size / world_size`` anchors per step; the optimisation follows the
    single-process one up to float rounding (with dropout off; dropout masks are drawn per
    process). The trained weights are loaded into ``model.module``.

    Parameters
    ----------
    model
        A :class:`~cellbridge.BiCLUM` built with its training data (MNN pairs are taken from it,
        not recomputed).
    world_size
        Number of processes. Under ``torchrun`` it is read from ``WORLD_SIZE`` (a given value
        must agree).
    backend
        ``"gloo"`` (CPU) or ``"nccl"`` (one CUDA device per process, ``cuda:LOCAL_RANK``).
    init_method
        Rendezvous URL for ``init_process_group``, e.g. ``"file:///tmp/pg"``; default a free
        local TCP port when spawning, ``"env://"`` under ``torchrun``.
    threads_per_process
        ``torch.set_num_threads`` in each spawned process.
    **train_kwargs
        As for :meth:`BiCLUM.train`: ``max_epochs``, ``max_time``, ``progress`` and parameter
        overrides (``lr``, ``batch_size``, ``patience``...).

    Returns
    -------
    The per-epoch history (losses averaged over processes), plus ``world_size``,
    ``local_batch_size`` and ``epochs_per_rank``.

    Examples
    --------
    Spawn two local processes::

        history = train_distributed(model, world_size=2)

    Or put the same call in ``script.py`` and run ``torchrun --nproc_per_node=2 script.py``;
    every process then builds the model and ends with the same trained weights.
    """
    if model.data is None:
        raise RuntimeError("this model was loaded without its training data; it can embed but not train.")
    job = _make_job(model, train_kwargs)
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world_size = _resolve_world_size(world_size, torchrun)
    _check_split(len(job.inputs.sampler()), job.config.batch_size, world_size)
    result = launch(_train_rank, job, world_size=world_size, backend=backend, init_method=init_method,
                    threads_per_process=threads_per_process)
    model.module.load_state_dict(result["state"])
    model.history = result["history"]
    model.train_config = asdict(job.config)
    return model.history


def _make_job(model: BiCLUM, train_kwargs: dict) -> _Job:
    """The resolved configuration, the initial weights and the host-side data of ``model``."""
    kwargs = dict(train_kwargs)
    max_epochs, max_time = kwargs.pop("max_epochs", None), kwargs.pop("max_time", None)
    progress = bool(kwargs.pop("progress", True))
    config = model._train_config(max_epochs, max_time, kwargs)
    return _Job(copy.deepcopy(model.module).cpu(), config, model._train_inputs(), progress)


def _train_rank(job: _Job, device: torch.device) -> dict:
    """Train this process's copy of the module inside an initialised process group."""
    set_seed(job.config.seed + dist.get_rank())  # torch RNG (dropout) only; anchors use the shared seed
    # A private copy: tensors handed over by torch.multiprocessing live in memory shared by all workers.
    module = copy.deepcopy(job.module).to(device)
    trainer = DistributedBiCLUMTrainer(module, job.inputs.to_device(device), job.inputs.sampler(), job.config)
    history = trainer.fit(progress=job.progress)
    return {"history": history, "state": cpu_state(module)}


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict, detached, on the CPU."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


RankFn = Callable[[object, torch.device], dict]
"""``train_rank(job, device) -> result``: one process's training inside an initialised group."""


def launch(train_rank: RankFn, job: object, *, world_size: int, backend: str = "gloo",
           init_method: str | None = None, threads_per_process: int = 1) -> dict:
    """Run ``train_rank(job, device)`` in every process of a data-parallel group; rank 0's result.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) this process is one rank and returns its own
    result; otherwise ``world_size`` processes are spawned (start method spawn). ``train_rank``
    must be a module-level function (it is pickled); tensors in ``job`` travel in shared memory.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _train_under_torchrun(train_rank, job, backend, init_method)
    return _spawn(train_rank, job, world_size, backend, init_method, threads_per_process)


def _device(backend: str, local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")


class GroupStartError(RuntimeError):
    """A spawned rank could not join the process group; nothing had been trained."""


def _worker(rank: int, train_rank: RankFn, world_size: int, backend: str, init_method: str, job: object,
            threads: int, out: str) -> None:
    """Entry point of a spawned process; rank 0 writes its result (history, weights) to ``out``."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    device = _device(backend, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    except RuntimeError as err:
        raise GroupStartError(f"rank {rank} could not join the process group: {err}") from err
    try:
        result = train_rank(job, device)
        if rank == 0:
            torch.save(result, out)
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()


def _spawn(train_rank: RankFn, job: object, world_size: int, backend: str, init_method: str | None,
           threads: int, attempts: int = 3) -> dict:
    """Spawn the group. On a local port of our choosing, when a rank fails to join the group
    (gloo's connection set-up now and then times out on a single machine), start again on a fresh
    port, up to ``attempts`` times; a user's ``init_method`` is tried once."""
    def once() -> dict:
        address = init_method or f"tcp://127.0.0.1:{_free_port()}"
        return _spawn_once(train_rank, job, world_size, backend, address, threads)

    attempts = attempts if init_method is None else 1
    for attempt in range(1, attempts):
        try:
            return once()
        except mp.ProcessRaisedException as err:
            if GroupStartError.__name__ not in str(err):
                raise
            logger.warning("Starting the process group failed (attempt %d of %d); starting again.",
                           attempt, attempts)
    return once()


def _spawn_once(train_rank: RankFn, job: object, world_size: int, backend: str, init_method: str,
                threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cellbridge-ddp-") as tmp:
        out = os.path.join(tmp, "result.pt")
        mp.spawn(_worker, args=(train_rank, world_size, backend, init_method, job, threads, out),
                 nprocs=world_size, join=True, start_method="spawn")
        return torch.load(out, weights_only=True)


def _resolve_world_size(world_size: int | None, torchrun: bool) -> int:
    if torchrun:
        env_world = int(os.environ["WORLD_SIZE"])
        if world_size is not None and world_size != env_world:
            raise CellBridgeInputError(f"world_size={world_size} but torchrun started {env_world} processes (WORLD_SIZE).")
        return env_world
    if world_size is None or world_size < 1:
        raise CellBridgeInputError(f"world_size must be a positive number of processes, got {world_size!r}.")
    return world_size


def _train_under_torchrun(train_rank: RankFn, job: object, backend: str, init_method: str | None) -> dict:
    """This process is one of ``torchrun``'s: join (or reuse) its process group and train."""
    device = _device(backend, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend, init_method=init_method or "env://")
    try:
        return train_rank(job, device)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
