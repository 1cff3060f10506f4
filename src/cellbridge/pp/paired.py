"""Paired multi-omics inputs (the same cells measured twice): which modality a matrix holds,
MuData splitting, and cell alignment by name."""

from __future__ import annotations

import logging
import re
import warnings
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import CellBridgeInputError, CellBridgeWarning

logger = logging.getLogger("cellbridge")

Modality = Literal["atac", "protein"]
_PEAK_RE = re.compile(r"^(chr)?[0-9A-Za-z_.]+[:\-_]\d+[\-_]\d+$")
#: MuData modality names recognised as the second modality, and the modality each one holds.
MODALITY_ALIASES = {"atac": "atac", "peaks": "atac", "adt": "protein", "prot": "protein", "protein": "protein"}
#: The MuData modality name CellBridge writes for each modality.
MUDATA_KEYS = {"atac": "atac", "protein": "adt"}
MAX_PROTEINS = 500


def infer_modality(other: ad.AnnData) -> Modality:
    """Guess whether ``other`` holds ATAC peaks or proteins (ADT).

    Peaks are recognised by names such as ``chr1:100-200``, ``chr1-100-200`` or
    ``chr1_100_200``; otherwise a panel of at most 500 features is taken as proteins.

    Parameters
    ----------
    other
        The second modality's AnnData (cells x features); its first 2,000 ``var_names`` are
        inspected.

    Returns
    -------
    str
        ``"atac"`` or ``"protein"``.

    Raises
    ------
    CellBridgeInputError
        When the features are neither peak-like names nor a panel of at most 500 features.
    """
    names = pd.Index(other.var_names[: min(other.n_vars, 2000)]).astype(str)
    if len(names) and np.mean([bool(_PEAK_RE.match(n)) for n in names]) > 0.5:
        return "atac"
    if other.n_vars <= MAX_PROTEINS:
        return "protein"
    raise CellBridgeInputError(
        f"Cannot tell whether `other` ({other.n_vars} features, e.g. {list(names[:3])}) holds ATAC "
        'peaks or proteins; pass `modality="atac"` or `modality="protein"`.'
    )


def split_mudata(mdata, other) -> tuple[ad.AnnData, ad.AnnData, str | None]:
    """Return ``(rna, other, modality_hint)`` from a MuData (or pass AnnData pairs through).

    Parameters
    ----------
    mdata
        A MuData with an ``"rna"`` modality and exactly one of ``"atac"``, ``"peaks"``,
        ``"adt"``, ``"prot"``, ``"protein"``; or the RNA AnnData of a pair.
    other
        The second modality's AnnData when ``mdata`` is an AnnData; must be None when
        ``mdata`` is a MuData.

    Returns
    -------
    tuple
        ``(rna, other, modality_hint)``: the two AnnData objects and the modality the MuData
        key names (``"atac"`` or ``"protein"``), or None for an AnnData pair.
    """
    if not hasattr(mdata, "mod"):
        if other is None:
            raise CellBridgeInputError(
                "`other` is missing: pass the ATAC/ADT AnnData as the second argument, or one "
                'MuData with modalities "rna" and "atac"/"adt".'
            )
        return mdata, other, None
    mods = dict(mdata.mod)
    if "rna" not in mods:
        raise CellBridgeInputError(f'The MuData has no "rna" modality (has {list(mods)}); rename it.')
    keys = [k for k in mods if k.lower() in MODALITY_ALIASES]
    if other is not None or len(keys) != 1:
        raise CellBridgeInputError(
            f"The MuData must hold exactly one of {sorted(MODALITY_ALIASES)} beside 'rna' (has "
            f"{list(mods)}), and `other` must then be None."
        )
    return mods["rna"], mods[keys[0]], MODALITY_ALIASES[keys[0].lower()]


def align_cells(
    rna: ad.AnnData, other: ad.AnnData, *, min_cells_shared: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the shared cells in ``rna`` and ``other`` (in ``rna``'s order).

    Cells are matched by ``obs_names``; a :class:`CellBridgeWarning` reports cells without a
    partner, which are dropped.

    Parameters
    ----------
    rna
        The RNA AnnData.
    other
        The second modality's AnnData (ATAC or ADT) of the same cells.
    min_cells_shared
        Raise :class:`CellBridgeInputError` when fewer cell names are shared.

    Returns
    -------
    tuple of numpy.ndarray
        ``(rna_idx, other_idx)``: integer positions of the shared cells in ``rna`` and in
        ``other``, both in ``rna``'s order.
    """
    shared = rna.obs_names[rna.obs_names.isin(other.obs_names)]
    if len(shared) < min_cells_shared:
        raise CellBridgeInputError(
            f"Only {len(shared)} cell names are shared by `rna` ({rna.n_obs} cells, e.g. "
            f"{list(rna.obs_names[:2])}) and `other` ({other.n_obs}, e.g. {list(other.obs_names[:2])}); "
            f"at least {min_cells_shared} are needed. Paired data must use the same obs_names in "
            "both modalities — strip suffixes such as '_rna'/'_atac' first."
        )
    n_drop = rna.n_obs + other.n_obs - 2 * len(shared)
    if n_drop:
        warnings.warn(
            f"{rna.n_obs - len(shared)} RNA and {other.n_obs - len(shared)} other cells have no "
            "partner and were dropped.",
            CellBridgeWarning,
            stacklevel=3,
        )
    return rna.obs_names.get_indexer(shared), other.obs_names.get_indexer(shared)
