"""Reading single-cell files (one reader for every command), the layout of result MuData objects,
and writing results atomically.

Inputs
------
:func:`read` reads one modality from any of these, telling the format by the file's content (the
name's ending only for ``.mtx`` files):

- ``.h5ad`` (AnnData);
- ``.h5mu`` (MuData): one modality, chosen by name: ``"data.h5mu:atac"`` or ``modality="atac"``;
  the MuData's own ``obs`` columns are added to the modality's ``obs``;
- a 10x feature-barcode matrix, ``.h5`` or an mtx folder (``matrix.mtx``, ``features.tsv`` or
  ``genes.tsv``, ``barcodes.tsv``, each plain or ``.gz``): one feature type, ``"multiome.h5:Peaks"``
  or ``modality="atac"``, so that RNA and ATAC (or ADT) of one Multiome / CITE-seq file are read
  separately and nothing is dropped silently;
- the scMDC layout (an HDF5 file with ``X1`` = RNA, ``X2`` = ADT or ATAC counts and ``Y`` =
  labels), ``"data.h5:X2"`` or ``modality="adt"``;
- a lone ``.mtx`` / ``.mtx.gz`` (cells x features, no names).

A modality is named by its file's own name (``"atac"``, ``"Peaks"``, ``"X2"``...) or by one of
the kinds in :data:`MODALITY_NAMES` (``"rna"``, ``"atac"``, ``"adt"``/``"protein"``,
``"gene_activity"``), which match the usual names of that kind. A file that holds several
modalities and no choice, or lacks the one asked for, raises an error that lists what it holds.
Every failure to read (missing, empty, truncated or damaged file, not HDF5, unknown format) is a
:class:`~cellbridge.CellBridgeInputError` naming the file and what is wrong with it.

Results
-------
:func:`joint_mudata` lays out the MuData written by ``integrate`` (BiCLUM) and ``cluster``
(scMDCF) for joint analysis: the embedding of every cell in the MuData's own ``obsm``, the
measured side of each cell in ``obs["modality"]`` and the modalities' ``obs`` columns (labels,
clusters) at the top level, and names unique across modalities, so that
``sc.pp.neighbors(mdata, use_rep="X_biclum")`` works and mudata reads the file without warnings.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ._errors import CellBridgeInputError
from ._utils import atomic_write, check_output, is_gzip

logger = logging.getLogger("cellbridge")

#: The kinds of modality a reader may be asked for, and the names (lower case) of MuData
#: modalities and 10x feature types that hold each kind.
MODALITY_NAMES: dict[str, tuple[str, ...]] = {
    "rna": ("rna", "gex", "gene expression", "expression"),
    "atac": ("atac", "peaks", "chromatin accessibility"),
    "adt": ("adt", "prot", "protein", "proteins", "antibody capture", "cite"),
    "gene_activity": ("gene_activity", "gene activity", "activity", "gam"),
}
_SCMDC = {"rna": "X1", "atac": "X2", "adt": "X2"}  # kind -> dataset of the scMDC layout
_HDF5_ENDINGS = (".h5ad", ".h5mu", ".h5", ".hdf5", ".hdf")
#: One line for help texts: the inputs :func:`read` accepts.
INPUT_FORMATS = (".h5ad, .h5mu (FILE.h5mu:MODALITY), a 10x .h5 or mtx folder (FILE:FEATURE_TYPE, e.g. "
                 "multiome.h5:Peaks), the scMDC .h5 (FILE.h5:X1 / :X2) or a .mtx file")


def _kind_of(name: str) -> str | None:
    """The kind (key of :data:`MODALITY_NAMES`) that ``name`` names, or None."""
    low = name.lower().strip()
    if low == "protein":
        return "adt"
    return next((kind for kind, names in MODALITY_NAMES.items() if low in names), None)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def split_selector(path: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``"FILE:MODALITY"`` into the file and the modality (None when not given).

    A path that exists as written is never split, so file names holding ``:`` still work.

    Parameters
    ----------
    path
        A file or folder, optionally followed by ``:`` and the name of a modality.

    Returns
    -------
    tuple
        ``(pathlib.Path, modality or None)``.
    """
    text = os.fspath(path)
    if Path(text).exists() or ":" not in text:
        return Path(text), None
    base, _, selector = text.rpartition(":")
    if base and selector and "/" not in selector:
        return Path(base), selector
    return Path(text), None


