"""Data-parallel scMDCF (cellbridge.models.scmdcf._training) against single-process training.

Tolerances. Same data, seed and initial weights; 250 cells in global batches of 63/63/62/62 cells,
split 32/31 rows over two gloo processes (uneven on purpose: per-cell means are then re-weighted).
The runs differ only in float32 reduction order (all-reduced joint code distribution, cluster
frequencies and BatchNorm sums, DDP's averaged gradients), and we measured after 3 + 3 epochs:
epoch losses within 2.1e-6 relative (the small KL term; the others within 1.2e-7), every weight,
running statistic and centroid within 3e-7, embeddings within 3e-6. We allow 1e-5 relative on
losses, 1e-5 on weights and 1e-4 on embeddings.

Both phases use Adadelta here (pre-training lr 0.1). With the preset's Adam at lr 1e-2 (or Adadelta
at lr 1) the optimisation of this tiny problem is chaotic: any rounding difference, such as that
between two thread counts in one process, grows ~100-fold per epoch, so trajectories cannot be
compared; with Adam, Linear biases in front of a BatchNorm (gradient = rounding noise) also walk by
up to lr per step (see tests/models/biclum/test_training.py). The gradients themselves agree to float rounding
for any optimiser: with Adam at lr 1e-5 the losses agree to 1e-7.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.models.scmdcf._training import _check_batches_cover_ranks

EPOCHS = (3, 3)
OPTIONS = {"n_clusters": 3, "accelerator": "cpu", "batch_size": 64, "full_batch_max": None, "n_top_rna": 50,
           "pretrain_optimizer": "adadelta", "pretrain_lr": 0.1, "n_models": 1}


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test thread setting
    return cb.datasets.simulate_multiome(250, n_genes=60, n_types=3, peaks_per_gene=1, n_background_peaks=20,
                                         seed=0)


def _model(data, **kw) -> cb.scMDCF:
    return cb.scMDCF(data["rna"], data["adt"], **{**OPTIONS, **kw})


def _same_training(model: cb.scMDCF, single: cb.scMDCF, exact: bool = False,
                   loss_keys: tuple[str, ...] = ("loss", "rec_rna", "rec_other", "cl", "kl")) -> None:
    rtol, atol = (0, 0) if exact else (1e-5, 1e-5)
    assert [h["phase"] for h in model.history_] == [h["phase"] for h in single.history_]
    for got, ref in zip(model.history_, single.history_):
        for key in loss_keys:
            if key in ref:
                np.testing.assert_allclose(got[key], ref[key], rtol=rtol, err_msg=key)
    assert len(model.modules_) == len(single.modules_)
    for member, ref_member in zip(model.modules_, single.modules_):
        state = member.state_dict()
        for name, ref in ref_member.state_dict().items():
            np.testing.assert_allclose(state[name], ref, rtol=0, atol=atol, err_msg=name)
    np.testing.assert_allclose(model.get_latent(), single.get_latent(), rtol=0, atol=0 if exact else 1e-4)


@pytest.fixture(scope="module")
def single(data):
    return _model(data).train(*EPOCHS, progress=False)


def test_two_processes_match_one(data, single, tmp_path):
    model = _model(data)
    model.train(*EPOCHS, progress=False, world_size=2, init_method=f"file://{tmp_path / 'pg'}")
    assert model.is_trained_ and model.train_summary_["world_size"] == 2
    _same_training(model, single)


def test_two_processes_train_every_ensemble_member(data, tmp_path):
    # one epoch per phase keeps the chaotic growth of rounding differences (module docstring)
    # short. Member 1's KL term is only ~1e-4 here, so float32 rounding (~1e-8) is ~1e-4 of it:
    # the total loss, every weight and the embeddings are compared, not the KL term alone.
    single = _model(data, n_models=2).train(1, 1, progress=False)
    model = _model(data, n_models=2)
    model.train(1, 1, progress=False, world_size=2, init_method=f"file://{tmp_path / 'pg'}")
    assert {h["member"] for h in model.history_} == {0, 1}
    _same_training(model, single, loss_keys=("loss", "rec_rna", "rec_other", "cl"))


@pytest.mark.parametrize("n_models", [1, 2])
def test_torchrun_environment_single_process_is_exact(data, monkeypatch, n_models):
    """Under torchrun with one rank the data-parallel code path is bit-identical (fixed DEC target,
    K estimated on rank 0 and broadcast), also when the process group is set up and torn down
    once per ensemble member."""
    from cellbridge.models.distributed import _free_port

    kw = {"n_clusters": None, "dec_target": "fixed", "target_update_interval": 2, "n_models": n_models}
    reference = _model(data, **kw).train(2, 2, progress=False)
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    model = _model(data, **kw)
    assert model.train(2, 2, progress=False) is model  # world_size from the environment
    assert model.n_clusters_ == reference.n_clusters_ and model.n_clusters_source_.startswith("estimated")
    assert {h["member"] for h in model.history_} == set(range(n_models))
    _same_training(model, reference, exact=True)
    assert model.train_summary_["world_size"] == 1
    assert not torch.distributed.is_initialized()


def test_rejects_batches_smaller_than_world_size(data):
    with pytest.raises(CellBridgeInputError, match="fewer than world_size"):
        _model(data, batch_size=2).train(1, 1, progress=False, world_size=3)
    _check_batches_cover_ranks(250, None, 2)
    with pytest.raises(CellBridgeInputError, match="world_size > 1"):
        _model(data).train(1, 1, progress=False, backend="gloo")
