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


def _values(X) -> np.ndarray:
    """The stored values of a dense or sparse matrix (no densifying)."""
    if sp.issparse(X):
        return X.data
    return np.asarray(X).ravel()


_CHUNK = 1 << 24  # values checked at a time: temporaries stay small on large matrices


def _chunks(values: np.ndarray):
    for start in range(0, values.size, _CHUNK):
        yield values[start:start + _CHUNK]


def _count_nonfinite(values: np.ndarray) -> int:
    return sum(int(np.count_nonzero(~np.isfinite(c))) for c in _chunks(values))


def _first_non_integer(values: np.ndarray) -> float | None:
    for c in _chunks(values):
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
    n_bad = _count_nonfinite(_values(X))
    if n_bad:
        raise CellBridgeInputError(
            f"`{name}` contains {n_bad} NaN or infinite values; remove or impute them "
            "(e.g. `np.nan_to_num`) before calling CellBridge."
        )


def check_counts(X, name: str = "adata.X") -> None:
    """Raise when ``X`` is not a non-negative integer-valued matrix."""
    check_finite(X, name)
    values = _values(X)
    if values.size == 0:
        return
    if values.min() < 0:
        raise CellBridgeInputError(
            f"`{name}` has negative values (min {values.min():.3g}); raw counts are required — "
            'pass `layer="counts"` if the counts are stored there.'
        )
    frac = _first_non_integer(values)
    if frac is not None:
        raise CellBridgeInputError(
            f"`{name}` holds non-integer values (e.g. {frac:.3g}); raw counts are required — "
            'pass `layer="counts"` if the counts are stored there.'
        )


def is_integer_matrix(X) -> bool:
    return _first_non_integer(_values(X)) is None


def check_modality(adata: AnnData, name: str, *, layer: str | None = None, counts: bool = False):
    """Run the common checks on one modality and return its matrix."""
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
    return X


def check_label_column(adata: AnnData, key: str, name: str = "adata") -> None:
    if key not in adata.obs:
        raise CellBridgeInputError(
            f"`{name}.obs` has no column {key!r}; available columns: {list(adata.obs.columns)}. "
            "Pass the name of the column holding cell-type labels."
        )
