"""Plots: UMAP of a joint embedding coloured by labels, and training loss curves.

All functions draw with matplotlib's object API (no ``pyplot`` state is needed to save), work
under the non-interactive Agg backend, and return the :class:`~matplotlib.figure.Figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._errors import CellBridgeInputError

__all__ = ["embedding", "training_history", "umap_coordinates"]


def umap_coordinates(emb: np.ndarray, *, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """2-D UMAP coordinates of an embedding; 2-D input is returned unchanged.

    The neighbour graph comes from :func:`cellbridge.neighbors.knn_graph` (the same UMAP fuzzy weights
    as ``scanpy.pp.neighbors``, without its numba compilation); the layout from ``scanpy.tl.umap``.

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
    return np.asarray(tmp.obsm["X_umap"])


def _colour_columns(data, color, n: int) -> dict[str, np.ndarray]:
    """Resolve ``color`` to {panel title: one value per cell}."""
    if color is None:
        return {"": np.zeros(n, dtype=int)}
    if isinstance(color, Mapping):
        items = dict(color)
    elif isinstance(color, str):
        items = {color: color}
    elif isinstance(color, Sequence) and all(isinstance(c, str) for c in color):
        items = {c: c for c in color}
    else:  # one array of values
        items = {"": color}
    out = {}
    for title, values in items.items():
        if isinstance(values, str):
            if not isinstance(data, AnnData) or values not in data.obs:
                raise CellBridgeInputError(
                    f"`color={values!r}` names no column of `adata.obs`; pass an obs column name "
                    "or an array with one value per cell (e.g. `color={'cell type': labels}`)."
                )
            values = data.obs[values].to_numpy()
        values = np.asarray(values)
        if values.shape[0] != n:
            raise CellBridgeInputError(
                f"colour {title!r} has {values.shape[0]} values for {n} cells; give one per cell."
            )
        out[title] = values
    return out


def _scatter(
    ax: Axes, xy: np.ndarray, values: np.ndarray, title: str, size: float, axis_name: str
) -> None:
    numeric = np.issubdtype(values.dtype, np.floating) and np.unique(values).size > 20
    if numeric:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=size, cmap="viridis", linewidths=0)
        ax.figure.colorbar(points, ax=ax, shrink=0.7)
    else:
        cats = pd.Categorical(values.astype(str))
        cmap = colormaps["tab20" if len(cats.categories) > 10 else "tab10"]
        for code, name in enumerate(cats.categories):
            mask = cats.codes == code
            colour = cmap(code % cmap.N)
            ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=colour, label=name, linewidths=0)
        if len(cats.categories) > 1:
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=3,
                      fontsize="small", ncol=1 + len(cats.categories) // 20)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{axis_name}1")
    ax.set_ylabel(f"{axis_name}2")


def _embedding_array(data, basis: str) -> np.ndarray:
    if isinstance(data, AnnData):
        if basis not in data.obsm:
            raise CellBridgeInputError(
                f"`adata.obsm` has no {basis!r}; available: {list(data.obsm)}. Pass `basis=` naming "
                "the joint embedding (e.g. the key written by the model)."
            )
        return np.asarray(data.obsm[basis])
    return np.asarray(data)


def embedding(
    data: AnnData | np.ndarray,
    *,
    color: str | Sequence[str] | Mapping[str, Sequence] | Sequence | None = None,
    basis: str = "X_biclum",
    ax: Axes | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    point_size: float | None = None,
) -> Figure:
    """UMAP scatter of a joint embedding, one panel per colouring (e.g. cell type, modality).

    Parameters
    ----------
    data
        AnnData holding the embedding in ``obsm[basis]`` (cells of both modalities stacked), or
        the cells x dimensions array itself. 2-D embeddings are plotted as they are.
    color
        For AnnData: an ``obs`` column name or a list of names. For any input: a mapping
        {panel title: one value per cell}, e.g. ``{"cell type": labels, "modality": modality}``,
        or one array of values. Categorical values get a legend; many distinct floats a colour bar.
    basis
        ``obsm`` key of the embedding (AnnData input).
    ax
        Axes to draw into (single colouring only); by default a new figure is made.
    n_neighbors, seed
        UMAP neighbours and seed.
    point_size
        Marker size; default scales with the number of cells.

    Returns
    -------
    matplotlib.figure.Figure
    """
    emb = _embedding_array(data, basis)
    columns = _colour_columns(data, color, emb.shape[0])
    if ax is not None and len(columns) > 1:
        raise CellBridgeInputError(
            f"`ax` takes one panel but {len(columns)} colourings were asked; "
            "drop `ax` or pass one colour."
        )
    xy = umap_coordinates(emb, n_neighbors=n_neighbors, seed=seed)
    size = point_size if point_size is not None else float(np.clip(12_000 / emb.shape[0], 1, 30))
    if ax is None:
        fig = Figure(figsize=(5.5 * len(columns), 4.5), layout="constrained")
        axes = fig.subplots(1, len(columns), squeeze=False)[0]
    else:
        fig, axes = ax.figure, [ax]
    for panel, (title, values) in zip(axes, columns.items()):
        _scatter(panel, xy, values, title, size, "UMAP" if emb.shape[1] > 2 else "dim")
    return fig


def training_history(history, ax: Axes | None = None, *, log_scale: bool | None = None) -> Figure:
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

    Returns
    -------
    matplotlib.figure.Figure
    """
    frame = _history_frame(getattr(history, "history_", history))
    if "member" in frame:
        frame = frame[frame["member"] == frame["member"].iloc[0]]
    curves = {name: frame[name].to_numpy(dtype=float) for name in frame.columns
              if name not in ("epoch", "member", "phase") and pd.api.types.is_numeric_dtype(frame[name])}
    if not curves:
        raise CellBridgeInputError("`history` holds no loss values; train the model first.")
    if ax is None:
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    x = np.arange(1, len(frame) + 1)
    for name, values in curves.items():
        ax.plot(x, values, label=str(name))
    if "phase" in frame and frame["phase"].nunique() > 1:
        for start in np.flatnonzero(frame["phase"].to_numpy()[1:] != frame["phase"].to_numpy()[:-1]) + 1:
            ax.axvline(start + 0.5, color="grey", linewidth=0.8, linestyle=":")
    finite = np.concatenate([v[np.isfinite(v)] for v in curves.values()])
    if log_scale is None:
        log_scale = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(frameon=False)
    return fig


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