def _fail(path: Path, problem: str) -> CellBridgeInputError:
    return CellBridgeInputError(f"{path} {problem}")


def _sniff(path: Path) -> str:
    """The format of ``path`` from its content: ``h5ad``, ``h5mu``, ``10x``, ``10x_legacy``,
    ``scmdc``, ``mtx_dir`` or ``mtx``; raises a readable error for anything else."""
    if not path.exists():
        hint = f" (read as FILE:MODALITY from {os.fspath(path)!r})" if ":" in path.name else ""
        raise _fail(path, f"does not exist{hint}; check the path.")
    if path.is_dir():
        if _mtx_files(path)[0] is None:
            raise _fail(path, "is a folder without a 10x matrix (matrix.mtx or matrix.mtx.gz with barcodes.tsv "
                              "and features.tsv or genes.tsv); give the folder that holds them, or a file.")
        return "mtx_dir"
    if not os.access(path, os.R_OK):
        raise _fail(path, "cannot be read: permission denied; ask its owner for read access or copy it.")
    if path.stat().st_size == 0:
        raise _fail(path, "is empty (0 bytes): it was not written completely; write or copy it again.")
    name = path.name.lower()
    if name.endswith((".mtx", ".mtx.gz")):
        return "mtx"
    if not h5py.is_hdf5(path):
        if name.endswith(_HDF5_ENDINGS):
            what = ("gzip-compressed: decompress it first (gunzip)" if is_gzip(path)
                    else "not an HDF5 file (no HDF5 signature): it is damaged or in another format")
            raise _fail(path, f"is {what}. CellBridge reads {INPUT_FORMATS}.")
        raise _fail(path, f"is not a format CellBridge reads (ending {path.suffix or 'none'!r}); use "
                          f"{INPUT_FORMATS}. Convert other tables first, e.g. with scanpy.read_csv(...)"
                          ".write_h5ad(...).")
    try:
        with h5py.File(path, "r") as fh:
            keys = set(fh.keys())
            groups = {k for k in keys if isinstance(fh[k], h5py.Group)}
            legacy = bool(groups) and all({"barcodes", "indptr"} <= set(fh[k].keys()) for k in groups)
    except OSError as err:
        raise _fail(path, f"is truncated or damaged (HDF5 cannot open it: {_short(err)}); write or copy it "
                          "again.") from None
    if "mod" in groups:
        return "h5mu"
    if "matrix" in groups:
        return "10x"
    if {"X1", "X2"} & keys and "obs" not in keys:
        return "scmdc"
    if keys & {"X", "obs", "var"}:
        return "h5ad"
    if legacy:
        return "10x_legacy"
    raise _fail(path, f"is an HDF5 file but none CellBridge reads (top-level entries: {sorted(keys)[:10]}); "
                      f"use {INPUT_FORMATS}.")


def _short(err: BaseException, limit: int = 240) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn any failure inside the block into a :class:`CellBridgeInputError` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
            warnings.filterwarnings("ignore", message="From 0.4 .update()", category=FutureWarning)
            yield
    except CellBridgeInputError:
        raise
    except MemoryError:
        raise
    except Exception as err:  # the boundary where library errors become readable ones
        raise _fail(path, f"could not be read as {what} ({type(err).__name__}: {_short(err)}). The file may be "
                          "truncated or damaged, or written by an incompatible program: write or copy it "
                          "again.") from err


def _choose(path: Path, available: list[str], want: str | None, what: str) -> str:
    """The entry of ``available`` that ``want`` names (exactly, ignoring case, or by its kind)."""
    pick = f"`{path}:NAME` on the command line, `modality=\"NAME\"` in Python"
    whats = "modalities" if what == "modality" else f"{what}s"
    if want is None:
        if len(available) == 1:
            return available[0]
        raise _fail(path, f"holds several {whats} ({available}); say which one to read: {pick}.")
    if want in available:
        return want
    by_case = {a.lower(): a for a in available}
    if want.lower() in by_case:
        return by_case[want.lower()]
    kind = _kind_of(want)
    hits = [a for a in available if kind is not None and _kind_of(a) == kind]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise _fail(path, f"holds several {whats} of kind {kind!r} ({hits}); say which one to read: {pick}.")
    raise _fail(path, f"holds no {want!r} {what}: it holds {available}. Pass the file that holds it, or choose "
                      f"one of these with {pick}.")


