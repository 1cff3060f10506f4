"""Result tables of ``cellbridge.tl`` stored in ``uns`` in a form that writes to ``.h5ad`` / ``.h5mu``.

A table goes to ``uns[key]`` as a DataFrame and its ``attrs`` (settings and counts, which anndata
does not write) to ``uns[f"{key}_attrs"]``. Text columns with missing values (a marker gene without
a linked peak) become categoricals, which anndata writes and reads back with the missing values
kept; everything else is stored as computed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._errors import CellBridgeInputError

__all__ = ["ATTRS_SUFFIX", "check_store", "store_table"]

#: ``uns[key + ATTRS_SUFFIX]`` holds the table's ``attrs``.
ATTRS_SUFFIX = "_attrs"


def _writable_frame(table: pd.DataFrame) -> pd.DataFrame:
    out = table.reset_index(drop=True)
    out.columns = [str(c) for c in out.columns]
    for col in out.columns:
        values = out[col]
        if values.dtype == object:
            missing = values.isna()
            if missing.any() or not all(isinstance(v, str) for v in values):
                text = values.astype(str).where(~missing)
                out[col] = pd.Categorical(text, categories=sorted(set(text.dropna())))
    out.attrs = {}
    return out


def _writable_value(value):
    if isinstance(value, Mapping):
        return {str(k): _writable_value(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=str)
    if isinstance(value, (list, tuple)):
        items = [_writable_value(v) for v in value]
        if all(isinstance(v, (bool, int, float, np.number)) for v in items) and items:
            return np.asarray(items)
        return np.asarray([str(v) for v in items], dtype=object)
    if isinstance(value, pd.DataFrame):
        return _writable_frame(value)
    return value


def check_store(data, key: str | None) -> None:
    """Raise before any long work when ``key_added=key`` cannot be stored in ``data``.

    Parameters
    ----------
    data
        The object that will receive the table.
    key
        The ``key_added`` given (``None``: nothing is stored, nothing to check).

    Returns
    -------
    None
    """
    if key is None:
        return
    if not hasattr(data, "uns"):
        raise CellBridgeInputError(
            f"`key_added={key!r}` stores the table in `uns` of an AnnData or MuData; got "
            f"{type(data).__name__}. Pass the AnnData / MuData, or `key_added=None` and keep the returned table."
        )
    if not isinstance(key, str) or not key:
        raise CellBridgeInputError(f"`key_added` must be a non-empty string, got {key!r}.")


def store_table(data, key: str, table: pd.DataFrame):
    """Store ``table`` in ``data.uns[key]`` and its ``attrs`` in ``data.uns[key + "_attrs"]``.

    Parameters
    ----------
    data
        The AnnData or MuData that receives the table (modified in place).
    key
        The ``uns`` key (the ``key_added`` of the function that made the table).
    table
        The table; stored as a copy (text columns with missing values as categoricals, the index
        reset), so that ``data.write_h5mu`` / ``write_h5ad`` writes it and reading gives it back.

    Returns
    -------
    None
    """
    check_store(data, key)
    data.uns[key] = _writable_frame(table)
    if table.attrs:
        data.uns[key + ATTRS_SUFFIX] = _writable_value(dict(table.attrs))
    else:
        data.uns.pop(key + ATTRS_SUFFIX, None)
