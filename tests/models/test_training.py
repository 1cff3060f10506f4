"""Shared training utilities (cellbridge.models.training)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cellbridge._errors import CellBridgeInputError, TrainingDivergedError
from cellbridge.models.training import (
    CHECKPOINT_FILE,
    Checkpoint,
    EarlyStopping,
    autocast,
    check_finite_loss,
    encode_all,
    load_model_dir,
    make_optimizer,
    prepare_checkpoint_dir,
    rng_state,
    save_model_dir,
    select_device,
    set_rng_state,
    set_seed,
)


def test_set_seed_repeats_torch_and_numpy_draws():
    set_seed(5)
    a = (torch.rand(3), np.random.rand(3))
    set_seed(5)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            select_device("cuda")


def test_early_stopping_keeps_and_restores_the_best_weights():
    module = nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2)
    with torch.no_grad():
        module.weight.fill_(1.0)
    assert not stopper.step(1.0, 0, module)
    with torch.no_grad():
        module.weight.fill_(2.0)
    assert not stopper.step(1.5, 1, module) and stopper.step(1.2, 2, module)  # 2 epochs without gain
    stopper.restore(module)
    assert stopper.best_epoch == 0 and torch.all(module.weight == 1.0)


def test_save_and_load_model_dir(tmp_path):
    module = nn.Linear(3, 2)
    meta = {"model": "x", "n": np.int64(3), "a": np.arange(2)}
    save_model_dir(tmp_path / "m", module, meta, extra={"mean": np.ones(3, dtype=np.float32)})
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model_dir(tmp_path / "m", module, meta)
    state, loaded = load_model_dir(tmp_path / "m")
    assert loaded == {"model": "x", "n": 3, "a": [0, 1]}
    assert torch.equal(state["weight"], module.weight.detach()) and torch.equal(state["extra/mean"], torch.ones(3))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["metadata.json", "model.pt"]
    json.loads((tmp_path / "m" / "metadata.json").read_text())
    with pytest.raises(FileNotFoundError, match="no model.pt"):
        load_model_dir(tmp_path)


def test_optimizers_precision_and_chunked_encoding():
    params = [nn.Parameter(torch.zeros(2))]
    adam = make_optimizer("adam", params, 1e-2)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["amsgrad"]
    assert make_optimizer("adadelta", params, 1.0, rho=0.5).defaults["rho"] == 0.5
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("sgd", params, 1.0)
    with pytest.raises(ValueError, match="precision"):
        autocast(torch.device("cpu"), "16")
    X = torch.arange(10.0).reshape(5, 2)
    out = encode_all(lambda x: 2 * x, X, chunk=2)
    assert out.dtype == np.float32 and np.array_equal(out, 2 * X.numpy())


def test_rng_state_round_trip_repeats_every_generator():
    import random

    set_seed(3)
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_check_finite_loss_names_epoch_term_and_fix():
    check_finite_loss({"loss": 1.0, "rec": 0.5}, model="M", epoch=0, hints="h")
    with pytest.raises(TrainingDivergedError, match=r"M training diverged: the 'kl' loss term is nan at "
                                                     r"finetune epoch 4.*Likely fixes: lower lr"):
        check_finite_loss({"loss": float("nan"), "kl": float("nan")}, model="M", epoch=4, phase="finetune",
                          hints="lower lr")


def test_checkpoint_saves_atomically_and_refuses_another_run(tmp_path):
    state = {"w": torch.arange(3.0), "nested": {"best": None, "n": 2}}
    ckpt = Checkpoint(tmp_path, run={"lr": 0.1, "max_epochs": 5}, model="M", resume_hint="resume", every=2,
                      seconds=None)
    assert [ckpt.due(), ckpt.due()] == [False, True]
    ckpt.save({"epoch": 1, "big": 2 ** 100}, state)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left
    meta, tensors = Checkpoint(tmp_path, run={"lr": 0.1, "max_epochs": 9}, model="M", resume_hint="r").load()
    assert meta["epoch"] == 1 and meta["big"] == 2 ** 100 and not meta["finished"]  # more epochs are allowed
    assert torch.equal(tensors["w"], state["w"]) and tensors["nested"] == {"best": None, "n": 2}
    with pytest.raises(CellBridgeInputError, match=r"differs in \['lr'\]"):
        Checkpoint(tmp_path, run={"lr": 0.2}, model="M", resume_hint="r").load()
    with pytest.raises(CellBridgeInputError, match="already holds a M training checkpoint; resume it"):
        ckpt.check_fresh()
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"damaged")
    with pytest.raises(CellBridgeInputError, match="not a readable M checkpoint"):
        ckpt.load()


def test_prepare_checkpoint_dir_follows_resume_and_overwrite(tmp_path):
    with pytest.raises(CellBridgeInputError, match="no training checkpoint to resume"):
        prepare_checkpoint_dir(tmp_path / "c", resume=True, overwrite=False)
    Checkpoint(tmp_path / "c", run={}, model="M", resume_hint="r").save({}, {})
    with pytest.raises(CellBridgeInputError, match="interrupted training; pass `resume=True`"):
        prepare_checkpoint_dir(tmp_path / "c", resume=False, overwrite=False)
    assert prepare_checkpoint_dir(tmp_path / "c", resume=True, overwrite=False) == tmp_path / "c"
    prepare_checkpoint_dir(tmp_path / "c", resume=False, overwrite=True)
    assert not (tmp_path / "c").exists()  # the checkpoint and its then empty folder are gone