def read(path: str | os.PathLike, *, modality: str | None = None, backed: bool = False) -> ad.AnnData:
    """Read one modality from an ``.h5ad``, ``.h5mu``, 10x ``.h5`` / mtx folder, scMDC ``.h5`` or ``.mtx``.

    Parameters
    ----------
    path
        The file or folder (see the module notes for the formats), optionally followed by
        ``:MODALITY`` (``"data.h5mu:atac"``, ``"multiome.h5:Peaks"``, ``"cite.h5:X2"``).
    modality
        Which modality to read from a file that holds several: its name in the file (MuData
        modality, 10x feature type such as ``"Antibody Capture"``, ``"X1"``/``"X2"``) or a kind
        (``"rna"``, ``"atac"``, ``"adt"``/``"protein"``, ``"gene_activity"``) matching the usual
        names (e.g. ``"atac"`` matches a MuData ``"peaks"`` modality or the 10x ``"Peaks"``).
        None: the file must hold one modality. Not used for ``.h5ad`` and ``.mtx`` files, which
        hold one; a 10x file with one feature type must hold the one asked for. A ``:MODALITY``
        ending of ``path`` takes precedence (``modality`` is then only the caller's default).
    backed
        Open ``.h5ad`` files (and ``.h5mu`` modalities) in backed, read-only mode.

    Returns
    -------
    anndata.AnnData
        Cells x features. 10x files: float32 CSR counts of the chosen feature type, ``var``
        with ``gene_ids`` and ``feature_types``, duplicated feature names made unique
        (``-1``, ``-2``...). scMDC files: ``obs["label"]`` when ``Y`` exists.

    Raises
    ------
    CellBridgeInputError
        When the file is missing, empty, truncated, not a format CellBridge reads, or lacks the
        modality asked for; the message names the file, the problem and what it holds.
    """
    file, selector = split_selector(path)
    want = selector or modality
    kind = _sniff(file)
    if selector is not None and kind in ("h5ad", "mtx"):
        raise _fail(file, f"holds one modality ({kind}); remove ':{selector}' from the name.")
    if kind == "h5ad":
        with _reading(file, "AnnData (.h5ad)"):
            return ad.read_h5ad(file, backed="r" if backed else None)
    if kind == "h5mu":
        return _read_h5mu_modality(file, want, backed)
    if kind == "scmdc":
        with _reading(file, "the scMDC layout (X1, X2, Y)"), h5py.File(file, "r") as fh:
            names = [k for k in ("X1", "X2") if k in fh]
        name = _choose(file, names, _SCMDC.get(_kind_of(want) or "", want) if want else None, "dataset")
        rna, other = read_scmdc_h5(file)
        return rna if name == "X1" else other
    with _reading(file, "a 10x matrix" if kind != "mtx" else "a Matrix Market file"):
        if kind == "mtx":
            import scanpy as sc

            return sc.read_mtx(file)
        adata = _read_mtx_dir(file) if kind == "mtx_dir" else _read_10x_h5(file, kind)
    return _select_feature_type(file, adata, want)


def _read_10x_h5(path: Path, kind: str) -> ad.AnnData:
    import scanpy as sc

    return sc.read_10x_h5(path, gex_only=False) if kind == "10x" else sc.read_10x_h5(path)


def _mtx_files(folder: Path) -> tuple[Path | None, Path | None, Path | None]:
    def find(*stems: str) -> Path | None:
        return next((folder / f"{s}{e}" for s in stems for e in ("", ".gz") if (folder / f"{s}{e}").is_file()), None)

    return find("matrix.mtx"), find("features.tsv", "genes.tsv"), find("barcodes.tsv")


