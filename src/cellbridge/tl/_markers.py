"""Marker genes of groups from RNA, from gene activity, and from BiCLUM's decoder; their agreement.

``source="rna"`` / ``"gene_activity"``: :func:`scanpy.tl.rank_genes_groups` (Wilcoxon by default)
on log-normalised values. ``source="decoder"``: BiCLUM's decoder predicts every model feature of
both modalities for any point of the joint space, x̂ = softplus(s) ⊙ (z vᵀ) + b; decoding each
group's centroid of the joint embedding gives a profile per group (the decoder is linear in z, so
this is also the mean decoded profile of the group's cells), and features are ranked by how far the
group's value lies above the other groups' (z-score across groups).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from .._errors import CellBridgeInputError, CellBridgeWarning
from ._tables import check_store, store_table

__all__ = ["MARKER_COLUMNS", "marker_agreement", "marker_genes"]

logger = logging.getLogger("cellbridge")

SOURCES = ("rna", "gene_activity", "decoder")
#: Columns of :func:`marker_genes`.
MARKER_COLUMNS = ["group", "rank", "gene", "score", "logfoldchange", "pvalue", "pvalue_adj", "source"]
_OTHER_NAMES = ("gene_activity", "atac", "gam", "other", "adt", "protein")
_MODALITIES = ("rna", "other")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def _modalities(data) -> dict[str, AnnData]:
    if isinstance(data, AnnData):
        return {"": data}
    if hasattr(data, "mod"):  # MuData
        return dict(data.mod)
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, Sequence) and all(isinstance(a, AnnData) for a in data):
        names = ("rna", "other")
        return {names[i] if i < 2 else f"mod{i}": a for i, a in enumerate(data)}
    raise CellBridgeInputError(
        f"`data` must be an AnnData, a MuData or a dict of AnnData, got {type(data).__name__}."
    )


def _pick(mods: dict[str, AnnData], source: str) -> tuple[str, AnnData]:
    if list(mods) == [""]:
        return "", mods[""]
    wanted = ("rna",) if source == "rna" else _OTHER_NAMES
    for name in wanted:
        if name in mods:
            return name, mods[name]
    if source == "gene_activity" and len(mods) == 2 and "rna" in mods:
        name = next(n for n in mods if n != "rna")
        return name, mods[name]
    raise CellBridgeInputError(
        f"source={source!r} needs a modality named one of {list(wanted)}; `data` holds "
        f"{list(mods)}. Pass that modality's AnnData directly."
    )


def _labels(adata: AnnData, groupby: str, name: str) -> pd.Series:
    if groupby not in adata.obs:
        raise CellBridgeInputError(
            f"`{name or 'data'}.obs` has no column {groupby!r} (columns: {list(adata.obs.columns)}); "
            "add the cluster labels first (e.g. `cellbridge.tl.leiden` on the joint embedding)."
        )
    col = adata.obs[groupby]
    if col.isna().any():
        raise CellBridgeInputError(
            f"`{name or 'data'}.obs[{groupby!r}]` has {int(col.isna().sum())} missing labels; drop "
            "those cells or label them (e.g. 'unknown')."
        )
    return col.astype(str)


def _input_names(adata: AnnData) -> pd.Index:
    """The features' names as the user's tables spell them: ``var["input_var_name"]`` where a
    joint result prefixed colliding names (``"gene_activity:CD4"``, see
    :func:`cellbridge.io.joint_mudata`), else ``var_names``."""
    if "input_var_name" in adata.var:
        return pd.Index(adata.var["input_var_name"].astype(str))
    return pd.Index(adata.var_names.astype(str))


def _looks_like_counts(X) -> bool:
    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    values = values[: 1 << 20]
    return bool(values.size) and bool(np.all(values >= 0)) and bool(np.allclose(values, np.round(values)))


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
def _rank_genes(adata: AnnData, labels: pd.Series, *, layer, method, normalize, n_genes, source):
    import scanpy as sc

    X = adata.X if layer is None else adata.layers[layer]
    if normalize is None:
        normalize = _looks_like_counts(X)
        logger.info("%s: values %s", source, "normalised and log1p" if normalize else "used as given")
    tmp = AnnData(sp.csr_matrix(X, dtype=np.float32, copy=True),
                  obs=pd.DataFrame({"group": pd.Categorical(labels.to_numpy())}, index=adata.obs_names),
                  var=pd.DataFrame(index=_input_names(adata)))
    sizes = tmp.obs["group"].value_counts()
    small = sizes.index[sizes < 3].tolist()
    if small:
        warnings.warn(f"groups {small} have fewer than 3 cells; no markers for them.",
                      CellBridgeWarning, stacklevel=3)
        tmp = tmp[~tmp.obs["group"].isin(small)].copy()
        tmp.obs["group"] = tmp.obs["group"].cat.remove_unused_categories()
    if tmp.obs["group"].nunique() < 2:
        raise CellBridgeInputError("marker genes need at least two groups with 3 or more cells.")
    if normalize:
        sc.pp.normalize_total(tmp)
        sc.pp.log1p(tmp)
    # ties corrected: sparse data are mostly zeros, and the uncorrected Wilcoxon variance then
    # hides even strong differences (on mop_snare peaks: no adjusted p below 0.05 at all)
    extra = {"tie_correct": True} if method == "wilcoxon" else {}
    with warnings.catch_warnings():  # features constant within the compared cells: NaN scores
        warnings.simplefilter("ignore", RuntimeWarning)
        sc.tl.rank_genes_groups(tmp, "group", method=method, use_raw=False, n_genes=tmp.n_vars, **extra)
    df = sc.get.rank_genes_groups_df(tmp, group=None)
    df = df.rename(columns={"names": "gene", "scores": "score", "logfoldchanges": "logfoldchange",
                            "pvals": "pvalue", "pvals_adj": "pvalue_adj"})
    df["group"] = df["group"].astype(str)
    df = df.fillna({"score": 0.0, "pvalue": 1.0, "pvalue_adj": 1.0})  # no difference: last
    df = df.sort_values(["group", "score"], ascending=[True, False], kind="stable")
    df["rank"] = df.groupby("group").cumcount()
    df = (df if n_genes is None else df[df["rank"] < n_genes]).assign(source=source)
    return df[MARKER_COLUMNS], list(tmp.var_names)


def _embedding(adata: AnnData, name: str, use_rep: str, model):
    if use_rep in adata.obsm:
        return np.asarray(adata.obsm[use_rep], dtype=np.float32)
    modality = "rna" if name == "rna" else "other"
    if model is not None and name in ("rna", *_OTHER_NAMES):
        return np.asarray(model.get_latent(adata, modality), dtype=np.float32)
    raise CellBridgeInputError(
        f"`{name or 'data'}.obsm` has no {use_rep!r} (keys: {list(adata.obsm)}); pass `use_rep=` the "
        "key of the joint embedding, or a MuData whose modalities are named 'rna' and 'atac'/'adt' "
        "so the model can embed them."
    )


def decoded_centroids(model, centroids: np.ndarray) -> dict[str, pd.DataFrame]:
    """Decoder prediction of every model feature at each centroid: ``{"rna": df, "other": df}``.

    Parameters
    ----------
    model
        A trained :class:`cellbridge.BiCLUM` (its :meth:`~cellbridge.BiCLUM.decode`).
    centroids
        Points of the joint space (rows x latent dimensions).

    Returns
    -------
    dict
        Per modality, rows = centroids, columns = features (decoder target units).
    """
    return {name: model.decode(centroids, name) for name in ("rna", "other")}


def _decoder_markers(mods, groupby, *, model, use_rep, n_genes, modality):
    if model is None or not hasattr(model, "decode"):
        raise CellBridgeInputError(
            "source='decoder' needs `model=` a trained BiCLUM model (it has `.decode` and "
            "`get_feature_embeddings()`)."
        )
    Z, labels = [], []
    for name, adata in mods.items():
        if groupby in adata.obs:
            labels.append(_labels(adata, groupby, name).to_numpy())
            Z.append(_embedding(adata, name, use_rep, model))
    if not Z:
        raise CellBridgeInputError(f"No modality of `data` has `obs[{groupby!r}]`; add cluster labels.")
    Z, labels = np.vstack(Z), np.concatenate(labels)
    groups = np.unique(labels)
    if len(groups) < 2:
        raise CellBridgeInputError("marker genes need at least two groups.")
    centroids = np.vstack([Z[labels == g].mean(0) for g in groups])
    decoded = decoded_centroids(model, centroids)
    wanted = list(_MODALITIES) if modality is None else [modality]
    frames, universe = [], {}
    for name in wanted:
        if name not in decoded:
            raise CellBridgeInputError(f"modality must be 'rna', 'other' or None, got {name!r}.")
        D = decoded[name].to_numpy(np.float64)
        sd = D.std(0)
        mean_others = (D.sum(0, keepdims=True) - D) / (len(groups) - 1)
        delta = D - mean_others
        score = (D - D.mean(0)) / np.where(sd > 0, sd, np.inf)
        for i, g in enumerate(groups):
            order = np.lexsort((-delta[i], -score[i]))[:n_genes]  # None: all
            frames.append(pd.DataFrame({
                "group": g, "rank": np.arange(len(order)), "gene": decoded[name].columns[order],
                "score": score[i, order], "logfoldchange": np.nan, "pvalue": np.nan,
                "pvalue_adj": np.nan, "source": f"decoder:{name}", "decoded": D[i, order],
                "delta": delta[i, order],
            }))
        universe[f"decoder:{name}"] = list(decoded[name].columns)
    return pd.concat(frames, ignore_index=True), universe


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def marker_genes(
    data,
    *,
    groupby: str,
    source: str = "rna",
    n_genes: int | None = 50,
    model=None,
    use_rep: str = "X_biclum",
    modality: str | None = None,
    layer: str | None = None,
    method: str = "wilcoxon",
    normalize: bool | None = None,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Top marker genes of each group from RNA, gene activity, or BiCLUM's decoder.

    Parameters
    ----------
    data
        A MuData (modalities ``"rna"`` and ``"atac"``/``"gene_activity"``, as a BiCLUM result), a
        dict of AnnData, or the one AnnData to test.
    groupby
        ``obs`` column with the groups (clusters / cell types).
    source
        ``"rna"`` or ``"gene_activity"``: :func:`scanpy.tl.rank_genes_groups` on that modality.
        ``"decoder"``: decode each group's centroid of the joint embedding (``obsm[use_rep]``
        of every modality that has ``obs[groupby]``, pooled) with ``model``.
    n_genes
        Markers kept per group (``None``: every feature, ranked).
    model
        Trained :class:`~cellbridge.BiCLUM` (``source="decoder"``); also embeds modalities that
        lack ``obsm[use_rep]``.
    use_rep
        ``obsm`` key of the joint embedding (decoder).
    modality
        Decoder: ``"rna"``, ``"other"`` or ``None`` (both; ``source`` values ``"decoder:rna"`` and
        ``"decoder:other"``).
    layer
        Layer to test instead of ``X`` (rank sources).
    method
        Test of :func:`scanpy.tl.rank_genes_groups` (``"wilcoxon"``, ``"t-test"``, ...).
    normalize
        Normalise per cell and log1p before testing; default: when the values are counts.
    key_added
        Also store the table in ``uns[key_added]`` of ``data`` (an AnnData or MuData; ``attrs``,
        the features tested included, in ``uns[f"{key_added}_attrs"]``), where
        :func:`gene_set_enrichment` finds it.

    Returns
    -------
    DataFrame ``group, rank, gene, score, logfoldchange, pvalue, pvalue_adj, source`` (rank 0 is
    the strongest; the decoder adds ``decoded``, its prediction, and ``delta``, minus the mean of
    the other groups, and has no p-values). ``df.attrs["features"]`` maps each source to the
    features tested (the universe of :func:`marker_agreement`).
    """
    if source not in SOURCES:
        raise CellBridgeInputError(f"source must be one of {SOURCES}, got {source!r}.")
    if n_genes is not None and n_genes < 1:
        raise CellBridgeInputError(f"`n_genes` must be at least 1, got {n_genes}.")
    check_store(data, key_added)
    mods = _modalities(data)
    if source == "decoder":
        df, universe = _decoder_markers(mods, groupby, model=model, use_rep=use_rep, n_genes=n_genes,
                                        modality=modality)
    else:
        name, adata = _pick(mods, source)
        if layer is not None and layer not in adata.layers:
            raise CellBridgeInputError(
                f"`{name or 'data'}` has no layer {layer!r} (layers: {list(adata.layers)}); pass "
                "`layer=None` to use `.X`."
            )
        df, features = _rank_genes(adata, _labels(adata, groupby, name), layer=layer, method=method,
                                   normalize=normalize, n_genes=n_genes, source=source)
        universe = {source: features}
    df = df.reset_index(drop=True)
    df.attrs["features"] = universe
    if key_added is not None:
        store_table(data, key_added, df)
    return df


