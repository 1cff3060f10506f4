"""Training utilities shared by the models: seeds, devices, early stopping, saving, the
non-finite loss check, and checkpoints of the training state (:class:`Checkpoint`)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import CellBridgeInputError, TrainingDivergedError, TrainingInterrupted
from .._utils import atomic_write

logger = logging.getLogger("cellbridge")


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def select_device(accelerator: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` force one."""
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(accelerator)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("accelerator='cuda' was requested but no CUDA device is available.")
    return device


class EarlyStopping:
    """Stop when the monitored loss has not improved for ``patience`` epochs.

    Keeps a copy of the best weights so they can be restored (reference defect D3).
    """

    def __init__(self, patience: int = 30, min_delta: float = 0.0):
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self._bad_epochs = 0

    def step(self, loss: float, epoch: int, module: torch.nn.Module) -> bool:
        """Record ``loss``; return True when training should stop."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self._bad_epochs = loss, epoch, 0
            self.best_state = copy.deepcopy(module.state_dict())
        else:
            self._bad_epochs += 1
        return self._bad_epochs >= self.patience

    def restore(self, module: torch.nn.Module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (for :class:`Checkpoint`)."""
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad_epochs": self._bad_epochs,
                "best_state": self.best_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_loss, self.best_epoch = float(state["best_loss"]), int(state["best_epoch"])
        self._bad_epochs, self.best_state = int(state["bad_epochs"]), state["best_state"]


def check_finite_loss(terms: Mapping[str, float], *, model: str, epoch: int, hints: str,
                      phase: str | None = None) -> None:
    """Raise :class:`~cellbridge._errors.TrainingDivergedError` when an epoch's loss terms are not
    all finite, naming the epoch, the first non-finite term and ``hints`` (likely fixes)."""
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    if not bad:
        return
    term = next((k for k in bad if k != "loss"), bad[0])
    where = f"{phase} epoch {epoch}" if phase else f"epoch {epoch}"
    raise TrainingDivergedError(
        f"{model} training diverged: the {term!r} loss term is {terms[term]} at {where} "
        f"(non-finite terms: {bad}); nothing was returned or written. Likely fixes: {hints}.")


# ------------------------------------------------------------------------------------ checkpoints
CHECKPOINT_FILE = "checkpoint.pt"
_FORMAT = 1