def _read_mtx_dir(folder: Path) -> ad.AnnData:
    """A 10x mtx folder (Cell Ranger v2 or v3, STARsolo; plain or gzip files), all feature types."""
    matrix, features, barcodes = _mtx_files(folder)
    missing = [n for n, p in (("features.tsv or genes.tsv", features), ("barcodes.tsv", barcodes)) if p is None]
    if missing:
        raise _fail(folder, f"holds a matrix.mtx but no {' and no '.join(missing)} (plain or .gz); add the missing "
                            "file(s) from the same run.")
    X = sp.csr_matrix(scipy.io.mmread(matrix).T, dtype=np.float32)
    feats = pd.read_csv(features, sep="\t", header=None, dtype=str)
    cells = pd.read_csv(barcodes, sep="\t", header=None, dtype=str)[0]
    if X.shape != (len(cells), len(feats)):
        raise _fail(folder, f"is inconsistent: {matrix.name} is {X.shape[1]} features x {X.shape[0]} barcodes, but "
                            f"{features.name} lists {len(feats)} features and {barcodes.name} {len(cells)} barcodes; "
                            "use the three files of one run.")
    var = pd.DataFrame({"gene_ids": feats[0].to_numpy()}, index=feats[1 if feats.shape[1] > 1 else 0].to_numpy())
    if feats.shape[1] > 2:
        var["feature_types"] = feats[2].to_numpy()
    return ad.AnnData(X, obs=pd.DataFrame(index=cells.to_numpy()), var=var)


def _select_feature_type(path: Path, adata: ad.AnnData, want: str | None) -> ad.AnnData:
    """The cells x features of one 10x feature type (all of them when the file holds one)."""
    if "feature_types" in adata.var:
        types = adata.var["feature_types"].astype(str).to_numpy()
    else:  # Cell Ranger v2: no feature types; peaks are recognised by their names
        from .pp.paired import infer_modality

        try:
            peaks = infer_modality(adata) == "atac"
        except CellBridgeInputError:
            peaks = False
        types = np.full(adata.n_vars, "Peaks" if peaks else "Gene Expression")
    available = list(pd.unique(types))
    chosen = _choose(path, available, want, "feature type")
    if len(available) > 1:
        with warnings.catch_warnings():  # names duplicated within the feature type are made unique below
            warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
            adata = adata[:, types == chosen].copy()
        logger.info("%s: read the %d %r features of %s", path, adata.n_vars, chosen, available)
    if not adata.var_names.is_unique:
        n = int(adata.var_names.duplicated().sum())
        adata.var_names_make_unique()
        logger.info("%s: %d duplicated feature names made unique (suffixes -1, -2...)", path, n)
    return adata


def _read_h5mu_modality(path: Path, want: str | None, backed: bool) -> ad.AnnData:
    """One modality of a MuData file, with the MuData's own obs columns added to its obs."""
    with _reading(path, "MuData (.h5mu)"), h5py.File(path, "r") as fh:
        order = fh["mod"].attrs.get("mod-order")
        available = [str(m) for m in order] if order is not None else list(fh["mod"].keys())
        name = _choose(path, available, want, "modality")
        top = _read_elem(fh["obs"]) if "obs" in fh and not backed else None
    with _reading(path, f"modality {name!r} of a MuData (.h5mu)"):
        adata = md.read_h5ad(path, name, backed="r" if backed else False)
    if top is not None:
        for column in top.columns:
            prefix, sep, rest = str(column).partition(":")
            target = rest if sep and prefix == name else None if sep and prefix in available else str(column)
            if target and target not in adata.obs.columns:
                adata.obs[target] = top[column].reindex(adata.obs_names).to_numpy()
    return adata


def _read_elem(elem):
    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem
    return read_elem(elem)


def read_mudata(path: str | os.PathLike) -> md.MuData:
    """Read a MuData ``.h5mu`` file (e.g. a result of ``integrate`` or ``cluster``).

    Parameters
    ----------
    path
        The ``.h5mu`` file.

    Returns
    -------
    mudata.MuData
        The multimodal data, read into memory.

    Raises
    ------
    CellBridgeInputError
        When the file is missing, empty, truncated or not a MuData (the message says what it is).
    """
    path = Path(path)
    kind = _sniff(path)
    if kind != "h5mu":
        raise _fail(path, f"is not a MuData (.h5mu) file but {_FORMAT_NAMES.get(kind, kind)}; pass the .h5mu "
                          "result written by integrate or cluster.")
    with _reading(path, "MuData (.h5mu)"), md.set_options(pull_on_update=False):
        return md.read_h5mu(path)


