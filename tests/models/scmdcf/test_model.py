"""scMDCF model: training paths, determinism, persistence, errors (tiny data, few epochs)."""

from __future__ import annotations

import importlib.util

import anndata as ad
import mudata as md
import numpy as np
import pytest
from sklearn.cluster import KMeans

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge.models.scmdcf import cluster_paired
from cellbridge.tl import consensus_clusters

FAST = {"pretrain_epochs": 3, "finetune_epochs": 2}


def fit(rna, other, **kw):
    pre, fine = kw.pop("epochs", (3, 2))
    kw.setdefault("accelerator", "cpu")
    return cb.scMDCF(rna, other, **kw).train(pre, fine, progress=False)


def test_ten_protein_cite_architecture_and_outputs(make_pair):
    rna, adt = make_pair(n=60, n_other=10)
    model = fit(rna, adt, n_clusters=3, preset="reference")
    assert [m.out_features for m in model.module.enc_other if hasattr(m, "out_features")] == [512, 64, 8]
    assert model.module.fusion[0].in_features == 16
    z = model.get_latent()
    assert z.shape == (60, 8) and np.isfinite(z).all()
    for method in ("kmeans", "dec"):
        lab = model.predict_clusters(method)
        assert lab.shape == (60,) and lab.max() < 3
    assert {"rec_rna", "rec_other", "cl", "kl", "loss"} <= set(model.history_[-1])
    assert [(h["phase"], h["epoch"], h["member"]) for h in model.history_] == [
        ("pretrain", 0, 0), ("pretrain", 1, 0), ("pretrain", 2, 0), ("finetune", 0, 0), ("finetune", 1, 0)]
    assert model.train_summary_ == {"pretrain_epochs": 3, "finetune_epochs": 2, "batch_size": None,
                                    "n_models": 1, "world_size": 1}
    assert model.is_trained_ and isinstance(model.params, cb.models.scmdcf.ScMDCFParams)


def test_atac_architecture_real_multiome(shared_data):
    rna = ad.read_h5ad(shared_data / "bmmc_multiome_small" / "rna.h5ad")
    atac = ad.read_h5ad(shared_data / "bmmc_multiome_small" / "atac.h5ad")
    model = fit(rna, atac, n_clusters=5, preset="reference", layer_rna="counts", layer_other="counts",
                epochs=(2, 1))
    assert model.modality == "atac" and model.params.lamb == 10
    assert model.module.fusion[0].in_features == 128 and model.get_latent().shape[1] == 8


def test_real_cite_default(shared_data):
    rna = ad.read_h5ad(shared_data / "bmmc_cite_small" / "rna.h5ad")
    adt = ad.read_h5ad(shared_data / "bmmc_cite_small" / "adt.h5ad")
    model = fit(rna, adt, n_clusters=6, layer_rna="counts", layer_other="counts", epochs=(2, 1))
    assert model.modality == "protein" and len(np.unique(model.predict_clusters())) > 1


def test_deterministic_same_seed(make_pair):
    rna, adt = make_pair()
    z1 = fit(rna, adt, n_clusters=3, seed=3).get_latent()
    z2 = fit(rna, adt, n_clusters=3, seed=3).get_latent()
    assert np.array_equal(z1, z2)


def test_train_returns_the_model_and_get_latent_takes_cells(make_pair):
    rna, adt = make_pair()
    model = cb.scMDCF(rna, adt, n_clusters=3, accelerator="cpu", n_models=1)
    assert not model.is_trained_ and model.history_ == [] and model.train_summary_ == {}
    assert model.train(2, 1, progress=False) is model and model.is_trained_
    z = model.get_latent()
    order = rna.obs_names[::-1]
    np.testing.assert_array_equal(model.get_latent(adt[order]), z[::-1])  # matched by obs_names
    np.testing.assert_array_equal(model.get_latent(rna, modality="rna"), z)
    np.testing.assert_array_equal(model.get_latent(modality="protein"), z)
    with pytest.raises(CellBridgeInputError, match="modality must be"):
        model.get_latent(modality="atac")
    other = rna.copy()
    other.obs_names = [f"new{i}" for i in range(other.n_obs)]
    with pytest.raises(CellBridgeInputError, match="not among the model's cells"):
        model.get_latent(other)


