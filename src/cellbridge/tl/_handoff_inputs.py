"""Inputs of the hand-offs (:mod:`cellbridge.tl._handoffs`): optional packages, the user's tables,
the modality analysed, its log-normalised values, and the group labels of its cells (given, or
transferred through the joint embedding from the labelled cells of the other modalities).
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import CellBridgeInputError, CellBridgeWarning
from .._validate import check_unique_names, get_rep
from ._markers import _looks_like_counts, _modalities, _pick
from .transfer import transfer_labels

logger = logging.getLogger("cellbridge")


def _require(module: str, function: str):
    """Import an optional package, or raise an ImportError that names the extra to install.

    Parameters
    ----------
    module
        The package (``"decoupler"``, ``"liana"``).
    function
        The CellBridge function that needs it (for the message).

    Returns
    -------
    module
        The imported package.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"`cellbridge.tl.{function}` needs the optional package {module!r}: "
            f'`pip install "cellbridge[biology]"` (or `pip install {module}`).'
        ) from err


def _read_table(table, *, what: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A user table given as a DataFrame or a TSV / CSV path (``.gz`` too), with ``columns`` checked.

    Parameters
    ----------
    table
        DataFrame, or path to a tab-separated (``.csv``: comma-separated) file with a header.
    what
        What the table is, for the messages (``"regulon"``...).
    columns
        Columns it must have.

    Returns
    -------
    DataFrame
        A copy of the table.
    """
    if isinstance(table, (str, os.PathLike)):
        path = Path(table)
        if not path.is_file():
            raise CellBridgeInputError(f"The {what} file {path} does not exist; pass an existing TSV/CSV path.")
        sep = "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"
        try:
            df = pd.read_csv(path, sep=sep)
        except pd.errors.EmptyDataError:
            df = pd.DataFrame()
        source = str(path)
    elif isinstance(table, pd.DataFrame):
        df, source = table.copy(), "the DataFrame"
    else:
        raise CellBridgeInputError(
            f"The {what} table must be a DataFrame or a TSV/CSV path, got {type(table).__name__}."
        )
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CellBridgeInputError(
            f"The {what} table ({source}) lacks columns {missing} (it has {list(df.columns)}); it needs "
            f"{list(columns)}: rename yours, e.g. `df.rename(columns={{'tf': 'source'}})`."
        )
    if df.empty:
        raise CellBridgeInputError(f"The {what} table ({source}) has no rows.")
    return df


def _modality(data, modality: str) -> tuple[str, AnnData, dict[str, AnnData]]:
    mods = _modalities(data)
    if list(mods) == [""]:  # a lone AnnData is the modality to analyse
        check_unique_names(mods[""], "data")
        return "", mods[""], mods
    if modality in mods:
        check_unique_names(mods[modality], modality)
        return modality, mods[modality], mods
    if modality not in ("rna", "gene_activity"):
        raise CellBridgeInputError(f"`modality` {modality!r} is not in `data` (modalities: {list(mods)}).")
    name, adata = _pick(mods, modality)
    check_unique_names(adata, name or "data")
    return name, adata, mods


def _rep(data, name: str, adata: AnnData, use_rep: str | None) -> np.ndarray:
    """The joint embedding of one modality's cells: its ``obsm[use_rep]``, else the rows of the
    MuData's top-level ``obsm[use_rep]`` for its cells (matched by name)."""
    try:
        return get_rep(adata, use_rep, name=name or "data")
    except CellBridgeInputError:
        if not hasattr(data, "mod") or not data.obs_names.is_unique:
            raise
        pos = data.obs_names.get_indexer(adata.obs_names)
        if (pos < 0).any():
            raise
        return get_rep(data, use_rep, name="mdata")[pos]


def _log_values(adata: AnnData, layer: str | None, normalize: bool | None, name: str) -> sp.csr_matrix:
    """Cells x features log-normalised values (a new matrix): counts are normalised per cell and
    log1p-transformed (``normalize=None``: when the values are counts)."""
    import scanpy as sc

    if layer is not None and layer not in adata.layers:
        raise CellBridgeInputError(
            f"`{name or 'data'}` has no layer {layer!r} (layers: {list(adata.layers)}); pass `layer=None` to use `.X`."
        )
    X = adata.X if layer is None else adata.layers[layer]
    tmp = AnnData(sp.csr_matrix(X, dtype=np.float32, copy=True))
    if normalize is None:
        normalize = _looks_like_counts(tmp.X)
        logger.info("%s: values %s", name or "data", "normalised and log1p" if normalize else "used as given")
    if normalize:
        sc.pp.normalize_total(tmp)
        sc.pp.log1p(tmp)
    return sp.csr_matrix(tmp.X)


def _global_labels(data, adata: AnnData, groupby: str) -> pd.Series | None:
    """``data.obs[groupby]`` of a MuData for the cells of one modality, when names match."""
    if not hasattr(data, "mod") or groupby not in data.obs or not data.obs_names.is_unique:
        return None
    col = data.obs[groupby].reindex(adata.obs_names)
    return None if col.isna().all() else col


def _group_labels(data, name: str, groupby: str, *, use_rep: str | None = None, k: int = 15):
    """Labels of the cells of modality ``name``: its ``obs[groupby]``, or transferred.

    Parameters
    ----------
    data
        AnnData, MuData or dict of AnnData.
    name
        The modality whose cells need labels (``""`` for a lone AnnData).
    groupby
        The labels' column (in that modality's ``obs``, in other modalities, or in the MuData's).
    use_rep
        ``obsm`` key of the joint embedding used to transfer labels to unlabelled cells.
    k
        Neighbours that vote in the transfer.

    Returns
    -------
    labels : pandas.Series
        One string label per cell of the modality (index: its ``obs_names``).
    info : dict
        ``labels`` (``"given"`` or ``"transferred"``), with a transfer also ``n_transferred``,
        ``mean_confidence`` and ``from`` (the modalities that gave the labels).
    """
    mods = _modalities(data)
    target = mods[name]
    col = target.obs[groupby] if groupby in target.obs else _global_labels(data, target, groupby)
    if col is not None and not col.isna().any():
        return col.astype(str), {"labels": "given"}
    refs = [(m, a) for m, a in mods.items() if groupby in a.obs and a.obs[groupby].notna().any()]
    if not refs:
        raise CellBridgeInputError(
            f"No modality of `data` ({list(mods)}) has labels in `obs[{groupby!r}]`; add them first, e.g. "
            f"`cellbridge.tl.leiden(mdata, key_added={groupby!r})` on the joint embedding."
        )
    emb, lab, sources = [], [], []
    for m, a in refs:
        known = a.obs[groupby].notna().to_numpy()
        emb.append(_rep(data, m, a, use_rep)[known])
        lab.append(a.obs[groupby].to_numpy()[known].astype(str))
        sources.append(m)
    query_rows = np.flatnonzero(col.isna().to_numpy()) if col is not None else np.arange(target.n_obs)
    query = _rep(data, name, target, use_rep)[query_rows]
    pred, conf = transfer_labels(np.vstack(emb), np.concatenate(lab), query, k=k)
    out = (col.astype(object) if col is not None else pd.Series(index=target.obs_names, dtype=object)).copy()
    out.iloc[query_rows] = pred
    logger.info("%d cells of %s got `%s` labels transferred (mean vote %.2f)", len(query_rows), name, groupby,
                float(conf.mean()))
    info = {"labels": "transferred", "n_transferred": len(query_rows), "mean_confidence": float(conf.mean()),
            "from": sources}
    absent = sorted(map(str, set(np.concatenate(lab)) - set(out.astype(str))))
    if absent:
        warnings.warn(f"groups {absent} of `{groupby}` have no cell in modality {name!r} after the label "
                      "transfer (groups of a single modality); they are left out there.",
                      CellBridgeWarning, stacklevel=3)
    return out.astype(str), info


def _usable_groups(labels: pd.Series, min_cells: int, groupby: str, name: str) -> pd.Series:
    sizes = labels.value_counts()
    small = sorted(map(str, sizes.index[sizes < min_cells]))
    if small:
        warnings.warn(f"groups {small} of `{groupby}` have fewer than {min_cells} cells in {name or 'data'}; "
                      "they are left out.", CellBridgeWarning, stacklevel=3)
    keep = labels[~labels.isin(small)]
    if keep.nunique() < 2:
        raise CellBridgeInputError(
            f"`{groupby}` has {keep.nunique()} group(s) with at least {min_cells} cells in {name or 'data'}; "
            "at least two are needed: pass a coarser grouping, more cells, or a smaller `min_cells`."
        )
    return keep