_FORMAT_NAMES = {"h5ad": "an AnnData (.h5ad)", "10x": "a 10x matrix", "10x_legacy": "a 10x matrix",
                 "scmdc": "the scMDC layout", "mtx_dir": "a 10x mtx folder", "mtx": "a Matrix Market file"}


def read_scmdc_h5(path: str | os.PathLike) -> tuple[ad.AnnData, ad.AnnData]:
    """Read the scMDC-style HDF5 layout (``X1`` RNA counts, ``X2`` ADT/ATAC counts, ``Y`` labels).

    Each modality is read from its own dataset (the reference reader loaded ``X1`` twice,
    defect E1). Cells and features get generated names; labels go to ``obs["label"]``.

    Parameters
    ----------
    path
        The HDF5 file, with datasets ``X1`` and ``X2`` (cells x features, as many cells) and
        optionally ``Y``.

    Returns
    -------
    tuple of anndata.AnnData
        ``(rna, other)``: sparse float32 counts, cells named ``cell0``, ``cell1``, ..., features
        ``gene0``, ... and ``feature0``, ...; ``obs["label"]`` (categorical) when ``Y`` exists.
    """
    path = Path(path)
    if _sniff(path) != "scmdc":
        raise _fail(path, "is not in the scMDC layout (HDF5 datasets X1, X2 and Y); read it with cellbridge.io.read.")
    with _reading(path, "the scMDC layout (X1, X2, Y)"), h5py.File(path, "r") as fh:
        missing = [k for k in ("X1", "X2") if k not in fh]
        if missing:
            raise _fail(path, f"lacks dataset(s) {missing}; the scMDC layout has X1 (RNA), X2 (ADT/ATAC) and Y.")
        x1 = np.asarray(fh["X1"], dtype=np.float32)
        x2 = np.asarray(fh["X2"], dtype=np.float32)
        y = np.asarray(fh["Y"]) if "Y" in fh else None
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[0] != x2.shape[0]:
        raise _fail(path, f"has X1 of shape {x1.shape} and X2 of shape {x2.shape}; both must be cells x features "
                          "with as many cells.")
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(x1.shape[0])])
    if y is not None:
        if len(y) != x1.shape[0]:
            raise _fail(path, f"has {len(y)} labels (Y) for {x1.shape[0]} cells.")
        obs["label"] = pd.Categorical(y.astype(int).astype(str))
    rna = ad.AnnData(sp.csr_matrix(x1), obs=obs.copy())
    rna.var_names = [f"gene{i}" for i in range(x1.shape[1])]
    other = ad.AnnData(sp.csr_matrix(x2), obs=obs.copy())
    other.var_names = [f"feature{i}" for i in range(x2.shape[1])]
    return rna, other


