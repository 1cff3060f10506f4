"""Input checks run once, where the user's data enters CellBridge.

Every check raises :class:`~cellbridge.CellBridgeInputError` with a message that
names the object, the problem and the fix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._errors import CellBridgeInputError, DegenerateEmbeddingError


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
                f"e.g. `{name}.{axis}_make_unique()`."
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


def embedding_fault(X, *, inputs=None) -> str | None:
    """What makes the cells x dimensions array ``X`` useless as an embedding, or None.

    The one degeneracy check of the package, used for embeddings a user hands in
    (:func:`as_embedding`) and for those a model produces (:func:`check_model_embedding`):
    NaN/inf values, or a collapse, every cell at one point (the spread of each dimension at most
    1e-6 of the largest absolute value; float32 rounding of one point stays far below). With
    ``inputs`` (the rows the embedding was computed from) a collapse only counts when the inputs
    themselves differ: identical cells legitimately share one point. Nothing is copied.
    """
    X = np.asarray(X)
    n_bad = int(np.count_nonzero(~np.isfinite(X)))
    if n_bad:
        return f"holds {n_bad} NaN or infinite values"
    collapsed = X.ndim == 2 and X.shape[0] >= 2 and _collapsed(X)
    if collapsed and (inputs is None or not _collapsed(np.asarray(inputs))):
        return f"has collapsed: all {X.shape[0]} cells are at one point"
    return None


def _collapsed(X: np.ndarray) -> bool:
    """Every row equal to the first up to 1e-6 of the largest absolute value (scale-free)."""
    X = X.reshape(X.shape[0], -1)
    spread = float(np.max(np.ptp(X, axis=0))) if X.size else 0.0
    return spread <= 1e-6 * float(np.max(np.abs(X), initial=0.0))


def as_embedding(emb, name: str = "emb", *, min_rows: int = 1, distinct: bool = False) -> np.ndarray:
    """Validate a cells x dimensions embedding and return it as a float array.

    With ``distinct=True`` (metrics) a collapsed embedding (all cells at one point, see
    :func:`embedding_fault`) is refused as well: every distance-based score of it is meaningless.
    """
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
    if distinct and embedding_fault(X) is not None:
        raise CellBridgeInputError(
            f"`{name}` has collapsed: all {X.shape[0]} cells are at one point, so any score of it "
            "would be meaningless (a perfect FOSCTTM or alignment by construction). The model that "
            "produced it did not learn (e.g. a diverged training); check it, or pass another embedding."
        )
    return X.astype(np.float64, copy=False)


def check_model_embedding(z, *, model: str, what: str = "cells", inputs=None):
    """Return ``z`` unchanged when it is a usable embedding produced by ``model``, else raise
    :class:`~cellbridge._errors.DegenerateEmbeddingError` (see :func:`embedding_fault`)."""
    fault = embedding_fault(z, inputs=inputs)
    if fault is None:
        return z
    if "NaN" in fault:
        cause = ("its weights are not finite (a training that diverged, or a damaged model file); "
                 "retrain the model, e.g. with a smaller learning rate or larger temperatures")
    else:
        cause = ("the network maps every cell to the same point (a training that collapsed); retrain "
                 "it, e.g. with a smaller learning rate or more epochs")
    raise DegenerateEmbeddingError(f"{model}'s embedding of the {what} {fault}: {cause}.")


#: ``obsm`` keys read, in this order, when ``use_rep=None`` (the joint embeddings of the two models,
#: then scanpy's PCA)
DEFAULT_REPS = ("X_biclum", "X_scmdcf", "X_pca")


def get_rep(data, use_rep: str | None = None, *, name: str = "data", min_rows: int = 1,
            distinct: bool = False) -> np.ndarray:
    """The cells x dimensions embedding held by ``data``, validated by :func:`as_embedding`.

    ``data`` is an array (dense, sparse or DataFrame), used as given (``use_rep`` ignored), or an
    AnnData / MuData whose ``obsm[use_rep]`` is read (scanpy's ``use_rep``); with
    ``use_rep=None`` the first of :data:`DEFAULT_REPS` that ``obsm`` holds.
    """
    obsm = getattr(data, "obsm", None)
    if obsm is None:
        return as_embedding(data, name, min_rows=min_rows, distinct=distinct)
    keys = list(obsm.keys())
    if use_rep is None:
        use_rep = next((k for k in DEFAULT_REPS if k in obsm), None)
        if use_rep is None:
            raise CellBridgeInputError(
                f"`{name}.obsm` holds none of {list(DEFAULT_REPS)} (keys: {keys}); pass `use_rep=` the key "
                "of the embedding, e.g. after `adata.obsm['X_biclum'] = model.get_latent(adata)`."
            )
    if use_rep not in obsm:
        held = [m for m, a in getattr(data, "mod", {}).items() if use_rep in a.obsm]
        hint = (f" The modalities {held} hold it: pass one of them, e.g. `{name}[{held[0]!r}]`." if held
                else " Pass `use_rep=` one of those keys.")
        raise CellBridgeInputError(f"`{name}.obsm` has no {use_rep!r} (keys: {keys}).{hint}")
    return as_embedding(obsm[use_rep], f"{name}.obsm[{use_rep!r}]", min_rows=min_rows, distinct=distinct)