def check_checkpoint_options(every: int | None, seconds: float | None) -> None:
    """Refuse checkpoint intervals that are not None, a whole number of epochs >= 1 or seconds > 0."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1):
        raise CellBridgeInputError(f"`checkpoint_every` must be a whole number of epochs >= 1 (or None), got {every!r}.")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not seconds > 0):
        raise CellBridgeInputError(f"`checkpoint_seconds` must be a number of seconds above 0 (or None), "
                                   f"got {seconds!r}.")


def prepare_checkpoint_dir(directory: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path:
    """Before any work: with ``resume`` the checkpoint must exist; without, an existing one is
    removed with ``overwrite`` and refused otherwise (the CLI's ``--resume`` / ``--overwrite``)."""
    directory = Path(directory)
    found = (directory / CHECKPOINT_FILE).is_file()
    if resume and not found:
        raise CellBridgeInputError(f"there is no training checkpoint to resume in {directory}; "
                                   "run without `resume=True`.")
    if found and not resume:
        if not overwrite:
            raise CellBridgeInputError(f"{directory} holds the checkpoint of an interrupted training; pass "
                                       "`resume=True` to continue it, or `overwrite=True` to start again.")
        remove_checkpoint(directory)
    return directory


def remove_checkpoint(directory: str | os.PathLike) -> None:
    """Remove the checkpoint file of ``directory`` (and the folder when nothing else is left in it)."""
    directory = Path(directory)
    (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only when empty


def rng_state() -> dict[str, Any]:
    """The global random states of python, numpy and torch (CPU and initialised CUDA devices)."""
    version, keys, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(keys), gauss], "numpy": [name, int(pos), int(has_gauss), float(cached)],
             "numpy_keys": torch.from_numpy(np.asarray(mt, dtype=np.int64)), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of arrays (shape, dtype and bytes), to recognise a run's data in a checkpoint."""
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class Checkpoint:
    """Atomic checkpoints of a training run's state in ``directory`` (one file, ``checkpoint.pt``).

    ``run`` describes the run (hyper-parameters, data fingerprints): a checkpoint written for a
    different run is refused on resume. A checkpoint is written after an epoch when ``every``
    epochs or ``seconds`` seconds have passed since the last one, when training is interrupted
    by Ctrl-C (inside :meth:`interruptible`: the current epoch is finished first), and when
    training ends (``finished``), so that resuming a finished run returns its result at once.
    The file holds tensors, numbers and a JSON string only and is read with
    ``torch.load(weights_only=True)``: no pickles.

    Parameters
    ----------
    directory
        Folder of the checkpoint (created when missing).
    run
        JSON-serialisable description of the run; resuming needs the same one (``"max_epochs"``
        and ``"max_time"`` may differ: a resumed run may be given more epochs or time).
    model
        Model name used in messages.
    resume_hint
        How to resume, for the message of an interruption (e.g. ``"model.train(resume=True, ...)"``).
    every
        Epochs between checkpoints (None: by time only).
    seconds
        Seconds between checkpoints (None: by epochs only).
    """

    FREE_KEYS = ("max_epochs", "max_time")

    def __init__(self, directory: str | os.PathLike, *, run: Mapping[str, Any], model: str, resume_hint: str,
                 every: int | None = None, seconds: float | None = 600.0):
        check_checkpoint_options(every, seconds)
        self.directory, self.path = Path(directory), Path(directory) / CHECKPOINT_FILE
        if self.directory.exists() and not self.directory.is_dir():
            raise CellBridgeInputError(f"checkpoint_dir {self.directory} exists and is not a folder; "
                                       "pass a folder path.")
        self.run = json.loads(json.dumps(dict(run), default=_json_default))
        self.model, self.resume_hint, self.every, self.seconds = model, resume_hint, every, seconds
        self.stop_requested = False
        self._since, self._last = 0, time.monotonic()

    def exists(self) -> bool:
        return self.path.is_file()

    def check_fresh(self) -> None:
        """Refuse to start a new run over the checkpoint of another one."""
        if self.exists():
            raise CellBridgeInputError(
                f"{self.directory} already holds a {self.model} training checkpoint; resume it "
                f"({self.resume_hint}) or remove {self.path} to start again.")

    def load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(meta, tensors)`` of the checkpoint; refused when it belongs to a different run."""
        if not self.exists():
            raise CellBridgeInputError(f"there is no {self.model} checkpoint to resume in {self.directory}; "
                                       "train without `resume=True` to start a run.")
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
            meta = json.loads(blob["meta"])
        except Exception as err:  # a damaged file, or not ours
            raise CellBridgeInputError(f"{self.path} is not a readable {self.model} checkpoint ({err}); "
                                       "remove it to start again.") from err
        if meta.get("format") != _FORMAT or meta.get("model") != self.model:
            raise CellBridgeInputError(f"{self.path} is not a {self.model} checkpoint of this CellBridge version; "
                                       "remove it to start again.")
        saved = {k: v for k, v in meta["run"].items() if k not in self.FREE_KEYS}
        now = {k: v for k, v in self.run.items() if k not in self.FREE_KEYS}
        differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if differ:
            raise CellBridgeInputError(
                f"the checkpoint in {self.directory} was written by a different run (differs in {differ}); "
                "resume with the same data, model options and seed, or start again without resume.")
        return meta, blob["tensors"]

    def due(self) -> bool:
        """Called once per finished epoch: True when a periodic checkpoint is due."""
        self._since += 1
        return ((self.every is not None and self._since >= self.every)
                or (self.seconds is not None and time.monotonic() - self._last >= self.seconds))

    def save(self, meta: Mapping[str, Any], tensors: Mapping[str, Any], *, finished: bool = False) -> None:
        """Write the state atomically (``meta``: JSON values; ``tensors``: nested tensors/numbers)."""
        text = json.dumps({"format": _FORMAT, "model": self.model, "run": self.run, "finished": finished,
                           **meta}, default=_json_default)
        blob = {"meta": text, "tensors": dict(tensors)}
        atomic_write(self.path, lambda tmp: torch.save(blob, tmp), overwrite=True, suffix=".pt.tmp")
        self._since, self._last = 0, time.monotonic()

    def interrupted(self, epoch: str) -> TrainingInterrupted:
        """The exception to raise once the state after ``epoch`` is saved following a Ctrl-C."""
        return TrainingInterrupted(
            f"{self.model} training interrupted after {epoch}; its state is saved in {self.path}. "
            f"Continue it with {self.resume_hint}: the result is the same as an uninterrupted run.")

    @contextlib.contextmanager
    def interruptible(self):
        """While active, a first Ctrl-C (SIGINT) sets :attr:`stop_requested` (the loop saves and stops
        after the current epoch); a second one interrupts at once. No-op outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def request_stop(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            logger.warning("Ctrl-C: %s saves a checkpoint after this epoch and stops (Ctrl-C again to stop at "
                           "once, losing the current epoch)", self.model)

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def save_model_dir(
    path: str | os.PathLike,
    module: torch.nn.Module,
    metadata: dict[str, Any],
    *,
    overwrite: bool = False,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``model.pt`` (state dict) and ``metadata.json`` into ``path``.

    ``extra`` arrays (e.g. preprocessing parameters) are stored in the same tensor file under
    ``"extra/<name>"`` keys.

    The files are written to temporary names first and renamed, so an interrupted
    save never leaves a half-written model.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to replace it.")
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    state.update({f"extra/{k}": torch.as_tensor(np.asarray(v)) for k, v in (extra or {}).items()})
    atomic_write(path / "model.pt", lambda tmp: torch.save(state, tmp), overwrite=True, suffix=".pt.tmp")
    text = json.dumps(metadata, indent=1, default=_json_default)
    atomic_write(path / "metadata.json", lambda tmp: Path(tmp).write_text(text), overwrite=True, suffix=".json.tmp")
    return path


def load_model_dir(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_model_dir` wrote (``weights_only=True``: no pickles).

    ``extra`` arrays come back in the state dict under their ``"extra/<name>"`` keys.
    """
    path = Path(path)
    if not (path / "model.pt").exists():
        raise FileNotFoundError(f"{path} does not hold a saved CellBridge model (no model.pt).")
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    metadata = json.loads((path / "metadata.json").read_text())
    return state, metadata


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def make_optimizer(name: str, params, lr: float, rho: float = 0.8) -> torch.optim.Optimizer:
    """``"adam"`` (amsgrad, as the reference pre-training) or ``"adadelta"`` (reference fine-tuning).

    Both use the multi-tensor (``foreach``) update: on CPU it gives the same bits as the
    per-tensor loop torch uses there by default, faster (``benchmarks/README.md``, "Session 10").
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, amsgrad=True, foreach=True)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=rho, foreach=True)
    raise ValueError(f'optimizer must be "adam" or "adadelta", got {name!r}')


PRECISIONS = ("32", "bf16-mixed")


def autocast(device: torch.device, precision: str):
    """Autocast context: bfloat16 mixed precision for ``"bf16-mixed"``, a no-op for ``"32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


@torch.no_grad()
def encode_all(fn, X: torch.Tensor, chunk: int = 4096, precision: str = "32") -> np.ndarray:
    """Apply an encoder in evaluation mode over the rows of ``X`` in chunks (float32 output)."""
    with autocast(X.device, precision):
        return torch.cat([fn(part).float() for part in X.split(chunk)]).cpu().numpy()