# --------------------------------------------------------------------------------------------
# result layout
# --------------------------------------------------------------------------------------------
def joint_mudata(mods: Mapping[str, ad.AnnData], *, sides: Mapping[str, str],
                 obsm_keys: tuple[str, ...] = (), keep_obsm_in_mods: bool = True) -> md.MuData:
    """A MuData laid out for joint analysis of the cells of several modalities.

    - Cells: modalities of the same side (``sides``) hold the same cells, matched by name (e.g.
      peaks and the gene activity computed from them); cells of different sides are different
      cells. When two sides share cell names, every cell is renamed ``f"{name}_{side}"`` and its
      input name kept in ``obs["input_obs_name"]``.
    - Features: a modality whose feature names collide with an earlier modality's gets all its
      names prefixed by ``f"{modality}:"`` (mudata's convention), the input name kept in
      ``var["input_var_name"]``; the first modality (RNA) keeps its names.
    - Top level: ``obs["modality"]`` (each cell's side), every ``obs`` column of the modalities
      (one column where the modalities agree on the cells they share, else ``f"{modality}:{column}"``
      per modality), and ``obsm[key]`` for each of ``obsm_keys`` (from the first modality of each
      side that holds it).

    Parameters
    ----------
    mods
        Modality name -> AnnData, RNA first. They are renamed in place: pass copies.
    sides
        Modality name -> the side its cells belong to (the value of ``obs["modality"]``), e.g.
        ``{"rna": "rna", "gene_activity": "atac", "atac": "atac"}``.
    obsm_keys
        ``obsm`` keys of the modalities to gather into the MuData's ``obsm``.
    keep_obsm_in_mods
        Also keep those keys in the modalities (False: only at the top level, e.g. one fused
        embedding of paired cells).

    Returns
    -------
    mudata.MuData
        The joint MuData (axis 0: shared features are not assumed).
    """
    mods = dict(mods)
    side_of = {m: sides[m] for m in mods}
    side_names = list(dict.fromkeys(side_of.values()))
    cells = {s: pd.Index([]).append([mods[m].obs_names for m in mods if side_of[m] == s]).unique() for s in side_names}
    clash = any(len(cells[a].intersection(cells[b])) for i, a in enumerate(side_names) for b in side_names[i + 1:])
    if clash:
        for m, a in mods.items():
            a.obs["input_obs_name"] = a.obs_names.astype(str).to_numpy()
            a.obs_names = a.obs_names.astype(str) + f"_{side_of[m]}"
    seen = pd.Index([])
    for m, a in mods.items():
        if len(a.var_names.intersection(seen)):
            a.var["input_var_name"] = a.var_names.astype(str).to_numpy()
            a.var_names = f"{m}:" + a.var_names.astype(str)
        seen = seen.append(a.var_names)
    gathered = {}
    for key in obsm_keys:
        holders = {}
        for m, a in mods.items():
            if key in a.obsm and side_of[m] not in holders:
                holders[side_of[m]] = (a.obs_names, np.asarray(a.obsm[key]))
            if not keep_obsm_in_mods:
                a.obsm.pop(key, None)
        gathered[key] = holders
    with warnings.catch_warnings(), md.set_options(pull_on_update=False):
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData(mods)
    index = mdata.obs_names
    obs = _joint_obs(mods, index)
    side = pd.Series(pd.NA, index=index, dtype=object)
    for m in reversed(list(mods)):  # the first modality holding a cell names its side
        side[mods[m].obs_names] = side_of[m]
    obs["modality"] = pd.Categorical(side.to_numpy(), categories=side_names)
    mdata.obs = obs
    for key, holders in gathered.items():
        if not holders:
            continue
        dim = next(iter(holders.values()))[1].shape[1]
        dtype = np.result_type(*(emb.dtype for _, emb in holders.values()), np.float32)
        full = np.full((len(index), dim), np.nan, dtype=dtype)
        for names, emb in holders.values():
            full[index.get_indexer(names)] = emb
        mdata.obsm[key] = full
    return mdata


def _joint_obs(mods: Mapping[str, ad.AnnData], index: pd.Index) -> pd.DataFrame:
    """The modalities' obs columns on the MuData's cells (see :func:`joint_mudata`)."""
    out = pd.DataFrame(index=index)
    columns = list(dict.fromkeys(c for a in mods.values() for c in a.obs.columns))
    for column in columns:
        parts = {m: a.obs[column] for m, a in mods.items() if column in a.obs.columns}
        if _agree(list(parts.values())):
            joined = pd.concat([p.astype(object) for p in parts.values()])
            joined = joined[~joined.index.duplicated()]
            out[column] = _like(joined.reindex(index), list(parts.values()))
        else:
            for m, part in parts.items():
                out[f"{m}:{column}"] = _like(part.astype(object).reindex(index), [part])
    return out


def _agree(parts: list[pd.Series]) -> bool:
    """True when the series hold equal values on every cell two of them share."""
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            shared = a.index.intersection(b.index)
            if len(shared):
                x, y = a.loc[shared].astype(object), b.loc[shared].astype(object)
                same = (x.to_numpy() == y.to_numpy()) | (pd.isna(x).to_numpy() & pd.isna(y).to_numpy())
                if not bool(np.all(same)):
                    return False
    return True


