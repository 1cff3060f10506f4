"""Plots: UMAP of a joint embedding (through scanpy's embedding plot), training curves, the
label-transfer confusion matrix and per-cell alignment confidence.

Every function takes an AnnData or MuData (or plain arrays where that is natural), works under the
non-interactive Agg backend, and, like scanpy, takes ``save=`` (write the figure) and ``show=``
(display it). The figure is returned unless it was shown.

A MuData result is plotted through its joint layout: the top-level ``obsm["X_biclum"]`` /
``obsm["X_scmdcf"]`` with ``obs["modality"]`` when present, otherwise the modalities' own
``obsm`` stacked (cells of every modality in one plot).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._errors import CellBridgeInputError
from ._utils import atomic_write

logger = logging.getLogger("cellbridge")

__all__ = [
    "alignment_confidence",
    "confusion_matrix",
    "embedding",
    "training_history",
    "umap",
    "umap_coordinates",
]

#: ``obsm`` keys of joint embeddings, tried in this order when ``use_rep`` is not given
JOINT_KEYS = ("X_biclum", "X_scmdcf")
#: matplotlib backends that draw only to files (``show=None`` never shows with them)
_FILE_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


# ------------------------------------------------------------------------------------ layout
def umap_coordinates(emb: np.ndarray, *, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """2-D UMAP coordinates of an embedding; 2-D input is returned unchanged.

    The neighbour graph comes from :func:`cellbridge.neighbors.knn_graph` (the same UMAP fuzzy weights
    as ``scanpy.pp.neighbors``, without its numba compilation); the layout from ``scanpy.tl.umap``.
    Rows with non-finite values (cells a model dropped) get NaN coordinates.

    Parameters
    ----------
    emb
        Cells x dimensions array.
    n_neighbors
        Neighbours per cell in the UMAP graph (the cell itself not counted).
    seed
        Seed of the UMAP layout.

    Returns
    -------
    numpy.ndarray
        Cells x 2 coordinates.
    """
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] < 3:
        raise CellBridgeInputError(
            f"need a cells x dimensions array with at least 3 cells to plot, got shape {emb.shape}."
        )
    if emb.shape[1] <= 2:
        return np.pad(emb, ((0, 0), (0, 2 - emb.shape[1])))
    finite = np.isfinite(emb).all(axis=1)
    if finite.sum() < 3:
        raise CellBridgeInputError(f"only {int(finite.sum())} cells have a finite embedding; nothing to lay out.")
    if not finite.all():
        out = np.full((emb.shape[0], 2), np.nan, dtype=np.float32)
        out[finite] = umap_coordinates(emb[finite], n_neighbors=n_neighbors, seed=seed)
        return out
    import scanpy as sc

    from .neighbors import knn_graph

    n = emb.shape[0]
    k = min(n_neighbors, n - 1)
    tmp = AnnData(np.zeros((n, 0), dtype=np.float32), obsm={"X_emb": emb})
    tmp.obsp["connectivities"] = knn_graph(emb, n_neighbors=k)
    tmp.obsp["distances"] = sp.csr_matrix((n, n), dtype=np.float32)
    tmp.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {"n_neighbors": k + 1, "method": "umap", "use_rep": "X_emb", "random_state": seed},
    }
    sc.tl.umap(tmp, random_state=seed)
    return np.asarray(tmp.obsm["X_umap"], dtype=np.float32)


def _auto_rep(obsm_keys, use_rep: str | None, where: str) -> str:
    if use_rep is not None:
        if use_rep not in obsm_keys:
            raise CellBridgeInputError(
                f"{where} has no obsm[{use_rep!r}]; available: {sorted(obsm_keys)}. Pass `use_rep=` naming "
                "the joint embedding (e.g. the key written by the model)."
            )
        return use_rep
    for key in JOINT_KEYS:
        if key in obsm_keys:
            return key
    raise CellBridgeInputError(
        f"{where} holds no joint embedding ({' or '.join(JOINT_KEYS)}); available obsm keys: "
        f"{sorted(obsm_keys)}. Pass `use_rep=` naming the embedding to plot."
    )


class _Joint:
    """One AnnData of the cells to plot, and the objects a computed UMAP is written back into.

    ``stacked``: the targets' cells follow each other in ``adata`` (each gets its block);
    otherwise every target holds all of ``adata``'s cells (each gets the whole layout).
    """

    def __init__(self, adata: AnnData, rep: str, targets: list, *, stacked: bool = False):
        self.adata, self.rep, self.targets, self.stacked = adata, rep, targets, stacked

    def stored(self, key: str) -> tuple[np.ndarray, dict] | None:
        """The layout already stored under ``key`` in every target, with its parameters."""
        if not self.targets or any(key not in obj.obsm for obj in self.targets):
            return None
        blocks = [np.asarray(obj.obsm[key]) for obj in self.targets]
        xy = np.vstack(blocks) if self.stacked else blocks[0]
        entry = self.targets[0].uns.get(_uns_key(key), {})
        params = dict(entry.get("params", {})) if isinstance(entry, Mapping) else {}
        return (xy, params) if xy.shape[0] == self.adata.n_obs and xy.ndim == 2 else None

    def store(self, key: str, xy: np.ndarray, params: dict) -> None:
        start = 0
        for obj in self.targets:
            part = xy[start:start + obj.n_obs] if self.stacked else xy
            start += obj.n_obs
            obj.obsm[key] = part
            obj.uns[_uns_key(key)] = {"params": params}


def _uns_key(key: str) -> str:
    return key.removeprefix("X_")


def _joint(data, use_rep: str | None) -> _Joint:
    """Resolve the input to one AnnData (obs + the embedding) without copying the matrices.

    The returned AnnData is a new object: scanpy may change its ``obs`` (strings to categories)
    without touching the user's data.
    """
    import mudata as md

    if isinstance(data, AnnData):
        rep = _auto_rep(data.obsm.keys(), use_rep, "`adata`")
        view = AnnData(obs=data.obs.copy(), obsm={rep: np.asarray(data.obsm[rep])}, uns=_colour_uns(data.uns))
        return _Joint(view, rep, [data])
    if isinstance(data, md.MuData):
        return _joint_mudata(data, use_rep)
    if isinstance(data, (np.ndarray, sp.spmatrix)) or (isinstance(data, Sequence) and not isinstance(data, str)):
        emb = data.toarray() if sp.issparse(data) else np.asarray(data, dtype=float)
        if emb.ndim != 2:
            raise CellBridgeInputError(f"an array to plot must be cells x dimensions, got shape {emb.shape}.")
        view = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(emb.shape[0])]), obsm={"X_emb": emb})
        return _Joint(view, "X_emb", [])
    raise CellBridgeInputError(
        f"cannot plot a {type(data).__name__}; pass an AnnData, a MuData or a cells x dimensions array."
    )


def _colour_uns(uns: Mapping) -> dict:
    """The ``*_colors`` palettes of ``uns`` (scanpy's per-column colours), nothing else."""
    return {k: v for k, v in uns.items() if isinstance(k, str) and k.endswith("_colors")}


def _joint_mudata(mdata, use_rep: str | None) -> _Joint:
    keys = set(mdata.obsm.keys())
    if use_rep in keys or (use_rep is None and keys & set(JOINT_KEYS)):
        rep = _auto_rep(keys, use_rep, "the MuData")
        obs = mdata.obs.copy()
        for column in _shared_columns(mdata):  # "rna:cell_type", "atac:cell_type" -> "cell_type"
            if column not in obs:
                obs[column] = _coalesce([obs[f"{m}:{column}"] for m in mdata.mod if f"{m}:{column}" in obs])
        view = AnnData(obs=obs, obsm={rep: np.asarray(mdata.obsm[rep])}, uns=_colour_uns(mdata.uns))
        return _Joint(view, rep, [mdata])
    wanted = (use_rep,) if use_rep else JOINT_KEYS
    mods = {name: m for name, m in mdata.mod.items() if any(k in m.obsm for k in wanted)}
    if not mods:
        found = {name: sorted(m.obsm.keys()) for name, m in mdata.mod.items()}
        raise CellBridgeInputError(
            f"the MuData holds no joint embedding {use_rep or ' / '.join(JOINT_KEYS)} at the top level or in a "
            f"modality (obsm keys: top level {sorted(keys)}, modalities {found}); pass `use_rep=`."
        )
    rep = _auto_rep(set.intersection(*(set(m.obsm.keys()) for m in mods.values())), use_rep,
                    f"modalities {list(mods)}")
    arrays = [np.asarray(m.obsm[rep]) for m in mods.values()]
    first = next(iter(mods.values()))
    same_cells = all(m.obs_names.equals(first.obs_names) and np.array_equal(a, arrays[0], equal_nan=True)
                     for m, a in zip(mods.values(), arrays))
    if same_cells and len(mods) > 1:  # paired result: one fused embedding copied into each modality
        obs = pd.concat([m.obs for m in mods.values()], axis=1)
        obs = obs.loc[:, ~obs.columns.duplicated()]
        view = AnnData(obs=obs, obsm={rep: arrays[0]}, uns=_colour_uns(mdata.uns))
        return _Joint(view, rep, list(mods.values()))
    frames = []
    for name, m in mods.items():
        frame = m.obs.copy()
        frame.index = [f"{name}:{c}" for c in m.obs_names]
        frame["modality"] = name
        frames.append(frame)
    obs = pd.concat(frames, axis=0, join="outer")
    obs["modality"] = pd.Categorical(obs["modality"], categories=list(mods))
    view = AnnData(obs=obs, obsm={rep: np.vstack(arrays)}, uns=_colour_uns(mdata.uns))
    return _Joint(view, rep, list(mods.values()), stacked=True)


def _shared_columns(mdata) -> list[str]:
    names = [c.split(":", 1)[1] for c in mdata.obs.columns if ":" in c and c.split(":", 1)[0] in mdata.mod]
    return list(dict.fromkeys(names))


def _coalesce(columns: list[pd.Series]) -> pd.Series:
    out = columns[0].astype(object)
    for column in columns[1:]:
        out = out.where(out.notna(), column.astype(object))
    return out


def _layout(joint: _Joint, *, key_added: str, recompute: bool, n_neighbors: int, seed: int) -> str:
    """Make sure ``joint.adata.obsm[key_added]`` holds the UMAP of ``joint.rep``; return the key."""
    emb = np.asarray(joint.adata.obsm[joint.rep])
    if emb.shape[1] <= 2:
        return joint.rep
    params = {"use_rep": joint.rep, "n_neighbors": int(n_neighbors), "random_state": int(seed)}
    stored = None if recompute else joint.stored(key_added)
    if stored is not None and stored[1].get("use_rep", joint.rep) == joint.rep:
        joint.adata.obsm[key_added] = stored[0]
        return key_added
    if stored is not None:
        logger.info("obsm[%r] holds the UMAP of %r, not %r: recomputing it", key_added, stored[1]["use_rep"], joint.rep)
    xy = umap_coordinates(emb, n_neighbors=n_neighbors, seed=seed)
    joint.adata.obsm[key_added] = xy
    joint.store(key_added, xy, params)
    return key_added


# ------------------------------------------------------------------------------------ output
def _should_show(show: bool | None, save) -> bool:
    if show is not None:
        return bool(show)
    import matplotlib

    return save in (None, False) and matplotlib.get_backend().lower() not in _FILE_BACKENDS


def _finish(fig, *, save, show: bool | None, overwrite: bool, default_name: str):
    """Save and/or show ``fig`` as scanpy does; return it unless it was shown."""
    import matplotlib.pyplot as plt

    if save not in (None, False):
        path = _save_path(save, default_name)
        fmt = path.suffix.lstrip(".").lower() or "png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"),
                     overwrite=overwrite, suffix=f".{fmt}.tmp")
        logger.info("saved figure to %s", path)
    if _should_show(show, save):
        plt.show()
        return None
    return fig


