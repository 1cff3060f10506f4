"""CellBridge: single-cell multi-omics integration with contrastive learning.

``import cellbridge as cb`` then ``cb.pp``, ``cb.tl``, ``cb.pl``, ``cb.metrics``, ``cb.io``,
``cb.datasets``, ``cb.neighbors``, ``cb.BiCLUM`` and ``cb.scMDCF``. Sub-packages load on first use so that
``import cellbridge`` stays fast (torch is only imported with a model).
"""

from __future__ import annotations

import importlib

from ._errors import (
    CellBridgeError,
    CellBridgeInputError,
    CellBridgeWarning,
    DegenerateEmbeddingError,
    TrainingDivergedError,
    TrainingInterrupted,
)

__version__ = "0.1.0"

_SUBMODULES = {"pp", "tl", "pl", "metrics", "io", "datasets", "models", "neighbors", "report"}
_MODELS = {"BiCLUM": ".models.biclum", "scMDCF": ".models.scmdcf"}

__all__ = [*sorted(_SUBMODULES), *_MODELS, "CellBridgeError", "CellBridgeInputError", "CellBridgeWarning",
           "DegenerateEmbeddingError", "TrainingDivergedError", "TrainingInterrupted"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _MODELS:
        return getattr(importlib.import_module(_MODELS[name], __name__), name)
    raise AttributeError(f"module 'cellbridge' has no attribute {name!r}")
