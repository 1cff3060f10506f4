"""Checkpoints and resume: an interrupted training continues to exactly the result of an
uninterrupted one (CPU, bit for bit), in process (Ctrl-C delivered at a fixed epoch), through the
CLI after a real SIGINT of a subprocess, and after a SIGKILL; Ctrl-C leaves a checkpoint and a
message saying how to resume; a checkpoint of another run is refused."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time

import mudata as md
import numpy as np
import pytest
import torch

import cellbridge as cb
from cellbridge._errors import CellBridgeInputError, TrainingInterrupted
from cellbridge.cli import main
from cellbridge.models.training import CHECKPOINT_FILE, Checkpoint

BICLUM = {"modality": "atac", "k_mnn": 5, "n_pcs": 10, "n_profile": 32, "batch_size": 32, "accelerator": "cpu"}
SCMDCF = {"n_top_rna": 50, "n_models": 2, "batch_size": 64, "full_batch_max": None, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def unpaired():
    rna = cb.datasets.simulate_multiome(160, n_genes=60, n_types=3, seed=0)["rna"]
    return rna[80:].copy(), rna[:80].copy()


@pytest.fixture(scope="module")
def paired():
    return cb.datasets.simulate_multiome(150, n_genes=60, n_types=3, peaks_per_gene=1, n_background_peaks=20, seed=0)


@pytest.fixture(scope="module")
def biclum(unpaired):
    """An untrained model; each test trains deep copies of it (the preparation is done once)."""
    torch.set_num_threads(1)
    return cb.BiCLUM(*unpaired, **BICLUM)


@pytest.fixture(scope="module")
def scmdcf(paired):
    torch.set_num_threads(1)  # K estimated; the fixed DEC target P is kept between steps
    return cb.scMDCF(paired["rna"], paired["adt"], **SCMDCF, dec_target="fixed", target_update_interval=2)


def _interrupt_after(monkeypatch, n_epochs: int) -> None:
    """Deliver a real SIGINT (as Ctrl-C does) during the epoch after ``n_epochs`` finished ones."""
    calls = {"n": 0}
    due = Checkpoint.due

    def counting_due(self):
        calls["n"] += 1
        if calls["n"] == n_epochs:
            signal.raise_signal(signal.SIGINT)
        return due(self)

    monkeypatch.setattr(Checkpoint, "due", counting_due)


def test_biclum_resume_after_ctrl_c_is_bit_identical(biclum, tmp_path, monkeypatch):
    straight = copy.deepcopy(biclum).train(8, progress=False)
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted, match="resume=True") as err:
        copy.deepcopy(biclum).train(8, progress=False, checkpoint_dir=tmp_path)
    assert "epoch 4 of 8" in str(err.value) and (tmp_path / CHECKPOINT_FILE).is_file()
    monkeypatch.undo()
    resumed = copy.deepcopy(biclum).train(8, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert resumed.history_ == straight.history_
    assert resumed.train_summary_["best_epoch"] == straight.train_summary_["best_epoch"]
    for name, value in straight.module.state_dict().items():
        assert torch.equal(resumed.module.state_dict()[name], value), name
    np.testing.assert_array_equal(resumed.get_latent(modality="rna"), straight.get_latent(modality="rna"))
    # a finished run resumes to its result at once; a new run refuses to overwrite the checkpoint
    again = copy.deepcopy(biclum).train(8, progress=False, checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(again.get_latent(modality="other"), straight.get_latent(modality="other"))
    with pytest.raises(CellBridgeInputError, match="already holds"):
        copy.deepcopy(biclum).train(8, progress=False, checkpoint_dir=tmp_path)


def test_biclum_checkpoint_of_another_run_is_refused(biclum, tmp_path):
    copy.deepcopy(biclum).train(2, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CellBridgeInputError, match=r"different run \(differs in \['lr'\]\)"):
        copy.deepcopy(biclum).train(2, progress=False, checkpoint_dir=tmp_path, resume=True, lr=1e-3)
    with pytest.raises(CellBridgeInputError, match="no BiCLUM checkpoint to resume"):
        copy.deepcopy(biclum).train(2, progress=False, checkpoint_dir=tmp_path / "new", resume=True)


@pytest.mark.parametrize("stop_after", [2, 6])  # inside pre-training of member 1; fine-tuning of member 1
def test_scmdcf_resume_is_bit_identical(scmdcf, tmp_path, monkeypatch, stop_after):
    straight = copy.deepcopy(scmdcf).train(4, 4, progress=False)
    _interrupt_after(monkeypatch, stop_after)
    with pytest.raises(TrainingInterrupted, match="resume=True"):
        copy.deepcopy(scmdcf).train(4, 4, progress=False, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    resumed = copy.deepcopy(scmdcf).train(4, 4, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert resumed.history_ == straight.history_ and resumed.n_clusters_ == straight.n_clusters_
    np.testing.assert_array_equal(resumed.get_latent(), straight.get_latent())
    np.testing.assert_array_equal(resumed.predict_clusters(), straight.predict_clusters())


def test_distributed_training_refuses_checkpoints(biclum, scmdcf, tmp_path):
    with pytest.raises(CellBridgeInputError, match="single-process"):
        biclum.train(2, progress=False, world_size=2, checkpoint_dir=tmp_path)
    with pytest.raises(CellBridgeInputError, match="single-process"):
        scmdcf.train(2, 2, progress=False, world_size=2, checkpoint_dir=tmp_path)
    assert not tmp_path.joinpath(CHECKPOINT_FILE).exists()


# ------------------------------------------------------------------------------------ subprocesses
DRIVER = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from cellbridge.models.biclum import _training
    epoch = _training.BiCLUMTrainer._epoch
    def slow_epoch(self, opt):  # slow enough to be interrupted mid-run, same numbers
        time.sleep(0.2)
        return epoch(self, opt)
    _training.BiCLUMTrainer._epoch = slow_epoch
    from cellbridge.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory, unpaired):
    folder = tmp_path_factory.mktemp("cli")
    rna, other = unpaired
    paths = {"rna": folder / "rna.h5ad", "ga": folder / "ga.h5ad", "driver": folder / "driver.py"}
    rna.write_h5ad(paths["rna"])
    other.write_h5ad(paths["ga"])
    paths["driver"].write_text(DRIVER)
    return paths


def _command(cli_inputs, out, *extra):
    return ["integrate", "--rna", str(cli_inputs["rna"]), "--gene-activity", str(cli_inputs["ga"]),
            "--out", str(out), "--epochs", "12", "--checkpoint-every", "1", "--quiet", *extra]


def _start(cli_inputs, out):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(cli_inputs["driver"]), *_command(cli_inputs, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight_cli(cli_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "result.h5mu"
    assert main(_command(cli_inputs, out)) == 0
    assert not out.with_name(out.name + ".checkpoint").exists()  # removed once the result is written
    return md.read_h5mu(out)


def _same_result(out, straight):
    result = md.read_h5mu(out)
    for name in straight.mod:
        np.testing.assert_array_equal(result.mod[name].obsm["X_biclum"], straight.mod[name].obsm["X_biclum"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_cli_resume_after_a_signal_gives_the_uninterrupted_result(cli_inputs, straight_cli, tmp_path, capsys, sig):
    out = tmp_path / "result.h5mu"
    checkpoint = tmp_path / "result.h5mu.checkpoint" / CHECKPOINT_FILE
    proc = _start(cli_inputs, out)
    try:
        _wait_for(checkpoint, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err, err
    assert not out.exists() and checkpoint.is_file()
    assert main(_command(cli_inputs, out)) == 2  # a new run does not silently discard the checkpoint
    assert "--resume" in capsys.readouterr().err and checkpoint.is_file()
    assert main(_command(cli_inputs, out, "--resume")) == 0
    _same_result(out, straight_cli)
    assert not checkpoint.parent.exists()