def _save_path(save, default_name: str) -> Path:
    """scanpy's rule (True: ``figdir/<name>.png``; a str without a folder: suffix of the name, in
    ``figdir``), plus a path with a folder (or any ``os.PathLike``) written as given."""
    import scanpy as sc

    figdir = Path(sc.settings.figdir)
    if save is True:
        return figdir / f"{default_name}.png"
    if isinstance(save, os.PathLike) or os.sep in str(save):
        path = Path(save)
        return path if path.suffix else path.with_suffix(".png")
    name = f"{default_name}{save}"
    return figdir / (name if Path(name).suffix.lower() in (".png", ".pdf", ".svg", ".jpg") else f"{name}.png")


def _new_figure(figsize):
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained")


# ------------------------------------------------------------------------------------ embedding
def _add_colours(view: AnnData, color) -> tuple[list[str] | None, list[str] | None]:
    """Put the colourings into ``view.obs``; return scanpy's ``color`` list and panel titles."""
    if color is None:
        return None, None
    if isinstance(color, Mapping):
        items = dict(color)
    elif isinstance(color, str):
        items = {color: color}
    elif isinstance(color, Sequence) and len(color) and all(isinstance(c, str) for c in color):
        items = {c: c for c in color}
    else:  # one array of values
        items = {"": color}
    names, titles = [], []
    for title, values in items.items():
        if isinstance(values, str):
            if values not in view.obs:
                raise CellBridgeInputError(
                    f"`color={values!r}` names no column of `obs` (columns: {list(view.obs.columns)}); pass an obs "
                    "column name or an array with one value per cell (e.g. `color={'cell type': labels}`)."
                )
            values = view.obs[values]
        values = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        if values.shape[0] != view.n_obs:
            raise CellBridgeInputError(
                f"colour {title!r} has {values.shape[0]} values for {view.n_obs} cells; give one per cell."
            )
        column = f"_colour_{len(names)}"
        view.obs[column] = _as_plotted(values)
        palette = view.uns.get(f"{items[title]}_colors") if isinstance(items[title], str) else None
        if palette is not None and isinstance(view.obs[column].dtype, pd.CategoricalDtype):
            view.uns[f"{column}_colors"] = palette
        names.append(column)
        titles.append(str(title))
    return names, titles


