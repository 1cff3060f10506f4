"""Memory-bounded scMDCF: sparse inputs scaled per batch, chunked embeddings, sampled KMeans."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cellbridge as cb
from cellbridge.models.scmdcf import _training as M
from cellbridge.models.scmdcf import resolve_params
from cellbridge.models.scmdcf._data import PairedBatches, is_scaled_per_batch, prepare_paired


def _both(make_pair, **kw):
    rna, adt = make_pair(n=90, fmt=sp.csr_matrix)
    dense = prepare_paired(rna, adt, **kw)
    lazy = prepare_paired(rna, adt, sparse_above=0, **kw)
    return dense, lazy


@pytest.mark.parametrize("clip", [None, 1.5])
def test_sparse_batches_equal_dense_batches(clip, make_pair):
    dense, lazy = _both(make_pair, clip=clip)
    assert not is_scaled_per_batch(dense[0]) and is_scaled_per_batch(lazy[0])
    assert sp.issparse(lazy[0].X) and lazy[0].X.dtype == np.float32
    assert list(lazy[0].var_names) == list(dense[0].var_names)
    src_d = PairedBatches.from_prepared(*dense, torch.device("cpu"))
    src_s = PairedBatches.from_prepared(*lazy, torch.device("cpu"))
    assert src_s.is_sparse and not src_d.is_sparse
    gen_d, gen_s = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for idx_d, idx_s in zip(M.batch_indices(90, 16, gen_d), M.batch_indices(90, 16, gen_s)):
        assert torch.equal(idx_d, idx_s)
        for a, b in zip(src_d.rows(idx_d), src_s.rows(idx_s)):
            assert a.dtype == b.dtype == torch.float32
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=2e-5)
    for a, b in zip(src_d.rows(slice(None)), src_s.rows(slice(None))):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=2e-5)


def test_pca_representation_per_batch_matches_dense(make_pair):
    dense, lazy = _both(make_pair, rna_representation="pca", n_pcs=5)
    np.testing.assert_allclose(lazy[0].X, dense[0].X, rtol=0, atol=1e-4)


def test_threshold_follows_full_batch_switch(make_pair):
    rna, adt = make_pair(n=60)
    assert resolve_params("reference", "protein", {"batch_size": None, "full_batch_max": 10}).sparse_threshold() is None
    assert resolve_params("reference", "protein", {"batch_size": 256, "full_batch_max": 20000}).sparse_threshold() == 20000
    small = cb.scMDCF(rna, adt, n_clusters=3, accelerator="cpu")  # default preset, 60 <= 20,000: dense
    assert not sp.issparse(small.rna.X) and not small._source().is_sparse
    big = cb.scMDCF(rna, adt, n_clusters=3, accelerator="cpu", batch_size=16, full_batch_max=50)
    assert big._source().is_sparse
    module = small.module
    z_dense = M.embed(module, small._source(), chunk=7)
    z_sparse = M.embed(module, big._source(), chunk=64)
    np.testing.assert_allclose(z_sparse.numpy(), z_dense.numpy(), rtol=0, atol=1e-4)


def test_sparse_training_deterministic_and_picklable(make_pair):
    rna, adt = make_pair(n=60)
    kw = {"n_clusters": 3, "accelerator": "cpu", "batch_size": 16, "full_batch_max": None, "dec_target": "fixed"}
    z = [cb.scMDCF(rna, adt, **kw).train(2, 2, progress=False).get_latent() for _ in range(2)]
    assert np.array_equal(z[0], z[1]) and np.isfinite(z[0]).all()
    source = cb.scMDCF(rna, adt, **kw)._source()
    copy = pickle.loads(pickle.dumps(source))
    idx = torch.tensor([5, 1, 40])
    assert all(torch.equal(a, b) for a, b in zip(copy.rows(idx), source.rows(idx)))


def test_kmeans_sample_above_max_cells():
    rng = np.random.default_rng(0)
    z = np.vstack([rng.normal(c, 0.1, size=(300, 2)) for c in (0, 5, 10)]).astype(np.float32)
    full = M.kmeans_centers(z, 3, seed=0, n_init=3, max_cells=None)
    sampled = M.kmeans_centers(z, 3, seed=0, n_init=3, max_cells=200)
    assert np.array_equal(sampled, M.kmeans_centers(z, 3, seed=0, n_init=3, max_cells=200))
    np.testing.assert_allclose(np.sort(sampled[:, 0]), np.sort(full[:, 0]), atol=0.05)