def marker_agreement(
    markers: pd.DataFrame | Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame],
    *,
    n_genes: int = 50,
    universe: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Overlap of the top markers per group between sources, against random expectation.

    For each pair of sources, each source's top ``n_genes`` markers among the N features both
    tested are compared; the overlap of two random lists of sizes k₁, k₂ is hypergeometric with
    mean k₁k₂/N (k²/N for equal sizes). Pass full rankings (``marker_genes(..., n_genes=None)``)
    so that both lists hold exactly ``n_genes`` features of the common universe.

    Parameters
    ----------
    markers
        Output(s) of :func:`marker_genes` (each may hold several ``source`` values).
    n_genes
        Top markers per group and source compared.
    universe
        Features to compare over; default: the features both sources tested
        (``df.attrs["features"]``), else those appearing in their tables.

    Returns
    -------
    pandas.DataFrame
        One row per group and pair of sources: ``group, source_a, source_b, n_a, n_b,
        n_universe, overlap, expected, enrichment`` (overlap / expected), ``pvalue``
        (hypergeometric, overlap at least as large) and ``jaccard``.
    """
    frames = list(markers.values()) if isinstance(markers, Mapping) else (
        [markers] if isinstance(markers, pd.DataFrame) else list(markers))
    tested: dict[str, set] = {}
    for df in frames:
        for src, feats in df.attrs.get("features", {}).items():
            tested[src] = set(map(str, feats))
    table = pd.concat(frames, ignore_index=True)
    missing = [c for c in ("group", "rank", "gene", "source") if c not in table]
    if missing:
        raise CellBridgeInputError(f"`markers` lacks columns {missing}; pass outputs of `marker_genes`.")
    sources = list(pd.unique(table["source"]))
    if len(sources) < 2:
        raise CellBridgeInputError(f"marker_agreement needs two sources or more, got {sources}.")
    rows = []
    for i, a in enumerate(sources):
        for b in sources[i + 1:]:
            U = set(map(str, universe)) if universe is not None else (
                tested.get(a, set(table.loc[table.source == a, "gene"]))
                & tested.get(b, set(table.loc[table.source == b, "gene"])))
            N = len(U)
            # top n_genes of each source among the features both tested (exactly n_genes when
            # the tables hold full rankings, n_genes=None)
            top = table[table["source"].isin([a, b]) & table["gene"].astype(str).isin(U)]
            top = top.sort_values("rank", kind="stable").groupby(["source", "group"]).head(n_genes)
            lists = {(s, str(g)): set(map(str, d["gene"])) for (s, g), d in top.groupby(["source", "group"])}
            groups = sorted({g for s, g in lists if s == a} & {g for s, g in lists if s == b})
            for g in groups:
                la, lb = lists[(a, g)], lists[(b, g)]
                o = len(la & lb)
                exp = len(la) * len(lb) / N if N else np.nan
                rows.append({"group": g, "source_a": a, "source_b": b, "n_a": len(la), "n_b": len(lb),
                             "n_universe": N, "overlap": o, "expected": exp,
                             "enrichment": o / exp if exp else np.nan,
                             "pvalue": float(stats.hypergeom.sf(o - 1, N, len(la), len(lb))) if N else np.nan,
                             "jaccard": o / len(la | lb) if la | lb else np.nan})
    if not rows:
        raise CellBridgeInputError("The sources share no group; compute their markers with the same `groupby`.")
    return pd.DataFrame(rows)
