"""Where scMDCF's training and embedding batches come from.

Small data is held as dense z-scored tensors (the reference's full-batch mode, unchanged). Above
the full-batch threshold ``prepare_paired(..., sparse_above=...)`` keeps the log-normalised
matrices sparse with per-feature mean/std, and dense z-scores are made per batch of rows here,
so memory grows with the number of stored values rather than cells x features.

All arrays are held as torch tensors: handed to ``torch.multiprocessing`` workers (data-parallel
training) they are placed in shared memory instead of being copied into every process.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from .._errors import CellBridgeInputError
from ..pp.paired import is_scaled_per_batch, scale_rows, scaling_of

Rows = torch.Tensor | slice


def sparse_threshold(hp: dict[str, Any]) -> int | None:
    """Cell count above which ``prepare_paired`` keeps scMDCF's inputs sparse.

    Exactly where training switches to mini-batches (:func:`effective_batch_size`): never with
    ``batch_size=None`` (full batch needs every row anyway), above ``full_batch_max`` otherwise
    (always when ``full_batch_max`` is None).
    """
    if hp["batch_size"] is None:
        return None
    return 0 if hp["full_batch_max"] is None else int(hp["full_batch_max"])


class DenseRows:
    """A dense matrix of already-scaled values; ``rows(idx)`` indexes it (the full-batch path)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)

    def rows(self, idx: Rows) -> torch.Tensor:
        return self.x[idx]

    def to(self, device: torch.device) -> DenseRows:
        return DenseRows(self.x.to(device))


class SparseRows:
    """Sparse log-normalised values; ``rows(idx)`` returns their dense z-scores on ``device``.

    Parameters
    ----------
    matrix
        CSR matrix (cells x features).
    mean, std, clip
        Per-feature z-score parameters and optional clip (:func:`cellbridge.pp.paired.scale_rows`).
    device
        Where the batches are placed.
    """

    def __init__(self, matrix: sp.csr_matrix, mean: np.ndarray, std: np.ndarray, clip: float | None,
                 device: torch.device | str = "cpu"):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self._parts = tuple(torch.from_numpy(np.ascontiguousarray(a))
                            for a in (matrix.data, matrix.indices, matrix.indptr))
        self._shape = matrix.shape
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.clip, self.device = clip, torch.device(device)
        self._csr: sp.csr_matrix | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _matrix(self) -> sp.csr_matrix:
        if self._csr is None:  # a view of the (possibly shared-memory) tensors, no copy
            data, indices, indptr = (t.numpy() for t in self._parts)
            self._csr = sp.csr_matrix((data, indices, indptr), shape=self._shape, copy=False)
        return self._csr

    def rows(self, idx: Rows) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        block = scale_rows(self._matrix(), idx, self.mean, self.std, self.clip)
        return torch.from_numpy(block).to(self.device)

    def to(self, device: torch.device) -> SparseRows:
        new = object.__new__(SparseRows)
        new.__dict__.update(self.__getstate__(), device=torch.device(device))
        return new

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_csr": None}


def modality_rows(prepared: ad.AnnData, device: torch.device) -> DenseRows | SparseRows:
    """Row source of one prepared modality (dense z-scores, or sparse values scaled per batch)."""
    if is_scaled_per_batch(prepared):
        mean, std, clip = scaling_of(prepared)
        return SparseRows(prepared.X, mean, std, clip, device)
    if sp.issparse(prepared.X):
        raise CellBridgeInputError("a prepared modality is sparse but carries no per-batch scaling; "
                                   "prepare it with cellbridge.pp.prepare_paired.")
    return DenseRows(torch.as_tensor(prepared.X, dtype=torch.float32, device=device))


class PairedBatches:
    """Scaled rows of the two modalities of the same cells, as dense float32 tensors.

    Parameters
    ----------
    rna, other
        Row sources of the same number of cells (:class:`DenseRows` or :class:`SparseRows`).
    """

    def __init__(self, rna: DenseRows | SparseRows, other: DenseRows | SparseRows):
        if rna.shape[0] != other.shape[0]:
            raise CellBridgeInputError(f"paired modalities must have the same cells: {rna.shape[0]} RNA "
                                       f"rows vs {other.shape[0]} rows of the other modality.")
        self.rna, self.other = rna, other

    @classmethod
    def from_prepared(cls, rna: ad.AnnData, other: ad.AnnData, device: torch.device) -> PairedBatches:
        """From the output of :func:`cellbridge.pp.prepare_paired`."""
        return cls(modality_rows(rna, device), modality_rows(other, device))

    @classmethod
    def from_tensors(cls, x_rna: torch.Tensor, x_other: torch.Tensor) -> PairedBatches:
        """From two dense tensors of scaled values (cells x features)."""
        return cls(DenseRows(x_rna), DenseRows(x_other))

    @property
    def n_obs(self) -> int:
        return self.rna.shape[0]

    @property
    def is_sparse(self) -> bool:
        return isinstance(self.rna, SparseRows) or isinstance(self.other, SparseRows)

    def rows(self, idx: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled ``(x_rna, x_other)`` of the cells ``idx`` (index tensor or slice)."""
        return self.rna.rows(idx), self.other.rows(idx)

    def to(self, device: torch.device) -> PairedBatches:
        return PairedBatches(self.rna.to(device), self.other.to(device))
