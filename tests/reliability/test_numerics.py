"""Bad numbers are refused with their valid range before any work (API and CLI: exit code 2, the
flag named, nothing written); 0 means 0 where it is meaningful; a training that diverges, a model
with NaN weights and a collapsed embedding stop with a clear error instead of a silent result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cellbridge as cb
from cellbridge._errors import CellBridgeInputError, DegenerateEmbeddingError, TrainingDivergedError
from cellbridge.cli import main

BICLUM = {"modality": "atac", "k_mnn": 5, "n_pcs": 10, "n_profile": 32, "batch_size": 32, "accelerator": "cpu"}
SCMDCF = {"n_top_rna": 50, "n_models": 1, "n_clusters": 3, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def unpaired():
    rna = cb.datasets.simulate_multiome(120, n_genes=60, n_types=3, seed=0)["rna"]
    return rna[60:].copy(), rna[:60].copy()


@pytest.fixture(scope="module")
def paired():
    return cb.datasets.simulate_multiome(90, n_genes=60, n_types=3, peaks_per_gene=1, n_background_peaks=20, seed=0)


@pytest.fixture(scope="module")
def biclum(unpaired):
    torch.set_num_threads(1)
    return cb.BiCLUM(*unpaired, **BICLUM)


@pytest.fixture(scope="module")
def files(tmp_path_factory, paired):
    """Tiny input files of the CLI (RNA, gene activity as precomputed, ADT)."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {}
    for name, key in (("rna", "rna"), ("ga", "rna"), ("adt", "adt")):
        paths[name] = folder / f"{name}.h5ad"
        paired[key].write_h5ad(paths[name])
    return paths


# ------------------------------------------------------------------------------------ API: presets
@pytest.mark.parametrize(("option", "value", "names"), [
    ("n_pcs", 0, ["n_pcs", "at least 1"]),
    ("n_pcs", -1, ["n_pcs", "at least 1"]),
    ("n_top_genes", 0, ["n_top_genes", "at least 1"]),
    ("k_mnn", 0, ["k_mnn", "at least 1"]),
    ("batch_size", 0, ["batch_size", "at least 2"]),
    ("tau_cell", 0, ["tau_cell", "at least"]),
    ("mnn_smooth_weight", 1.5, ["mnn_smooth_weight", "between 0 and 1"]),
    ("similarity", "euclidean", ["similarity", "one of"]),
    ("max_epochs", 2.5, ["max_epochs", "whole number"]),
])
def test_biclum_refuses_bad_options_before_preparing(unpaired, option, value, names):
    with pytest.raises(CellBridgeInputError) as err:
        cb.BiCLUM(*unpaired, **{**BICLUM, option: value})
    assert all(n in str(err.value) for n in names), str(err.value)


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"max_epochs": 0}, ["max_epochs", "at least 1"]),
    ({"max_epochs": -3}, ["max_epochs", "at least 1"]),
    ({"max_epochs": 1, "max_time": -1}, ["max_time", "above 0"]),
    ({"max_epochs": 1, "batch_size": 0}, ["batch_size", "at least 2"]),
    ({"max_epochs": 1, "resume": True}, ["checkpoint_dir"]),
])
def test_biclum_train_refuses_bad_numbers_and_stays_untrained(biclum, kwargs, names):
    with pytest.raises(CellBridgeInputError) as err:
        biclum.train(progress=False, **kwargs)
    assert all(n in str(err.value) for n in names), str(err.value)
    assert not biclum.is_trained_ and biclum.history_ == []


def test_checkpoint_interval_is_checked(biclum, tmp_path):
    with pytest.raises(CellBridgeInputError, match="checkpoint_every"):
        biclum.train(1, progress=False, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=0)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(("option", "value", "names"), [
    ("n_pcs", 0, ["n_pcs", "at least 1"]),
    ("n_models", 0, ["n_models", "at least 1"]),
    ("rho", 2.0, ["rho", "between 0 and 1"]),
    ("cluster_method", "spectral", ["cluster_method", "one of"]),
    ("pretrain_epochs", -1, ["pretrain_epochs", "at least 0"]),
    ("n_clusters", 1, ["n_clusters", "between 2"]),
    ("n_clusters", 2.5, ["n_clusters", "whole number"]),
])
def test_scmdcf_refuses_bad_options(paired, option, value, names):
    with pytest.raises(CellBridgeInputError) as err:
        cb.scMDCF(paired["rna"], paired["adt"], **{**SCMDCF, option: value})
    assert all(n in str(err.value) for n in names), str(err.value)


