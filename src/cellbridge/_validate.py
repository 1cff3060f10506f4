"""Input checks run once, where the user's data enters CellBridge.

Every check raises :class:`~cellbridge.CellBridgeInputError` with a message that
names the object, the problem and the fix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._errors import CellBridgeInputError


def get_matrix(adata: AnnData, layer: str | None = None, *, name: str = "adata"):
    """Return ``adata.X`` or ``adata.layers[layer]`` (no copy)."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise CellBridgeInputError(
            f"`{name}` has no layer {layer!r}; available layers: {list(adata.layers)}. "
            "Pass `layer=None` to use `.X`."
        )
    return adata.layers[layer]


def is_backed(X) -> bool:
    """True for a matrix stored on disk (anndata backed mode: h5py dataset or sparse dataset)."""
    return not isinstance(X, np.ndarray) and not sp.issparse(X) and hasattr(X, "shape")


ROW_BLOCK = 100_000  # rows per block in whole-matrix passes (checks, statistics, projection)


def row_blocks(X, rows: int = ROW_BLOCK):
    """In-memory blocks of ``rows`` rows of a dense, sparse or backed matrix (a backed file is
    read one block at a time)."""
    for start in range(0, X.shape[0], rows):
        block = X[start:start + rows]
        yield block if sp.issparse(block) else np.asarray(block)


def to_memory(X):
    """``X`` itself when in memory; the whole matrix read from disk when backed."""
    if not is_backed(X):
        return X
    return X.to_memory() if hasattr(X, "to_memory") else np.asarray(X[:])


_CHUNK = 1 << 24  # values checked at a time: temporaries stay small on large matrices


def _value_chunks(X):
    """The stored values of a dense, sparse or backed matrix, in chunks (no densifying)."""
    for block in row_blocks(X) if is_backed(X) else [X]:
        values = block.data if sp.issparse(block) else np.asarray(block).ravel()
        for start in range(0, values.size, _CHUNK):
            yield values[start:start + _CHUNK]


def _first_non_integer(X) -> float | None:
    for c in _value_chunks(X):
        bad = c[np.abs(c - np.round(c)) > 1e-6]
        if bad.size:
            return float(bad[0])
    return None


def check_nonempty(adata: AnnData, name: str = "adata") -> None:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise CellBridgeInputError(
            f"`{name}` is empty ({adata.n_obs} cells x {adata.n_vars} features); "
            "pass a modality with at least one cell and one feature."
        )


def check_unique_names(adata: AnnData, name: str = "adata") -> None:
    for axis, index in (("var_names", adata.var_names), ("obs_names", adata.obs_names)):
        if not index.is_unique:
            dup = index[index.duplicated()].unique()[:5].tolist()
            raise CellBridgeInputError(
                f"`{name}.{axis}` has duplicated names (e.g. {dup}); make them unique first, "
                f"e.g. `{name}.{axis[:-1]}_names_make_unique()`."
            )


def check_finite(X, name: str = "adata.X") -> None:
    n_bad = sum(int(np.count_nonzero(~np.isfinite(c))) for c in _value_chunks(X))
    if n_bad:
        raise CellBridgeInputError(
            f"`{name}` contains {n_bad} NaN or infinite values; remove or impute them "
            "(e.g. `np.nan_to_num`) before calling CellBridge."
        )


def check_counts(X, name: str = "adata.X") -> None:
    """Raise when ``X`` is not a non-negative integer-valued matrix."""
    check_finite(X, name)
    low = min((float(c.min()) for c in _value_chunks(X) if c.size), default=0.0)
    if low < 0:
        raise CellBridgeInputError(
            f"`{name}` has negative values (min {low:.3g}); raw counts are required — "
            'pass `layer="counts"` if the counts are stored there.'
        )
    frac = _first_non_integer(X)
    if frac is not None:
        raise CellBridgeInputError(
            f"`{name}` holds non-integer values (e.g. {frac:.3g}); raw counts are required — "
            'pass `layer="counts"` if the counts are stored there.'
        )


def is_integer_matrix(X) -> bool:
    return _first_non_integer(X) is None


def check_modality(
    adata: AnnData, name: str, *, layer: str | None = None, counts: bool = False, in_memory: bool = True
):
    """Run the common checks on one modality and return its matrix; a backed matrix is read into
    memory unless ``in_memory=False`` (for callers that read it in row blocks)."""
    if not isinstance(adata, AnnData):
        raise CellBridgeInputError(f"`{name}` must be an AnnData, got {type(adata).__name__}.")
    check_nonempty(adata, name)
    check_unique_names(adata, name)
    X = get_matrix(adata, layer, name=name)
    where = f"{name}.layers[{layer!r}]" if layer else f"{name}.X"
    if counts:
        check_counts(X, where)
    else:
        check_finite(X, where)
    return to_memory(X) if in_memory else X


def check_label_column(adata: AnnData, key: str, name: str = "adata") -> None:
    if key not in adata.obs:
        raise CellBridgeInputError(
            f"`{name}.obs` has no column {key!r}; available columns: {list(adata.obs.columns)}. "
            "Pass the name of the column holding cell-type labels."
        )


def as_embedding(emb, name: str = "emb", *, min_rows: int = 1) -> np.ndarray:
    """Validate a cells x dimensions embedding and return it as a float array."""
    X = np.asarray(emb.toarray() if sp.issparse(emb) else emb)
    if X.ndim != 2:
        raise CellBridgeInputError(
            f"`{name}` must be a 2-D cells x dimensions array, got shape {X.shape}; "
            "reshape it, e.g. `x.reshape(-1, 1)` for a single dimension."
        )
    if X.shape[0] < min_rows:
        raise CellBridgeInputError(
            f"`{name}` has {X.shape[0]} cells; at least {min_rows} are needed here."
        )
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise CellBridgeInputError(
            f"`{name}` must hold finite numbers (found NaN/inf or non-numeric values); "
            "remove those cells or impute the values first."
        )
    return X.astype(np.float64, copy=False)