def _like(values: pd.Series, parts: list[pd.Series]) -> pd.Series:
    """``values`` in a dtype that mudata writes: numbers stay numbers (float with missing values),
    booleans nullable, everything else categorical."""
    if all(pd.api.types.is_bool_dtype(p.dtype) for p in parts):
        return values.astype("boolean")
    if all(pd.api.types.is_numeric_dtype(p.dtype) and not pd.api.types.is_bool_dtype(p.dtype) for p in parts):
        return pd.to_numeric(values)
    cats = [c for p in parts if isinstance(p.dtype, pd.CategoricalDtype) for c in p.cat.categories]
    strings = values.where(values.isna(), values.astype(str))
    categories = list(dict.fromkeys([str(c) for c in cats] + sorted(set(strings.dropna()))))
    return pd.Series(pd.Categorical(strings, categories=categories), index=values.index)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
#: The output file endings CellBridge writes, and what each holds (for messages).
OUTPUT_SUFFIXES = {".h5mu": "a MuData", ".h5ad": "an AnnData", ".json": "a JSON file",
                   ".tsv": "a tab-separated table"}


def check_suffix(path: str | os.PathLike, suffix: str, what: str | None = None) -> Path:
    """Refuse an output name whose ending does not fit what is written into it.

    Parameters
    ----------
    path
        The output file.
    suffix
        The ending it must have (``".h5mu"``, ``".h5ad"``, ``".json"``, ``".tsv"``).
    what
        What is written, for the message; default from :data:`OUTPUT_SUFFIXES` (e.g. ``"a MuData"``).

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`pathlib.Path`.
    """
    path = Path(path)
    what = what or OUTPUT_SUFFIXES[suffix]
    if not path.name.lower().endswith(suffix):
        fix = path.with_name(path.stem + suffix) if path.suffix else path.with_name(path.name + suffix)
        extra = " (anndata.read_h5ad cannot open a MuData)" if suffix == ".h5mu" else ""
        raise CellBridgeInputError(f"{path}: this output is {what}, whose file name must end in {suffix}{extra}; "
                                   f"use e.g. {fix}.")
    return path


def check_output_file(path: str | os.PathLike, suffix: str, what: str, *, overwrite: bool = False) -> Path:
    """Check an output file before any work is spent: its ending (:func:`check_suffix`), and that it
    can be written (:func:`cellbridge._utils.check_output`: not existing unless ``overwrite``, a
    writable folder).

    Parameters
    ----------
    path
        The output file.
    suffix
        The ending it must have.
    what
        What is written, for the message.
    overwrite
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`pathlib.Path`.
    """
    check_suffix(path, suffix, what)
    return check_output(path, overwrite=overwrite, kind="file")


def write_text(text: str, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically; refuse to replace an existing file unless asked.

    Parameters
    ----------
    text
        The text to write.
    path
        Destination file; missing parent folders are created.
    overwrite
        Replace an existing file (otherwise :class:`FileExistsError`).

    Returns
    -------
    pathlib.Path
        The file written (``path`` as a :class:`pathlib.Path`).
    """
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=overwrite)


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``adata`` to ``path`` atomically; refuse to replace an existing file unless asked.

    Parameters
    ----------
    adata
        The AnnData to write as ``.h5ad``.
    path
        Destination file; missing parent folders are created.
    overwrite
        Replace an existing file (otherwise :class:`FileExistsError`).

    Returns
    -------
    pathlib.Path
        The file written (``path`` as a :class:`pathlib.Path`).
    """
    return atomic_write(path, adata.write_h5ad, overwrite=overwrite)


def write_h5mu(mdata: md.MuData, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``mdata`` to ``path`` atomically; refuse to replace an existing file unless asked.

    Parameters
    ----------
    mdata
        The MuData to write as ``.h5mu``.
    path
        Destination file; missing parent folders are created.
    overwrite
        Replace an existing file (otherwise :class:`FileExistsError`).

    Returns
    -------
    pathlib.Path
        The file written (``path`` as a :class:`pathlib.Path`).
    """
    def write(tmp: str) -> None:
        with warnings.catch_warnings(), md.set_options(pull_on_update=False):
            warnings.simplefilter("ignore", FutureWarning)
            md.write_h5mu(tmp, mdata)

    return atomic_write(path, write, overwrite=overwrite)