def test_zero_pretraining_epochs_skip_pretraining(paired):
    model = cb.scMDCF(paired["rna"], paired["adt"], **SCMDCF).train(0, 2, progress=False)
    assert [row["phase"] for row in model.history_] == ["finetune", "finetune"]
    assert model.train_summary_["pretrain_epochs"] == 0


# ------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize(("command", "args", "names"), [
    ("integrate", ["--epochs", "0"], ["--epochs", "at least 1"]),
    ("integrate", ["--epochs", "-3"], ["--epochs", "at least 1"]),
    ("integrate", ["--max-time", "0"], ["--max-time", "above 0"]),
    ("integrate", ["--checkpoint-every", "0"], ["--checkpoint-every", ">= 1"]),
    ("integrate", ["--checkpoint-minutes", "0"], ["--checkpoint-minutes", "above 0"]),
    ("cluster", ["--n-models", "0"], ["--n-models", "at least 1"]),
    ("cluster", ["--n-clusters", "1"], ["--n-clusters", "between 2"]),
    ("cluster", ["--pretrain-epochs", "-1"], ["--pretrain-epochs", "at least 0"]),
    ("cluster", ["--finetune-epochs", "-2"], ["--finetune-epochs", "at least 0"]),
])
def test_cli_refuses_bad_numbers_with_exit_2_and_writes_nothing(files, tmp_path, capsys, command, args, names):
    out = tmp_path / "out.h5mu"
    inputs = (["--rna", str(files["rna"]), "--gene-activity", str(files["ga"])] if command == "integrate"
              else ["--rna", str(files["rna"]), "--adt", str(files["adt"])])
    assert main([command, *inputs, "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(n in err for n in names), err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ degenerate results
def test_diverging_biclum_training_stops_with_the_epoch_and_term(unpaired):
    with pytest.raises(TrainingDivergedError) as err:
        cb.BiCLUM(*unpaired, **{**BICLUM, "lr": 1e6}).train(3, progress=False)
    message = str(err.value)
    assert "epoch 0" in message and "'rec'" in message and "lr=" in message and "tau_cell" in message


def test_diverging_scmdcf_training_stops_with_the_phase(paired):
    model = cb.scMDCF(paired["rna"], paired["adt"], **{**SCMDCF, "pretrain_lr": 1e12})
    with pytest.raises(TrainingDivergedError, match="pretrain epoch .*pretrain_lr"):
        model.train(3, 1, progress=False)
    assert not model.is_trained_


def test_cli_diverging_training_exits_2_without_output(files, tmp_path, capsys, monkeypatch):
    from cellbridge.models.biclum import _model

    resolve = _model.resolve_params
    monkeypatch.setattr(_model, "resolve_params", lambda p, m, o: resolve(p, m, {**o, "lr": 1e6, **BICLUM_SMALL}))
    out = tmp_path / "out.h5mu"
    code = main(["integrate", "--rna", str(files["rna"]), "--gene-activity", str(files["ga"]), "--out", str(out),
                 "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "diverged" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


BICLUM_SMALL = {k: v for k, v in BICLUM.items() if k not in ("modality", "n_pcs", "accelerator")}


def test_a_model_with_nan_weights_refuses_to_embed(biclum, unpaired, tmp_path):
    biclum.train(1, progress=False)
    biclum.save(tmp_path / "model")
    loaded = cb.BiCLUM.load(tmp_path / "model", accelerator="cpu")
    with torch.no_grad():
        for p in loaded.module.parameters():
            p.fill_(float("nan"))
    with pytest.raises(DegenerateEmbeddingError, match="NaN.*weights are not finite"):
        loaded.get_latent(unpaired[0], "rna")


def test_a_collapsed_network_refuses_to_embed(biclum, unpaired):
    biclum.train(1, progress=False)
    last = biclum.module.cell_encoders[1][-1]  # the RNA encoder's output layer
    with torch.no_grad():
        last.weight.zero_()
    with pytest.raises(DegenerateEmbeddingError, match="collapsed"):
        biclum.get_latent(unpaired[0], "rna")


def test_metrics_refuse_a_collapsed_embedding():
    z = np.ones((40, 5))
    labels = np.repeat([0, 1], 20)
    for score in (lambda: cb.metrics.foscttm(z, z + 0), lambda: cb.metrics.seurat_alignment_score(z, labels),
                  lambda: cb.metrics.integration_metrics(z[:20], z[20:], labels[:20], labels[20:], paired=True)):
        with pytest.raises(CellBridgeInputError, match="collapsed"):
            score()
