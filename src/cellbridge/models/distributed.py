"""Data-parallel training with ``torch.distributed``, model-agnostic.

- autograd-aware collectives (:func:`all_reduce_sum`, :func:`gather_rows`) and
  :func:`mean_over_ranks`;
- :func:`sync_batchnorm`: BatchNorm statistics of the global batch (``nn.SyncBatchNorm`` on
  GPUs, :class:`AllReduceBatchNorm1d` on CPU, where ``SyncBatchNorm`` does not run);
- the group strategy: a training loop is written once against :class:`LocalGroup` (one process,
  every exchange the identity) and runs data-parallel with :class:`DataParallelGroup` (one
  process of an initialised group; DDP wraps the step through :class:`StepModule`);
- :func:`launch`: runs a module-level ``train_rank(job, device)`` in every process, spawned
  locally (start method spawn) or as one of ``torchrun``'s.

Checkpoints and resuming (``train(checkpoint_dir=..., resume=True)``) are supported in
single-process training only: the models refuse them with ``world_size > 1`` or under
``torchrun``, with a message saying so. A non-finite loss stops every process alike (the loss
checked is the one averaged over the processes).

The models' own data-parallel training (which rows each process takes, how the per-process
losses are weighted) lives in their ``_training`` modules.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import tempfile
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._errors import CellBridgeInputError

logger = logging.getLogger("cellbridge")


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
# Group strategy
# ---------------------------------------------------------------------------------------------


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


class LocalGroup:
    """The process group of single-process training: every cross-process operation is the identity.

    :class:`DataParallelGroup` implements the same methods with ``torch.distributed``; a training
    loop is written once against this interface.
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

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of ``x`` of every process, concatenated in rank order (autograd-aware)."""
        return x

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any."""
        return flag

    def gather_object(self, obj) -> list:
        """``obj`` of every process, in rank order."""
        return [obj]

    def wrap(self, module: nn.Module, step: Callable) -> Callable:
        """The callable that runs a training ``step`` (DDP's forward in a data-parallel group)."""
        return step


LOCAL = LocalGroup()


class DataParallelGroup(LocalGroup):
    """:class:`LocalGroup` of one process of an initialised ``torch.distributed`` group."""

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

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return gather_rows(x)

    def any(self, flag: bool) -> bool:
        buf = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(buf, op=dist.ReduceOp.MAX)
        return bool(buf.item())

    def gather_object(self, obj) -> list:
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def wrap(self, module: nn.Module, step):
        # One DDP per phase (init_centers replaces the centroid parameter between phases); the
        # previous one must be gone first, or its gradient hooks would fire in the next phase.
        self._ddp = None
        gc.collect()
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(StepModule(module, step), device_ids=device_ids)
        return self._ddp


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


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


def resolve_world_size(world_size: int | None, torchrun: bool) -> int:
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
