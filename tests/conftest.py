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
