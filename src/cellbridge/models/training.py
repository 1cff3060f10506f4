"""Training utilities shared by the models: seeds, devices, early stopping, saving."""

from __future__ import annotations

import copy
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def make_optimizer(name: str, params, lr: float, rho: float = 0.8) -> torch.optim.Optimizer:
    """``"adam"`` (amsgrad, as the reference pre-training) or ``"adadelta"`` (reference fine-tuning)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, amsgrad=True)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=rho)
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
