"""Cell groups of gene-peak links: which RNA and ATAC cells are correlated together.

Paired data: the cells present in both modalities (matched by name), each its own group or in
metacells of the RNA embedding. Unpaired data: metacells of the joint embedding (k-means on the
stacked RNA and ATAC cells), kept when they hold cells of both modalities. With ``groupby``, the
cells of each value of the column are grouped separately (cluster-specific links).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import CellBridgeInputError, CellBridgeWarning

_MIN_GROUPS = 5  # fewest groups a correlation is computed over


def _embedding(adata: AnnData, use_rep: str, name: str) -> np.ndarray:
    if use_rep not in adata.obsm:
        raise CellBridgeInputError(
            f"`{name}.obsm` has no {use_rep!r} (keys: {list(adata.obsm)}); pass `use_rep=` the key "
            "of the joint embedding, e.g. `rna.obsm['X_biclum'] = model.get_latent(rna)`."
        )
    Z = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    if Z.ndim != 2 or not np.isfinite(Z).all():
        raise CellBridgeInputError(f"`{name}.obsm[{use_rep!r}]` must be a finite cells x dims array.")
    return Z


def _atac_embedding(atac: AnnData, atac_embedding, use_rep: str) -> np.ndarray:
    """Embedding of the ATAC cells: ``atac.obsm[use_rep]`` or ``atac_embedding`` matched by name."""
    if atac_embedding is None:
        if use_rep not in atac.obsm:
            raise CellBridgeInputError(
                f"`atac.obsm` has no {use_rep!r}; pass `atac_embedding=` the AnnData of the result "
                "that holds the ATAC cells' embedding (e.g. the gene-activity modality of a BiCLUM "
                "result, `mdata['atac']`), or `paired=True` when RNA and ATAC are the same cells."
            )
        return _embedding(atac, use_rep, "atac")
    if isinstance(atac_embedding, AnnData):
        frame = pd.DataFrame(_embedding(atac_embedding, use_rep, "atac_embedding"),
                             index=atac_embedding.obs_names)
    elif isinstance(atac_embedding, pd.DataFrame):
        frame = atac_embedding
    else:
        Z = np.asarray(atac_embedding, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[0] != atac.n_obs:
            raise CellBridgeInputError(
                f"`atac_embedding` has shape {Z.shape}; an array needs one row per ATAC cell "
                f"({atac.n_obs}). Pass an AnnData or DataFrame to match cells by name."
            )
        return Z
    pos = frame.index.get_indexer(atac.obs_names)
    missing = int((pos < 0).sum())
    if missing:
        example = atac.obs_names[int(np.flatnonzero(pos < 0)[0])]
        raise CellBridgeInputError(
            f"{missing} of {atac.n_obs} cells of the peak matrix `atac` (e.g. {example!r}) are not "
            "in the embedding; pass the peak matrix of the cells that were integrated, e.g. "
            "`atac[atac.obs_names.isin(result_atac.obs_names)]`, with matching cell names."
        )
    return frame.to_numpy(dtype=np.float64)[pos]


def _metacells(Z_rna, Z_atac, n_groups: int, min_cells: int, seed: int):
    """k-means of the stacked embedding; groups with fewer than ``min_cells`` of a modality dropped."""
    from sklearn.cluster import KMeans

    Z = np.vstack([Z_rna, Z_atac])
    n_groups = min(n_groups, Z.shape[0])
    labels = KMeans(n_clusters=n_groups, n_init=1, random_state=seed).fit_predict(Z)
    g_rna, g_atac = labels[: len(Z_rna)], labels[len(Z_rna):]
    n_r = np.bincount(g_rna, minlength=n_groups)
    n_a = np.bincount(g_atac, minlength=n_groups)
    keep = (n_r >= min_cells) & (n_a >= min_cells)
    if keep.sum() < _MIN_GROUPS:
        single = int(((n_r > 0) != (n_a > 0)).sum())
        raise CellBridgeInputError(
            f"Only {int(keep.sum())} of {n_groups} groups of the joint embedding hold at least "
            f"{min_cells} cells of BOTH modalities ({single} hold a single modality): the embedding "
            "does not mix RNA and ATAC cells. Pass the joint embedding as `use_rep` (e.g. BiCLUM's, "
            "not a per-modality PCA), or lower `n_groups` / `min_cells_per_group`."
        )
    new = np.full(n_groups, -1)
    new[keep] = np.arange(int(keep.sum()))
    return new[g_rna], new[g_atac], int(keep.sum())


def _metacells_paired(Z, n_groups: int, seed: int):
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=min(n_groups, len(Z)), n_init=1, random_state=seed).fit_predict(Z)
    codes, labels = np.unique(labels, return_inverse=True)
    return labels, labels, len(codes)


def _labels(adata: AnnData, groupby: str, name: str, fallback: AnnData | None = None) -> np.ndarray:
    for source in (adata, fallback):
        if source is not None and groupby in source.obs:
            col = source.obs[groupby]
            if source is adata:
                return col.astype(str).to_numpy()
            pos = source.obs_names.get_indexer(adata.obs_names)
            if (pos >= 0).all():
                return col.astype(str).to_numpy()[pos]
    raise CellBridgeInputError(
        f"`{name}.obs` has no column {groupby!r} (columns: {list(adata.obs.columns)}); add the "
        "cluster labels of these cells (e.g. transferred with `cellbridge.tl.transfer_labels`)."
    )


def _cell_setup(rna, atac, *, use_rep, atac_embedding, paired, groupby, n_groups,
                min_level_cells: int = 20) -> dict:
    """Cell indices (and embeddings) of each group value; paired cells aligned by name."""
    if paired:
        pos = atac.obs_names.get_indexer(rna.obs_names)
        r_all = np.flatnonzero(pos >= 0)
        if len(r_all) == 0:
            raise CellBridgeInputError(
                "`paired=True` but no cell name of `rna` is in `atac.obs_names` (e.g. "
                f"{rna.obs_names[0]!r} vs {atac.obs_names[0]!r}); give both the same cell names, "
                "or pass `paired=False` with a joint embedding."
            )
        if len(r_all) < rna.n_obs or len(r_all) < atac.n_obs:
            warnings.warn(f"paired: {len(r_all)} cells are in both `rna` ({rna.n_obs}) and `atac` "
                          f"({atac.n_obs}); only those are used.", CellBridgeWarning, stacklevel=3)
        a_all = pos[r_all]
        Z_r = _embedding(rna, use_rep, "rna")[r_all] if n_groups is not None else None
        Z_a = None
        labels = _labels(rna, groupby, "rna", atac)[r_all] if groupby else None
        labels_a = labels
    else:
        Z_r = _embedding(rna, use_rep, "rna")
        Z_a = _atac_embedding(atac, atac_embedding, use_rep)
        if Z_r.shape[1] != Z_a.shape[1]:
            raise CellBridgeInputError(
                f"The RNA embedding has {Z_r.shape[1]} dimensions but the ATAC one {Z_a.shape[1]}; "
                "both must come from the same joint embedding."
            )
        r_all, a_all = np.arange(rna.n_obs), np.arange(atac.n_obs)
        labels = _labels(rna, groupby, "rna") if groupby else None
        extra = atac_embedding if isinstance(atac_embedding, AnnData) else None
        labels_a = _labels(atac, groupby, "atac", extra) if groupby else None
    if groupby is None:
        return {"levels": {None: (r_all, a_all, Z_r, Z_a)}, "skipped": []}
    levels, skipped = {}, []
    for level in pd.unique(np.concatenate([labels, labels_a])):
        r_sel, a_sel = labels == level, labels_a == level
        if min(r_sel.sum(), a_sel.sum()) < min_level_cells:
            skipped.append(str(level))
            continue
        levels[level] = (r_all[r_sel], a_all[a_sel], None if Z_r is None else Z_r[r_sel],
                         None if Z_a is None else Z_a[a_sel])
    if skipped:
        warnings.warn(f"groups {skipped} have fewer than {min_level_cells} cells of a modality; no "
                      "links are computed for them.", CellBridgeWarning, stacklevel=3)
    if not levels:
        raise CellBridgeInputError(
            f"No value of `{groupby}` has {min_level_cells} cells in both modalities; pass a "
            "coarser `groupby`."
        )
    return {"levels": levels, "skipped": skipped}
