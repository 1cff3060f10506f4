"""Shared fixtures and data factories. Real data lives in ../shared/data beside the checkout.

Tests import nothing from each other (pytest runs with ``--import-mode=importlib``): shared data
factories are fixtures here that return the factory function, e.g. ``def test_x(make_pair):
rna, adt = make_pair(n=60)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

DATA_DIR = Path(os.environ.get("CELLBRIDGE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; fails (not skips) when CELLBRIDGE_REQUIRE_DATA=1 and it is absent."""
    if not DATA_DIR.is_dir():
        if os.environ.get("CELLBRIDGE_REQUIRE_DATA") == "1":
            pytest.fail(f"CELLBRIDGE_REQUIRE_DATA=1 but the shared data folder {DATA_DIR} is missing")
        pytest.skip(f"shared data folder {DATA_DIR} not found")
    return DATA_DIR


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)
    yield


def _make_pair(n=60, n_genes=40, n_other=10, kind="protein", fmt=np.asarray, seed=0):
    """A paired RNA + ADT (``kind="protein"``) or RNA + ATAC peak (``kind="atac"``) toy dataset:
    ``n`` cells in 3 groups with Poisson counts from group-specific rates, the same ``obs_names``
    (``c0``, ``c1``...) and ``obs["cell_type"]`` in both; ``fmt`` wraps each count matrix."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(3), n // 3 + 1)[:n]
    rates = rng.gamma(2.0, 1.0, size=(3, n_genes))
    rna_x = rng.poisson(rates[groups]).astype(np.float32)
    prot_rates = rng.gamma(2.0, 5.0, size=(3, n_other))
    oth_x = rng.poisson(prot_rates[groups]).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(groups.astype(str))},
                       index=[f"c{i}" for i in range(n)])
    rna = ad.AnnData(fmt(rna_x), obs=obs.copy(), var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    if kind == "protein":
        names = [f"CD{i}" for i in range(n_other)]
    else:
        names = [f"chr1:{1000 * i}-{1000 * i + 500}" for i in range(n_other)]
    other = ad.AnnData(fmt(oth_x), obs=obs.copy(), var=pd.DataFrame(index=names))
    return rna, other


@pytest.fixture(scope="session")
def make_pair():
    """The factory of a paired toy dataset: ``make_pair(n=60, n_genes=40, n_other=10,
    kind="protein", fmt=np.asarray, seed=0) -> (rna, other)`` (new objects on every call)."""
    return _make_pair


def _blobs(sizes=(50, 40, 30), dim: int = 4, seed: int = 0):
    """Well separated Gaussian blobs: ``(points, labels)``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centers = rng.normal(size=(len(sizes), dim)) * 30
    return centers[labels] + rng.normal(size=(labels.size, dim)), labels


@pytest.fixture(scope="session")
def blobs():
    """The blob factory ``blobs(sizes=(50, 40, 30), dim=4, seed=0) -> (points, labels)``."""
    return _blobs


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (holds ``src/``, ``tests/``, ``benchmarks/``)."""
    return REPO_ROOT


def _write_10x(path, parts, *, fmt: str = "h5"):
    """Write a 10x feature-barcode matrix of the same cells: ``parts`` maps a feature type
    (``"Gene Expression"``, ``"Peaks"``, ``"Antibody Capture"``) to a cells x features AnnData of
    integer counts. ``fmt``: ``"h5"`` (Cell Ranger v3 ``.h5``), ``"mtx"`` (v3 folder, gzip files)
    or ``"mtx_plain"`` (plain files, as STARsolo writes them). Returns ``path``."""
    import gzip
    import shutil

    import h5py
    import scipy.io
    import scipy.sparse as sp

    adatas = list(parts.values())
    X = sp.hstack([sp.csr_matrix(a.X) for a in adatas], format="csr").astype(np.int32)  # cells x features
    names = np.concatenate([a.var_names.to_numpy(dtype=str) for a in adatas])
    types = np.concatenate([[t] * a.n_vars for t, a in parts.items()])
    ids = np.array([f"FEAT{i:05d}" for i in range(len(names))])
    barcodes = adatas[0].obs_names.to_numpy(dtype=str)
    path = Path(path)
    if fmt == "h5":
        with h5py.File(path, "w") as fh:
            g = fh.create_group("matrix")
            g["barcodes"] = barcodes.astype("S")
            g["data"], g["indices"], g["indptr"] = X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)
            g["shape"] = np.array([X.shape[1], X.shape[0]], dtype=np.int32)
            f = g.create_group("features")
            f["_all_tag_keys"] = np.array([b"genome"])
            f["feature_type"], f["genome"] = types.astype("S"), np.full(len(names), b"GRCh38")
            f["id"], f["name"] = ids.astype("S"), names.astype("S")
        return path
    path.mkdir(parents=True, exist_ok=True)
    scipy.io.mmwrite(path / "matrix.mtx", X.T.tocoo(), field="integer")
    pd.DataFrame({"id": ids, "name": names, "type": types}).to_csv(path / "features.tsv", sep="\t", header=False,
                                                                    index=False)
    pd.Series(barcodes).to_csv(path / "barcodes.tsv", header=False, index=False)
    if fmt == "mtx":
        for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
            with open(path / name, "rb") as src, gzip.open(path / f"{name}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            (path / name).unlink()
    return path


@pytest.fixture(scope="session")
def write_10x():
    """The 10x writer ``write_10x(path, {"Gene Expression": rna, "Peaks": atac}, fmt="h5")`` (also
    ``fmt="mtx"``: a gzip v3 folder, ``"mtx_plain"``: plain files) -> ``path``."""
    return _write_10x
