"""Data-parallel BiCLUM (cellbridge.models.biclum._training with DataParallelGroup) against
single-process training; the row source of the training targets.

Tolerances. Same data, seed and initial weights; dropout is off because its masks are drawn
per process (and per slice), so they would differ from the single-process run by design. The
two runs then differ only in float32 reduction order (means of local means, all-reduced
BatchNorm sums and gradient buckets), and we measured on this problem after 5 epochs x 6 steps:
epoch losses within 1e-7 relative, every weight that changes the training-mode function within
1.2e-7 (one float32 ulp) and training-mode embeddings within 1e-6. The exception are the
Linear biases directly before a BatchNorm: the BatchNorm removes them, so their gradient is 0 in
exact arithmetic and pure rounding noise in practice, which Adam rescales into steps of up to
``lr``; they (and the running means that follow them) may differ by up to ``lr x steps``
(measured 3e-3 for 30 steps at lr 1e-4; we allow 2 x lr x steps), and eval-mode embeddings, which use those running
means, by ~1e-3. Two single-process runs with different thread counts show the same effect.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.models.biclum import _training
from cellbridge.models.biclum._data import prepare_unpaired

EPOCHS = 5


@pytest.fixture(scope="module")
def problem():
    """A small model (400 anchors, 6 global batches of 64), its initial weights and the 1-process result."""
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test thread setting
    rna = cb.datasets.simulate_multiome(400, n_genes=100, n_types=3, seed=0)["rna"]
    other, rna = rna[:200].copy(), rna[200:].copy()
    model = cb.BiCLUM(rna, other, modality="atac", k_mnn=10, n_pcs=10, n_profile=64, batch_size=64, seed=0)
    for layer in model.module.modules():
        if isinstance(layer, nn.Dropout):
            layer.p = 0.0
    init = copy.deepcopy(model.module.state_dict())
    assert model.train(max_epochs=EPOCHS, progress=False) is model
    single = {"history": copy.deepcopy(model.history_), "summary": copy.deepcopy(model.train_summary_),
              "state": copy.deepcopy(model.module.state_dict()),
              "train_z": _train_mode_latent(model), "eval_z": model.get_latent(modality="rna")}
    return model, init, single


def _reset(model, init) -> None:
    model.module.load_state_dict(init)


def _train_mode_latent(model) -> np.ndarray:
    """RNA cell embeddings with batch statistics (all cells as one batch): blind to pre-BatchNorm biases."""
    module = copy.deepcopy(model.module).train()
    with torch.no_grad():
        return module.encode_cells(torch.as_tensor(model.data.rna.pca), 1).numpy()


def _pre_batchnorm_biases(module: nn.Module) -> set[str]:
    names = set()
    for prefix, seq in module.named_modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Linear) and isinstance(seq[i + 1], nn.BatchNorm1d):
                    names.add(f"{prefix}.{i}.bias")
    return names


def _assert_same_training(model, single, *, n_steps: int, exact: bool = False) -> None:
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-5)
    assert [(r["phase"], r["epoch"]) for r in model.history_] == [(r["phase"], r["epoch"]) for r in single["history"]]
    for key in ("loss", "rec", "cell", "feature"):
        np.testing.assert_allclose([r[key] for r in model.history_], [r[key] for r in single["history"]],
                                   rtol=0 if exact else 1e-6, err_msg=key)
    assert model.train_summary_["best_epoch"] == single["summary"]["best_epoch"]
    state, free = model.module.state_dict(), _pre_batchnorm_biases(model.module)
    lr = model.params.lr
    for name, ref in single["state"].items():
        if name in free or name.endswith("running_mean"):
            # Each run walks up to ~lr per Adam step, in unrelated directions.
            np.testing.assert_allclose(state[name], ref, rtol=0, atol=0 if exact else 2 * lr * n_steps, err_msg=name)
        elif name == "latent_mean":  # mean of eval-mode embeddings: the running means' tolerance, as below
            np.testing.assert_allclose(state[name], ref, rtol=0, atol=0 if exact else 1e-2, err_msg=name)
        else:
            np.testing.assert_allclose(state[name], ref, err_msg=name, **tol)
    np.testing.assert_allclose(_train_mode_latent(model), single["train_z"], **tol)
    # Eval mode uses the running means above (embedding values are O(1); measured 9e-4).
    np.testing.assert_allclose(model.get_latent(modality="rna"), single["eval_z"], rtol=0, atol=0 if exact else 1e-2)


def test_two_processes_match_one(problem, tmp_path):
    model, init, single = problem
    _reset(model, init)
    assert model.train(max_epochs=EPOCHS, progress=False, world_size=2, backend="gloo",
                       init_method=f"file://{tmp_path / 'pg'}") is model
    assert model.train_summary_["world_size"] == 2 and model.train_summary_["local_batch_size"] == 32
    _assert_same_training(model, single, n_steps=EPOCHS * (400 // 64))


def test_all_ranks_stop_together(problem):
    model, init, _ = problem
    _reset(model, init)
    model.train(max_epochs=20, progress=False, world_size=2, patience=1, lr=3e-3)
    losses, summary = [r["loss"] for r in model.history_], model.train_summary_
    stopped = len(losses)
    assert stopped < 20 and summary["epochs"] == stopped and summary["epochs_per_rank"] == [stopped, stopped]
    assert losses[summary["best_epoch"]] == min(losses)


def test_torchrun_environment_single_process_is_exact(problem, monkeypatch):
    """Under torchrun (RANK/WORLD_SIZE set) training runs in this process; with one rank it is bit-identical."""
    model, init, single = problem
    _reset(model, init)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    from cellbridge.models.distributed import _free_port

    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    model.train(max_epochs=EPOCHS, progress=False)  # world_size from the environment
    _assert_same_training(model, single, n_steps=EPOCHS * (400 // 64), exact=True)
    assert model.train_summary_["world_size"] == 1
    assert not torch.distributed.is_initialized()


def test_rejects_uneven_batch_before_spawning(problem):
    model, _, _ = problem
    with pytest.raises(CellBridgeInputError, match="multiple of world_size"):
        model.train(world_size=3, batch_size=64, progress=False)


def test_sparse_row_source_matches_dense(monkeypatch):
    sim = cb.datasets.simulate_multiome(400, n_genes=120, n_types=3, seed=11)
    data = prepare_unpaired(sim["rna"], sim["rna"][::-1].copy(), modality="atac")
    idx = np.array([3, 1, 1, 7])
    for kind in ("counts", "scaled"):
        dense = _training.RowSource(data.rna, kind, torch.device("cpu")).rows(idx)
        monkeypatch.setattr(_training, "DENSE_LIMIT", 0)
        sparse = _training.RowSource(data.rna, kind, torch.device("cpu")).rows(idx)
        monkeypatch.undo()
        torch.testing.assert_close(dense, sparse)


def test_make_config_reads_the_resolved_params():
    from cellbridge.models.biclum import resolve_params

    params = resolve_params("default", "protein", {"lr": 1e-3, "gamma": [0.5, 2.0]})
    cfg = _training.make_config(params, max_time=10.0, seed=3)
    assert (cfg.lr, cfg.gamma, cfg.max_time, cfg.seed) == (1e-3, (0.5, 2.0), 10.0, 3)
    assert (cfg.tau_cell, cfg.beta, cfg.max_epochs, cfg.feature_mode) == (100.0, 1e5, 75, "sampled")
