"""Hand-offs to the field's libraries: transcription-factor activity with decoupler and cell-cell
interactions with liana, on RNA or on gene activity, per cell or per group of the integration.

Both packages are optional (``pip install "cellbridge[biology]"``) and nothing is downloaded: the
regulons and the ligand-receptor resource are the user's tables. Groups come from ``obs[groupby]``
of the modality analysed; cells without labels there (the ATAC or ADT cells of an unpaired
integration) get them by :func:`~cellbridge.tl.transfer_labels` from the labelled cells of the other
modalities through the joint embedding ``obsm[use_rep]``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import CellBridgeInputError, CellBridgeWarning
from ._handoff_inputs import _group_labels, _log_values, _modality, _read_table, _require, _usable_groups
from ._markers import _input_names
from ._tables import check_store, store_table

__all__ = ["LIANA_METHODS", "cell_interactions", "tf_activity"]

#: liana's single-cell methods (``rank_aggregate``: the consensus of the others).
LIANA_METHODS = ("rank_aggregate", "cellphonedb", "connectome", "logfc", "natmi", "singlecellsignalr",
                 "geometric_mean", "scseqcomm", "cellchat")
_MIN_GROUP_CELLS = 3


# --------------------------------------------------------------------------------------------
# TF activity (decoupler)
# --------------------------------------------------------------------------------------------
def _regulons(regulons, var_names: pd.Index, name: str, tmin: int) -> pd.DataFrame:
    net = _read_table(regulons, what="regulon", columns=("source", "target"))
    if "weight" not in net:
        net["weight"] = 1.0
    weight = pd.to_numeric(net["weight"], errors="coerce")
    if not np.isfinite(weight).all():
        raise CellBridgeInputError("The regulon table's `weight` column must hold finite numbers (e.g. +1 / -1).")
    net = net.assign(source=net["source"].astype(str), target=net["target"].astype(str), weight=weight)
    dup = net.duplicated(["source", "target"])
    if dup.any():
        raise CellBridgeInputError(
            f"The regulon table repeats {int(dup.sum())} source-target pairs; keep one row per pair, e.g. "
            "`net.drop_duplicates(['source', 'target'])`."
        )
    shared = net["target"].isin(set(var_names))
    if not shared.any():
        raise CellBridgeInputError(
            f"No target of the regulon table (e.g. {net['target'].head(3).tolist()}) is in "
            f"`{name or 'data'}.var_names` (e.g. {list(var_names[:3])}); use the same gene identifiers "
            "(symbols or Ensembl IDs, and the species' spelling: 'Sox2' in mouse, 'SOX2' in human)."
        )
    sizes = net[shared].groupby("source").size()
    kept = sizes.index[sizes >= tmin]
    if len(kept) == 0:
        raise CellBridgeInputError(
            f"No source of the regulon table has `tmin={tmin}` targets in `{name or 'data'}` (at most "
            f"{int(sizes.max())}); lower `tmin` or pass a larger regulon."
        )
    dropped = sorted(map(str, set(net["source"]) - set(kept)))
    if dropped:
        warnings.warn(f"{len(dropped)} regulon sources with fewer than {tmin} targets in the data are left out "
                      f"(e.g. {dropped[:5]}).", CellBridgeWarning, stacklevel=3)
    return net[net["source"].isin(set(kept))][["source", "target", "weight"]].reset_index(drop=True)


def tf_activity(
    data,
    *,
    regulons: pd.DataFrame | str | os.PathLike,
    modality: str = "rna",
    groupby: str | None = None,
    method: str = "ulm",
    layer: str | None = None,
    normalize: bool | None = None,
    tmin: int = 5,
    use_rep: str | None = None,
    k: int = 15,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Transcription-factor (or any regulator's) activity with decoupler, per cell or per group.

    Each cell's log-normalised profile of ``modality`` is scored against the user's regulons by a
    decoupler method (default ``ulm``: the t-value of a univariate linear model of the profile on
    the regulon weights). With ``groupby``, the cells' activities are compared between groups with
    decoupler's ``rankby_group`` (Welch t-test of a group against the rest, Benjamini-Hochberg
    within the group).

    Parameters
    ----------
    data
        A MuData (e.g. a BiCLUM result), a dict of AnnData, or one AnnData.
    regulons
        DataFrame or TSV/CSV path with columns ``source`` (regulator), ``target`` (gene) and
        optionally ``weight`` (mode of regulation, default 1). Nothing is downloaded.
    modality
        ``"rna"``, ``"gene_activity"`` (the ATAC cells' gene activity) or a modality's name.
    groupby
        ``obs`` column with groups (clusters, cell types): activity per group; ``None``: per cell.
        Cells of ``modality`` without labels get them transferred through ``obsm[use_rep]``.
    method
        A decoupler method (``dc.mt``: ``ulm``, ``mlm``, ``waggr``, ``viper``, ``zscore``, ...).
    layer
        Layer to score instead of ``X``.
    normalize
        Normalise per cell and log1p first; default: when the values are counts.
    tmin
        Regulators with fewer targets among the data's features are left out (decoupler's ``tmin``).
    use_rep
        ``obsm`` key of the joint embedding, for the label transfer.
    k
        Neighbours that vote in the label transfer.
    key_added
        Also store the result: per cell, the scores in ``obsm[key_added]`` and the adjusted
        p-values in ``obsm[f"{key_added}_padj"]`` of the modality; per group, the table in
        ``uns[key_added]`` of ``data`` (a DataFrame that writes to ``.h5mu``, its ``attrs`` in
        ``uns[f"{key_added}_attrs"]``).

    Returns
    -------
    pandas.DataFrame
        Per cell: cells x regulators scores (cells that express no feature get NaN; decoupler's
        adjusted p-values go to ``obsm[f"{key_added}_padj"]`` with ``key_added``). Per group:
        ``group, source, score`` (mean activity of the group's cells), ``statistic``,
        ``meanchange`` (group minus rest), ``pvalue``, ``padj``, ``n_cells``, sorted by group and
        decreasing statistic. ``df.attrs["tf_activity"]``
        records the settings (and whether labels were transferred).
    """
    dc = _require("decoupler", "tf_activity")
    methods = [m.name for m in dc.mt._methods]
    if method not in methods:
        raise CellBridgeInputError(f"`method` must be a decoupler method ({methods}), got {method!r}.")
    name, adata, _ = _modality(data, modality)
    if groupby is not None:
        check_store(data, key_added)
    features = _input_names(adata)
    net = _regulons(regulons, features, name, tmin)
    labels, info = (_group_labels(data, name, groupby, use_rep=use_rep, k=k) if groupby is not None
                    else (None, {}))
    if labels is not None:
        labels = _usable_groups(labels, _MIN_GROUP_CELLS, groupby, name)
    X = _log_values(adata, layer, normalize, name)
    tmp = AnnData(X, obs=pd.DataFrame(index=adata.obs_names.astype(str)), var=pd.DataFrame(index=features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        repaired = getattr(dc.mt, method)(tmp, net, tmin=tmin, verbose=False)
    tmp = repaired if repaired is not None else tmp  # decoupler drops cells that express nothing
    scores = pd.DataFrame(tmp.obsm[f"score_{method}"]).reindex(adata.obs_names.astype(str))
    padj = tmp.obsm.get(f"padj_{method}")
    padj = None if padj is None else pd.DataFrame(padj).reindex(adata.obs_names.astype(str))
    settings = {"method": method, "modality": name, "groupby": groupby, "tmin": tmin, "n_sources":
                int(scores.shape[1]), **info}
    if groupby is None:
        scores.attrs = {"tf_activity": settings}
        if key_added is not None:
            adata.obsm[key_added] = scores.set_axis(adata.obs_names, axis=0)
            if padj is not None:
                adata.obsm[f"{key_added}_padj"] = padj.set_axis(adata.obs_names, axis=0)
        return scores
    table = _rank_groups(dc, scores, labels)
    table.attrs["tf_activity"] = settings
    if key_added is not None:
        store_table(data, key_added, table)
    return table


def _rank_groups(dc, scores: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """decoupler's ``rankby_group`` on the cells' scores (cells without a score or label left out)."""
    cells = scores.index[scores.notna().all(axis=1) & scores.index.isin(labels.index.astype(str))]
    group = labels.set_axis(labels.index.astype(str)).loc[cells]
    act = AnnData(scores.loc[cells].to_numpy(np.float64), obs=pd.DataFrame({"group": group.to_numpy()}, index=cells),
                  var=pd.DataFrame(index=scores.columns.astype(str)))
    ranked = dc.tl.rankby_group(act, groupby="group", reference="rest", method="t-test_overestim_var")
    ranked = ranked.rename(columns={"name": "source", "stat": "statistic", "pval": "pvalue"})
    ranked = ranked.assign(group=ranked["group"].astype(str), source=ranked["source"].astype(str))
    means = pd.DataFrame(act.X, index=cells, columns=act.var_names).groupby(group.to_numpy()).mean()
    long = means.stack().rename("score").rename_axis(["group", "source"]).reset_index()
    out = ranked.merge(long, on=["group", "source"], how="left")
    out["n_cells"] = out["group"].map(group.value_counts()).astype(int)
    out = out.sort_values(["group", "statistic"], ascending=[True, False], kind="stable").reset_index(drop=True)
    return out[["group", "source", "score", "statistic", "meanchange", "pvalue", "padj", "n_cells"]]


# --------------------------------------------------------------------------------------------
# cell-cell interactions (liana)
# --------------------------------------------------------------------------------------------
def _resource(resource, var_names: pd.Index, name: str) -> pd.DataFrame:
    res = _read_table(resource, what="ligand-receptor resource", columns=("ligand", "receptor"))
    res = res[["ligand", "receptor"]].astype(str).drop_duplicates().reset_index(drop=True)
    genes = set(var_names)

    def present(complexes: pd.Series) -> np.ndarray:  # liana writes complexes as "A_B"
        return np.array([all(g in genes for g in c.split("_")) for c in complexes], dtype=bool)

    if not (present(res["ligand"]) & present(res["receptor"])).any():
        example = res["ligand"].head(2).tolist() + res["receptor"].head(1).tolist()
        raise CellBridgeInputError(
            f"No ligand-receptor pair of the resource has both partners in `{name or 'data'}.var_names` "
            f"(resource genes e.g. {example}, data e.g. {list(var_names[:3])}); use the same gene identifiers "
            "and species."
        )
    return res


def cell_interactions(
    data,
    *,
    groupby: str,
    resource: pd.DataFrame | str | os.PathLike,
    modality: str = "rna",
    method: str = "rank_aggregate",
    layer: str | None = None,
    normalize: bool | None = None,
    expr_prop: float = 0.1,
    min_cells: int = 5,
    n_perms: int = 1000,
    seed: int = 0,
    use_rep: str | None = None,
    k: int = 15,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Cell-cell interactions between the integration's groups with liana.

    The groups are ``obs[groupby]`` of ``modality``; cells without them (e.g. the ATAC cells of an
    unpaired RNA + ATAC integration, when ``modality="gene_activity"``) get the labels of their
    nearest labelled cells in the joint embedding (:func:`~cellbridge.tl.transfer_labels`), so that
    every modality is read with the same integrated labels.

    Parameters
    ----------
    data
        A MuData (e.g. a BiCLUM result), a dict of AnnData, or one AnnData.
    groupby
        ``obs`` column with the groups (cell types, clusters).
    resource
        DataFrame or TSV/CSV path with columns ``ligand`` and ``receptor`` (complexes as
        ``"A_B"``, liana's convention). Nothing is downloaded.
    modality
        ``"rna"`` (expression), ``"gene_activity"`` or a modality's name.
    method
        ``"rank_aggregate"`` (liana's consensus of its methods) or one of :data:`LIANA_METHODS`.
    layer
        Layer to read instead of ``X``.
    normalize
        Normalise per cell and log1p first; default: when the values are counts.
    expr_prop
        Both partners must be expressed in at least this fraction of the cells of their group.
    min_cells
        Groups with fewer cells are left out (liana's ``min_cells``).
    n_perms
        Permutations of the permutation-based methods.
    seed
        Seed of the permutations.
    use_rep
        ``obsm`` key of the joint embedding, for the label transfer.
    k
        Neighbours that vote in the label transfer.
    key_added
        Also store the table in ``uns[key_added]`` of ``data``.

    Returns
    -------
    pandas.DataFrame
        liana's table (``source`` and ``target`` groups, ``ligand_complex``, ``receptor_complex``
        and the method's scores, e.g. ``magnitude_rank`` and ``specificity_rank`` for
        ``rank_aggregate``: lower is stronger). ``df.attrs["cell_interactions"]`` records the
        settings and whether labels were transferred.
    """
    li = _require("liana", "cell_interactions")
    if method not in LIANA_METHODS:
        raise CellBridgeInputError(f"`method` must be one of {LIANA_METHODS}, got {method!r}.")
    if not 0 <= expr_prop <= 1:
        raise CellBridgeInputError(f"`expr_prop` is a fraction of cells in [0, 1], got {expr_prop}.")
    name, adata, _ = _modality(data, modality)
    check_store(data, key_added)
    features = _input_names(adata)
    res = _resource(resource, features, name)
    labels, info = _group_labels(data, name, groupby, use_rep=use_rep, k=k)
    labels = _usable_groups(labels, min_cells, groupby, name)
    X = _log_values(adata, layer, normalize, name)
    rows = adata.obs_names.get_indexer(labels.index)
    tmp = AnnData(X[rows], obs=pd.DataFrame({"group": pd.Categorical(labels.to_numpy())},
                                            index=labels.index.astype(str)),
                  var=pd.DataFrame(index=features))
    with warnings.catch_warnings():  # liana's own scaling and pandas deprecations: not the user's to fix
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="zero-centering a sparse")
        warnings.filterwarnings("ignore", message="Setting element `.layers")
        getattr(li.mt, method)(tmp, groupby="group", resource=res, expr_prop=expr_prop, min_cells=min_cells,
                               use_raw=False, n_perms=n_perms, seed=seed, verbose=False, key_added="liana_res")
    table = tmp.uns["liana_res"].reset_index(drop=True)
    table.attrs["cell_interactions"] = {"method": method, "modality": name, "groupby": groupby,
                                        "expr_prop": expr_prop, "min_cells": min_cells, "n_pairs": len(table),
                                        **info}
    if key_added is not None:
        store_table(data, key_added, table)
    return table