def test_save_load_round_trip(tmp_path, make_pair):
    rna, adt = make_pair()
    model = fit(rna, adt, n_clusters=3, dec_target="fixed", target_update_interval=2)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")
    loaded = cb.scMDCF.load(tmp_path / "m", rna, adt, accelerator="cpu")
    assert np.array_equal(loaded.get_latent(), model.get_latent())
    assert np.array_equal(loaded.predict_clusters(), model.predict_clusters())
    assert loaded.n_clusters_ == 3 and loaded.params.dec_target == "fixed"
    assert loaded.params == model.params and loaded.is_trained_
    assert loaded.history_ == model.history_ and loaded.train_summary_ == model.train_summary_
    assert not list(tmp_path.glob("m/*.pkl"))
    alone = cb.scMDCF.load(tmp_path / "m", accelerator="cpu")  # self-contained: no data needed
    assert np.array_equal(alone.get_latent(), model.get_latent())
    assert np.array_equal(alone.predict_clusters(), model.predict_clusters())
    assert np.array_equal(alone.get_latent(adt[::-1]), model.get_latent()[::-1])
    assert alone.params == model.params and alone.history_ == model.history_


def test_ensemble_members_seeding_and_consensus(make_pair):
    rna, adt = make_pair()
    single = fit(rna, adt, n_clusters=None, seed=3, n_models=1)
    ensemble = fit(rna, adt, n_clusters=None, seed=3, n_models=3)
    z = ensemble.get_latent()
    assert len(ensemble.modules_) == 3 and z.shape == (60, 3 * 8)
    assert np.array_equal(z[:, :8], single.get_latent())  # member 0 is the single model (seed 3)
    assert not np.allclose(z[:, :8], z[:, 8:16])  # member 1 has its own seed (1003)
    assert {m.centers.shape[0] for m in ensemble.modules_} == {ensemble.n_clusters_}  # K estimated once
    assert {h["member"] for h in ensemble.history_} == {0, 1, 2}
    per_member = [KMeans(ensemble.n_clusters_, init=m.centers.detach().numpy().astype(np.float64),
                         n_init=1).fit_predict(z[:, 8 * i:8 * i + 8].astype(np.float64))
                  for i, m in enumerate(ensemble.modules_)]
    assert all(np.array_equal(got, ref) for got, ref in zip(ensemble.member_clusters(), per_member))
    assert np.array_equal(ensemble.predict_clusters(), consensus_clusters(per_member, ensemble.n_clusters_))
    assert len(fit(rna, adt, n_clusters=3, ensemble_max_cells=50, epochs=(1, 1)).modules_) == 1
    with pytest.raises(CellBridgeInputError, match="n_models"):
        cb.scMDCF(rna, adt, n_clusters=3, n_models=0)


def test_ensemble_select_keeps_lowest_reconstruction_member(tmp_path, make_pair):
    rna, adt = make_pair()
    kw = {"n_clusters": 3, "seed": 5, "n_models": 3}  # seed 5: the last member fits best
    full = fit(rna, adt, **kw)
    picked = fit(rna, adt, ensemble_combine="select", **kw)
    weights = picked.params.pretrain_weights
    last = {h["member"]: h for h in picked.history_ if h["phase"] == "pretrain"}  # last epoch wins
    scores = {i: weights["rec_rna"] * h["rec_rna"] + weights["rec_other"] * h["rec_other"] for i, h in last.items()}
    best = min(scores, key=scores.get)
    assert best == 2 and picked.member_ids_ == [best] and len(picked.modules_) == 1
    assert picked.member_scores_ == pytest.approx(scores)
    assert np.array_equal(picked.get_latent(), full.get_latent()[:, 8 * best:8 * best + 8])
    assert np.array_equal(picked.predict_clusters(), full.member_clusters()[best])
    picked.save(tmp_path / "m")
    loaded = cb.scMDCF.load(tmp_path / "m", rna, adt, accelerator="cpu")
    assert loaded.member_ids_ == [best] and np.array_equal(loaded.get_latent(), picked.get_latent())