def _as_plotted(values: np.ndarray):
    """Floats stay continuous; everything else (strings, ints, booleans) becomes categories."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values
    if np.issubdtype(values.dtype, np.floating):
        return values
    series = pd.Series(values, dtype=object)
    return pd.Categorical(series.where(series.isna(), series.astype(str)))


def embedding(
    data,
    *,
    color: str | Sequence[str] | Mapping[str, Any] | Sequence | None = None,
    use_rep: str | None = None,
    basis: str | None = None,
    key_added: str = "X_umap",
    recompute: bool = False,
    n_neighbors: int = 15,
    seed: int = 0,
    point_size: float | None = None,
    title: str | Sequence[str] | None = None,
    ax=None,
    save: bool | str | os.PathLike | None = None,
    show: bool | None = None,
    overwrite: bool = False,
    **kwargs: Any,
):
    """UMAP of a joint embedding drawn by :func:`scanpy.pl.embedding`, one panel per colouring.

    The UMAP is computed once and stored in ``obsm[key_added]`` (with its parameters in
    ``uns[key_added without "X_"]["params"]``); later calls reuse it unless ``recompute=True`` or
    it was computed from another embedding.

    Parameters
    ----------
    data
        An AnnData with the joint embedding in ``obsm`` (cells of both modalities stacked); a
        MuData result (its top-level joint embedding and ``obs["modality"]`` when present,
        otherwise every modality's ``obsm[use_rep]`` stacked, with a ``modality`` column); or a
        cells x dimensions array. 2-D embeddings are drawn as they are.
    color
        ``obs`` column name(s) (for a MuData also a column present per modality, such as
        ``"cell_type"`` for ``"rna:cell_type"`` and ``"atac:cell_type"``), a mapping
        {panel title: one value per cell}, or one array of values. Floats are drawn with a colour
        bar; strings, integers and booleans as categories with a legend.
    use_rep
        ``obsm`` key of the embedding to lay out; by default the first of ``X_biclum``,
        ``X_scmdcf`` that exists.
    basis
        ``obsm`` key of 2-D coordinates to draw as they are (e.g. an existing ``"X_umap"``), as in
        scanpy; None: the UMAP of ``use_rep`` (computed once and stored).
    key_added
        ``obsm`` key under which the computed UMAP is stored (and looked up). A MuData without a
        top-level embedding gets it in each modality.
    recompute
        Compute the UMAP again even when ``obsm[key_added]`` exists.
    n_neighbors
        Neighbours per cell of the UMAP graph.
    seed
        Seed of the UMAP layout.
    point_size
        Marker size (scanpy's ``size``); default scanpy's, which scales with the number of cells.
    title
        Panel title(s); default the colour names.
    ax
        Matplotlib axes to draw into (one colouring only); by default a new figure is made.
    save
        Write the figure: True (``scanpy.settings.figdir/umap.png``), a string without a folder
        (a suffix of that name, as scanpy: ``"_types.pdf"`` gives ``umap_types.pdf``), or a path
        with a folder (written there; the extension sets the format, PNG by default).
    show
        Display the figure (``matplotlib.pyplot.show``); None: when the backend is interactive and
        nothing is saved.
    overwrite
        Replace an existing file at ``save`` (otherwise :class:`FileExistsError`).
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``palette``, ``legend_loc``, ``groups``, ``ncols`` ...).

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure, or None when it was shown. Cells are drawn in a random order (seeded by
        ``seed``) so that no group hides another.
    """
    joint = _joint(data, use_rep)
    view = joint.adata
    if basis is not None:
        source = data if isinstance(data, AnnData) else None
        holder = source.obsm if source is not None else getattr(data, "obsm", {})
        if basis not in holder and f"X_{basis}" not in holder:
            raise CellBridgeInputError(f"`basis={basis!r}` names no obsm entry (available: {sorted(holder.keys())}); "
                                       "drop `basis` to lay out the joint embedding with UMAP.")
        key = basis if basis in holder else f"X_{basis}"
        view.obsm[key] = np.asarray(holder[key])
    else:
        key = _layout(joint, key_added=key_added, recompute=recompute, n_neighbors=n_neighbors, seed=seed)
    if view.obsm[key].shape[1] < 2:
        view.obsm[key] = np.pad(np.asarray(view.obsm[key]), ((0, 0), (0, 2 - view.obsm[key].shape[1])))
    names, titles = _add_colours(view, color)
    if ax is not None and names is not None and len(names) > 1:
        raise CellBridgeInputError(
            f"`ax` takes one panel but {len(names)} colourings were asked; drop `ax` or pass one colour."
        )
    import scanpy as sc

    # cells drawn in a seeded random order, so that no group (e.g. the last modality) hides another
    order = np.random.default_rng(seed).permutation(view.n_obs)
    view = AnnData(obs=view.obs.iloc[order], obsm={key: np.asarray(view.obsm[key])[order]}, uns=view.uns)
    options = dict(kwargs)
    if point_size is not None:
        options["size"] = point_size
    panel_titles = title if title is not None else titles
    # scanpy names the axes after the basis: "umap" gives UMAP1/UMAP2 where "X_umap" gives X_umap1
    shown = _uns_key(key) if key.startswith("X_") and _uns_key(key) not in view.obsm else key
    drawn = sc.pl.embedding(view, basis=shown, color=names, title=panel_titles, ax=ax, show=False,
                            return_fig=ax is None, **options)
    fig = drawn if ax is None else ax.figure
    return _finish(fig, save=save, show=show, overwrite=overwrite, default_name=_uns_key(key))


def umap(data, **kwargs: Any):
    """:func:`embedding` under scanpy's other name (``sc.pl.umap``): the UMAP of the joint embedding.

    Parameters
    ----------
    data
        AnnData, MuData or array, as for :func:`embedding`.
    **kwargs
        The keyword options of :func:`embedding` (``color``, ``use_rep``, ``save``, ``show`` ...).

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure, or None when it was shown.
    """
    return embedding(data, **kwargs)


# ------------------------------------------------------------------------------------ training
def training_history(
    history,
    ax=None,
    *,
    log_scale: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    show: bool | None = None,
    overwrite: bool = False,
):
    """Loss curves of a training run, one line per loss term.

    Parameters
    ----------
    history
        A trained :class:`~cellbridge.BiCLUM` or :class:`~cellbridge.scMDCF` (its ``history_``), its
        per-epoch rows (dicts or a DataFrame with ``epoch``, optional ``phase`` / ``member`` and one
        column per loss term), or ``{loss name: one value per epoch}``. With an ensemble, the first
        member is drawn; training phases follow each other on the x axis.
    ax
        Axes to draw into; by default a new figure is made.
    log_scale
        Logarithmic y axis; by default used when all values are positive and span over two
        orders of magnitude.
    save
        Write the figure (as in :func:`embedding`; default name ``training_history``).
    show
        Display the figure; None: when the backend is interactive and nothing is saved.
    overwrite
        Replace an existing file at ``save``.

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure, or None when it was shown.
    """
    frame = _history_frame(getattr(history, "history_", history))
    if "member" in frame:
        frame = frame[frame["member"] == frame["member"].iloc[0]]
    curves = {name: frame[name].to_numpy(dtype=float) for name in frame.columns
              if name not in ("epoch", "member", "phase") and pd.api.types.is_numeric_dtype(frame[name])}
    if not curves:
        raise CellBridgeInputError("`history` holds no loss values; train the model first.")
    if ax is None:
        fig = _new_figure((6, 4))
        ax = fig.subplots()
    else:
        fig = ax.figure
    x = np.arange(1, len(frame) + 1)
    for name, values in curves.items():
        ax.plot(x, values, label=str(name))
    if "phase" in frame and frame["phase"].nunique() > 1:
        phases = frame["phase"].to_numpy()
        for start in np.flatnonzero(phases[1:] != phases[:-1]) + 1:
            ax.axvline(start + 0.5, color="grey", linewidth=0.8, linestyle=":")
    finite = np.concatenate([v[np.isfinite(v)] for v in curves.values()])
    if log_scale is None:
        log_scale = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(frameon=False)
    return _finish(fig, save=save, show=show, overwrite=overwrite, default_name="training_history")


def _history_frame(history) -> pd.DataFrame:
    """Per-epoch rows of a history in any of the forms :func:`training_history` accepts."""
    if isinstance(history, pd.DataFrame):
        frame = history
    elif isinstance(history, Mapping) and history:
        lengths = {len(np.ravel(v)) for v in history.values()}
        if len(lengths) != 1:
            raise CellBridgeInputError("`history` as a dict needs one list of per-epoch values per loss, of equal "
                                       f"lengths; got lengths {sorted(lengths)}.")
        frame = pd.DataFrame({k: np.ravel(v) for k, v in history.items()})
    elif isinstance(history, Sequence) and history and all(isinstance(r, Mapping) for r in history):
        frame = pd.DataFrame(list(history))
    else:
        raise CellBridgeInputError(
            "`history` must be a trained model, a list of per-epoch rows (dicts), a DataFrame or a dict "
            "{loss name: per-epoch values}; train the model first if it is empty.")
    if frame.empty:
        raise CellBridgeInputError("`history` is empty; train the model first.")
    return frame


# ------------------------------------------------------------------------------------ transfer
def _obs_frame(data, keys: Sequence[str], what: str) -> pd.DataFrame:
    """Columns ``keys`` of ``data`` (AnnData / MuData joint obs / DataFrame / mapping of arrays)."""
    import mudata as md

    if isinstance(data, (AnnData, md.MuData)):
        frame = _joint(data, None).adata.obs if isinstance(data, md.MuData) else data.obs
    elif isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, Mapping):
        frame = pd.DataFrame({k: np.asarray(v) for k, v in data.items()})
    else:
        raise CellBridgeInputError(f"{what} takes an AnnData, a MuData, a DataFrame or a dict of arrays, "
                                   f"not a {type(data).__name__}.")
    missing = [k for k in keys if k not in frame]
    if missing:
        raise CellBridgeInputError(f"{what}: no column {missing} among {list(frame.columns)}; pass the column "
                                   "names (the true labels and the transferred ones).")
    return frame[list(keys)]


def confusion_matrix(
    data,
    *,
    true_key: str = "cell_type",
    predicted_key: str = "transferred_label",
    normalize: bool = True,
    ax=None,
    title: str | None = None,
    save: bool | str | os.PathLike | None = None,
    show: bool | None = None,
    overwrite: bool = False,
):
    """Heat map of true against transferred labels (rows: true, columns: predicted).

    Cells missing either label (e.g. the reference cells of a transfer) are left out. The title
    gives the accuracy over the cells shown.

    Parameters
    ----------
    data
        AnnData or MuData (their ``obs``), a DataFrame, or a dict of arrays, holding both columns.
    true_key
        Column of the true labels.
    predicted_key
        Column of the transferred (predicted) labels.
    normalize
        Show the fraction of each true label's cells per predicted label (rows sum to 1) instead
        of counts; cells are annotated with the value either way.
    ax
        Axes to draw into; by default a new figure is made.
    title
        Title; default ``"label transfer (accuracy …)"``.
    save
        Write the figure (as in :func:`embedding`; default name ``confusion_matrix``).
    show
        Display the figure; None: when the backend is interactive and nothing is saved.
    overwrite
        Replace an existing file at ``save``.

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure, or None when it was shown.
    """
    frame = _obs_frame(data, [true_key, predicted_key], "confusion_matrix").dropna()
    if frame.empty:
        raise CellBridgeInputError(f"no cell has both {true_key!r} and {predicted_key!r}; nothing to compare.")
    true, pred = frame[true_key].astype(str), frame[predicted_key].astype(str)
    rows = sorted(set(true), key=_natural)
    extra = sorted(set(pred) - set(rows), key=_natural)
    columns = rows + extra if set(pred) & set(rows) else extra  # shared names: true labels on the diagonal
    counts = pd.crosstab(true, pred).reindex(index=rows, columns=columns, fill_value=0)
    values = counts.div(counts.sum(axis=1), axis=0) if normalize else counts
    accuracy = float((true.to_numpy() == pred.to_numpy()).mean())
    n_rows, n_cols = counts.shape
    if ax is None:
        fig = _new_figure((max(4.0, 0.45 * n_cols + 2.5), max(3.5, 0.4 * n_rows + 1.8)))
        ax = fig.subplots()
    else:
        fig = ax.figure
    image = ax.imshow(values.to_numpy(dtype=float), cmap="Blues", vmin=0, aspect="auto",
                      vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true label" if normalize else "cells")
    if n_rows * n_cols <= 400:
        top = float(values.to_numpy().max()) or 1.0
        for i in range(n_rows):
            for j in range(n_cols):
                v = values.iat[i, j]
                if v:
                    text = f"{v:.2f}" if normalize else str(int(v))
                    ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                            color="white" if v > 0.6 * top else "black")
    ax.set_xticks(range(n_cols), counts.columns, rotation=90)
    ax.set_yticks(range(n_rows), counts.index)
    ax.set_xlabel(predicted_key)
    ax.set_ylabel(true_key)
    ax.set_title(title if title is not None else f"label transfer (accuracy {accuracy:.3f}, {len(frame)} cells)")
    return _finish(fig, save=save, show=show, overwrite=overwrite, default_name="confusion_matrix")


def alignment_confidence(
    data,
    *,
    key: str = "transfer_confidence",
    groupby: str | None = None,
    use_rep: str | None = None,
    key_added: str = "X_umap",
    n_neighbors: int = 15,
    seed: int = 0,
    save: bool | str | os.PathLike | None = None,
    show: bool | None = None,
    overwrite: bool = False,
):
    """Per-cell alignment confidence: on the UMAP of the joint embedding and as histograms per group.

    The score is any per-cell value in [0, 1] (e.g. the vote fraction of
    :func:`cellbridge.tl.transfer_labels`, or the fraction of a cell's neighbours that agree with
    its label); cells without a score (NaN) are drawn grey and left out of the histograms.

    Parameters
    ----------
    data
        AnnData or MuData with the score in ``obs[key]`` and a joint embedding (see :func:`embedding`).
    key
        ``obs`` column of the per-cell score.
    groupby
        ``obs`` column: one histogram per group (e.g. ``"modality"`` or the predicted label);
        None: one histogram.
    use_rep
        ``obsm`` key of the joint embedding (see :func:`embedding`).
    key_added
        ``obsm`` key of the stored UMAP (reused when present).
    n_neighbors
        Neighbours per cell of the UMAP graph (when it is computed).
    seed
        Seed of the UMAP layout (when it is computed).
    save
        Write the figure (as in :func:`embedding`; default name ``alignment_confidence``).
    show
        Display the figure; None: when the backend is interactive and nothing is saved.
    overwrite
        Replace an existing file at ``save``.

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure, or None when it was shown.
    """
    joint = _joint(data, use_rep)
    obs = joint.adata.obs
    if key not in obs:
        raise CellBridgeInputError(f"no obs[{key!r}] with a per-cell confidence (columns: {list(obs.columns)}); "
                                   "compute one first (e.g. the confidence of cellbridge.tl.transfer_labels).")
    if groupby is not None and groupby not in obs:
        raise CellBridgeInputError(f"`groupby={groupby!r}` names no obs column (columns: {list(obs.columns)}).")
    score = pd.to_numeric(obs[key], errors="coerce").to_numpy(dtype=float)
    fig = _new_figure((10.5, 4.2))
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    embedding(data, color={key: score}, use_rep=joint.rep, key_added=key_added,
              n_neighbors=n_neighbors, seed=seed, ax=left, show=False, color_map="viridis", vmin=0, vmax=1)
    groups = obs[groupby].astype(str).to_numpy() if groupby else np.full(obs.shape[0], "all cells")
    bins = _bins(score[np.isfinite(score)])
    for name in pd.unique(groups[np.isfinite(score)]):
        values = score[(groups == name) & np.isfinite(score)]
        right.hist(values, bins=bins, histtype="step", linewidth=1.5, weights=np.full(values.size, 1 / values.size),
                   label=f"{name} (n={values.size}, mean {values.mean():.2f})")
    right.set_xlabel(key)
    right.set_ylabel("fraction of cells")
    right.set_xlim(0, 1)
    right.legend(frameon=False, fontsize="small")
    return _finish(fig, save=save, show=show, overwrite=overwrite, default_name="alignment_confidence")


def _bins(values: np.ndarray) -> np.ndarray:
    """Histogram edges: one bin per value when there are few distinct ones (vote fractions j/k),
    otherwise 20 equal bins over [0, 1]."""
    distinct = np.unique(values)
    if 1 < distinct.size <= 30:
        half = np.diff(distinct).min() / 2
        return np.concatenate([[distinct[0] - half], (distinct[1:] + distinct[:-1]) / 2, [distinct[-1] + half]])
    return np.linspace(0, 1, 21)


def _natural(label: str):
    """Sort key putting "2" before "10" and numbers before names."""
    return (0, int(label), "") if label.isdigit() else (1, 0, label)
