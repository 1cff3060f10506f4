"""Reading single-cell files and writing results atomically."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from ._errors import CellBridgeInputError
from ._utils import atomic_write


def read(path: str | os.PathLike, *, backed: bool = False) -> ad.AnnData:
    """Read one modality from ``.h5ad``, a 10x ``.h5`` or a 10x ``.mtx`` folder/file.

    Parameters
    ----------
    path
        File (``.h5ad``, ``.h5``, ``.mtx``/``.mtx.gz``) or a 10x folder holding ``matrix.mtx.gz``.
    backed
        Open ``.h5ad`` files in backed (read-only, on-disk) mode.
    """
    path = Path(path)
    if not path.exists():
        raise CellBridgeInputError(f"{path} does not exist.")
    name = path.name.lower()
    if path.is_dir():
        return sc.read_10x_mtx(path)
    if name.endswith(".h5ad"):
        return ad.read_h5ad(path, backed="r" if backed else None)
    if name.endswith(".h5"):
        return sc.read_10x_h5(path)
    if name.endswith((".mtx", ".mtx.gz")):
        return sc.read_mtx(path)
    raise CellBridgeInputError(
        f"Cannot tell the format of {path}; use .h5ad, a 10x .h5, a .mtx file or a 10x folder."
    )


def read_mudata(path: str | os.PathLike) -> md.MuData:
    """Read a MuData ``.h5mu`` file (e.g. RNA with ``"atac"`` or ``"adt"``).

    Parameters
    ----------
    path
        The ``.h5mu`` file.

    Returns
    -------
    mudata.MuData
        The multimodal data, read into memory.
    """
    return md.read_h5mu(Path(path))


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
    with h5py.File(path, "r") as fh:
        missing = [k for k in ("X1", "X2") if k not in fh]
        if missing:
            raise CellBridgeInputError(f"{path} lacks dataset(s) {missing}; expected X1, X2 (and Y).")
        x1 = np.asarray(fh["X1"], dtype=np.float32)
        x2 = np.asarray(fh["X2"], dtype=np.float32)
        y = np.asarray(fh["Y"]) if "Y" in fh else None
    if x1.shape[0] != x2.shape[0]:
        raise CellBridgeInputError(f"{path}: X1 has {x1.shape[0]} cells but X2 has {x2.shape[0]}.")
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(x1.shape[0])])
    if y is not None:
        obs["label"] = pd.Categorical(y.astype(int).astype(str))
    rna = ad.AnnData(sp.csr_matrix(x1), obs=obs.copy())
    rna.var_names = [f"gene{i}" for i in range(x1.shape[1])]
    other = ad.AnnData(sp.csr_matrix(x2), obs=obs.copy())
    other.var_names = [f"feature{i}" for i in range(x2.shape[1])]
    return rna, other


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
    return atomic_write(path, lambda tmp: md.write_h5mu(tmp, mdata), overwrite=overwrite)