def test_k_errors_and_estimation(make_pair):
    rna, adt = make_pair()
    with pytest.raises(CellBridgeInputError, match="n_clusters"):
        cb.scMDCF(rna, adt, n_clusters=61)
    model = fit(rna, adt, n_clusters=None)
    assert model.n_clusters_ >= 2 and model.n_clusters_source_.startswith("estimated")


def test_minibatch_path_and_all_zero_features(make_pair):
    rna, adt = make_pair(n=60)
    rna.X[:, 0] = 0
    model = fit(rna, adt, n_clusters=3, batch_size=16, full_batch_max=None, dec_target="fixed",
                rna_representation="hvf")  # genes, not PCs, so the dropped gene is visible
    assert model.rna.n_vars == 39
    assert np.isfinite(model.get_latent()).all()


def test_bad_options(make_pair):
    rna, adt = make_pair()
    with pytest.raises(CellBridgeInputError, match="unknown scMDCF parameter"):
        cb.scMDCF(rna, adt, n_clusters=3, learning_rate=1)
    with pytest.raises(CellBridgeInputError, match="preset"):
        cb.scMDCF(rna, adt, n_clusters=3, preset="fast")
    with pytest.raises(CellBridgeInputError, match="output_activation"):
        cb.scMDCF(rna, adt, n_clusters=3, output_activation="tanh")
    rna.X[0, 0] = np.nan
    with pytest.raises(CellBridgeInputError, match="NaN"):
        cb.scMDCF(rna, adt, n_clusters=3)
    with pytest.raises(RuntimeError, match="train"):
        cb.scMDCF(*make_pair(), n_clusters=3).get_latent()


def test_write_results_copy_and_inplace(make_pair):
    rna, adt = make_pair()
    model = fit(rna, adt[2:].copy(), n_clusters=3)
    r_out, a_out = model.write_results(rna, adt)
    assert r_out.n_obs == 58 and r_out.obsm["X_scmdcf"].shape == (58, 5 * 8)  # default: 5 members' z
    assert "scmdcf_cluster" in a_out.obs and "X_scmdcf" not in rna.obsm
    model.write_results(rna, copy=False)
    assert np.isnan(rna.obsm["X_scmdcf"][:2]).all() and rna.obs["scmdcf_cluster"].isna().sum() == 2


def test_cluster_paired_mudata(make_pair):
    rna, adt = make_pair()
    mdata, _ = cluster_paired(md.MuData({"rna": rna, "adt": adt}), n_clusters=3, progress=False,
                                  accelerator="cpu", pretrain_epochs=2, finetune_epochs=1)
    assert set(mdata.mod) == {"rna", "adt"} and mdata.uns["scmdcf"]["n_clusters"] == 3
    assert mdata.uns["scmdcf"]["n_models"] == 5
    assert mdata.obsm["X_scmdcf"].shape == (60, 5 * 8) and "X_scmdcf" not in mdata["rna"].obsm  # one fused z


def _benchmark_module(repo_root):
    """The benchmarks' shared helpers (benchmarks/_common.py, where the scMDCF suite's
    evaluate_labels lives)."""
    path = repo_root / "benchmarks" / "_common.py"
    spec = importlib.util.spec_from_file_location("cellbridge_benchmarks_common", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_evaluate_labels_missing_column(make_pair, repo_root):
    bench = _benchmark_module(repo_root)
    rna, _ = make_pair()
    with pytest.raises(CellBridgeInputError, match="no column 'celltype'"):
        bench.evaluate_labels(rna, "celltype", np.zeros(rna.n_obs, dtype=int))
    scores = bench.evaluate_labels(rna, "cell_type", rna.obs["cell_type"].cat.codes.to_numpy())
    assert scores["NMI"] == pytest.approx(1.0) and scores["ARI"] == pytest.approx(1.0)
