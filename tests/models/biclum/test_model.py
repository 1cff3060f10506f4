"""BiCLUM model (cellbridge.models.biclum._model): training, outputs, persistence, errors."""

import anndata as ad
import numpy as np
import pytest

import cellbridge as cb
from cellbridge import CellBridgeInputError


@pytest.fixture(scope="module")
def split_rna():
    """Two disjoint halves of a simulated RNA dataset: an unpaired pair in one gene space."""
    rna = cb.datasets.simulate_multiome(600, n_genes=200, n_types=4, seed=3)["rna"]
    return rna[:300].copy(), rna[300:].copy()


def _model(split_rna, **kw):
    a, b = split_rna
    small = {} if kw.get("preset") == "reference" else {"n_profile": 128, "profile": "subsample"}
    kw = {"k_mnn": 20, "n_pcs": 20, "max_epochs": 3, **small, **kw}
    return cb.BiCLUM(b, a, modality="atac", **kw)


def test_train_embed_and_outputs(split_rna):
    model = _model(split_rna, max_epochs=15)
    assert model.train(progress=False) is model and model.is_trained_
    losses = [row["loss"] for row in model.history_]
    assert len(losses) == 15 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert [(row["phase"], row["epoch"]) for row in model.history_] == [("train", i) for i in range(15)]
    assert {"loss", "rec", "cell", "feature"} <= set(model.history_[0])
    assert model.train_summary_["epochs"] == 15 and model.train_summary_["world_size"] == 1
    a, b = split_rna
    za, zb = model.get_latent(a, "other"), model.get_latent(b)
    assert za.shape == (300, 50) and zb.shape == (300, 50)
    pred, _ = cb.tl.transfer_labels(za, a.obs["cell_type"].to_numpy(), zb, k=5)
    assert np.mean(np.asarray(pred) == b.obs["cell_type"].to_numpy()) > 0.8
    feats = model.get_feature_embeddings()
    assert feats["rna"].shape == (200, 50) and list(feats["other"].index) == list(a.var_names)
    mdata = model.to_mudata()
    assert mdata.mod["rna"].obsm["X_biclum"].shape == (300, 50)
    assert mdata.mod["gene_activity"].varm["X_biclum"].shape == (200, 50)
    assert "X_biclum" not in b.obsm  # inputs untouched
    uns = mdata.uns["biclum"]
    assert list(uns["history"]["loss"]) == losses and uns["train_summary"] == model.train_summary_
    renamed = model.to_mudata(key_added="joint")
    assert renamed.mod["rna"].obsm["X_joint"].shape == (300, 50) and "joint" in renamed.uns


def test_deterministic_on_cpu(split_rna):
    z1 = _model(split_rna, seed=7)
    z1.train(progress=False)
    z2 = _model(split_rna, seed=7)
    z2.train(progress=False)
    np.testing.assert_array_equal(z1.get_latent(modality="rna"), z2.get_latent(modality="rna"))


def test_reference_preset_exact_mode_runs(split_rna):
    model = _model(split_rna, preset="reference", max_epochs=2)
    assert model.params.feature_mode == "exact" and model.profiles["other"].shape[1] == 300
    model.train(progress=False)
    assert np.isfinite(model.get_latent(modality="other")).all()


def test_early_stopping_restores_best(split_rna):
    model = _model(split_rna, patience=1, lr=5e-2, max_epochs=30)
    losses = [row["loss"] for row in model.train(progress=False).history_]
    best = model.train_summary_["best_epoch"]
    assert losses[best] == min(losses) and len(losses) < 30 and model.train_summary_["epochs"] == len(losses)


def test_batch_without_pairs_is_not_nan(split_rna):
    model = _model(split_rna)
    model.cell_pairs = model.cell_pairs[:0]  # no MNN pair at all (D4)
    rows = model.train(progress=False).history_
    assert np.isfinite([row["loss"] for row in rows]).all() and all(row["cell"] == 0 for row in rows)


def test_save_load_roundtrip(split_rna, tmp_path):
    model = _model(split_rna)
    model.train(progress=False)
    a, b = split_rna
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")
    loaded = cb.BiCLUM.load(tmp_path / "m")
    assert loaded.is_trained_ and loaded.params == model.params
    assert loaded.history_ == model.history_ and loaded.train_summary_ == model.train_summary_
    np.testing.assert_allclose(loaded.get_latent(b, "rna"), model.get_latent(b), atol=1e-5)
    np.testing.assert_allclose(loaded.get_feature_embeddings()["other"], model.get_feature_embeddings()["other"], atol=1e-5)


def test_latent_centring_moves_the_origin_only(split_rna, tmp_path):
    """latent_centering="per_modality" (default) subtracts each modality's training mean from the
    trained encoder's outputs and the decoder adds it back; training itself is unchanged."""
    import torch

    a, b = split_rna
    centred, plain = _model(split_rna).train(progress=False), _model(split_rna, latent_centering="none").train(progress=False)
    mean = centred.module.latent_mean.numpy()
    assert np.abs(mean).max() > 1e-3 and not plain.module.latent_mean.any()
    for k, (adata, side) in enumerate(((a, "other"), (b, "rna"))):
        z, z_plain = centred.get_latent(adata, side), plain.get_latent(adata, side)
        np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(z + mean[k], z_plain, atol=1e-5)  # same training, origin moved
        np.testing.assert_allclose(centred.decode(z[:20], side), plain.decode(z_plain[:20], side), rtol=1e-4, atol=1e-4)
    # a model saved before the centring existed loads with the origin at zero
    plain.save(tmp_path / "old")
    state = torch.load(tmp_path / "old" / "model.pt", weights_only=True)
    del state["latent_mean"]
    torch.save(state, tmp_path / "old" / "model.pt")
    np.testing.assert_allclose(cb.BiCLUM.load(tmp_path / "old").get_latent(b, "rna"), plain.get_latent(b), atol=1e-5)


def test_query_mapping_held_out_cells_land_with_their_type():
    sim = cb.datasets.simulate_multiome(900, n_genes=200, n_types=4, seed=5)["rna"]
    ref_a, ref_b, query = sim[:300].copy(), sim[300:600].copy(), sim[600:].copy()
    model = cb.BiCLUM(ref_b, ref_a, modality="atac", k_mnn=20, n_pcs=20, max_epochs=15, n_profile=128)
    model.train(progress=False)
    zq = model.get_latent(query, "rna")  # cells never seen in training
    pred, _ = cb.tl.transfer_labels(model.get_latent(ref_b), ref_b.obs["cell_type"].to_numpy(), zq, k=5)
    assert np.mean(np.asarray(pred) == query.obs["cell_type"].to_numpy()) > 0.8


def test_backed_inputs_give_the_in_memory_results(tmp_path, monkeypatch):
    """Backed AnnData: training reads it into memory; query mapping reads it in row blocks."""
    import functools

    import cellbridge._validate as validate
    import cellbridge.models.biclum._model as biclum_model

    sim = cb.datasets.simulate_multiome(500, n_genes=200, n_types=4, seed=6)["rna"]
    ref_a, ref_b, query = sim[:200].copy(), sim[200:400].copy(), sim[400:].copy()
    query.write_h5ad(tmp_path / "query.h5ad")
    ref_a.write_h5ad(tmp_path / "ref_a.h5ad")
    backed_query = ad.read_h5ad(tmp_path / "query.h5ad", backed="r")
    backed_a = ad.read_h5ad(tmp_path / "ref_a.h5ad", backed="r")
    kwargs = dict(modality="atac", k_mnn=20, n_pcs=20, n_profile=64, seed=1)
    model = cb.BiCLUM(ref_b, backed_a, **kwargs)
    model.train(max_epochs=2, progress=False)
    in_memory = cb.BiCLUM(ref_b, ref_a, **kwargs)
    in_memory.train(max_epochs=2, progress=False)
    np.testing.assert_array_equal(model.get_latent(ref_b), in_memory.get_latent(ref_b))
    blocks = functools.partial(validate.row_blocks, rows=37)
    monkeypatch.setattr(biclum_model, "row_blocks", blocks)  # several blocks read from the file
    np.testing.assert_allclose(model.get_latent(backed_query, "rna"), model.get_latent(query, "rna"), rtol=1e-5, atol=1e-6)
    assert validate.is_backed(backed_query.X) and not validate.is_backed(query.X)
    bad = query.copy()
    bad.X = bad.X * 0.5
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(CellBridgeInputError, match="non-integer"):
        validate.check_counts(ad.read_h5ad(tmp_path / "bad.h5ad", backed="r").X)


def test_bad_inputs(split_rna):
    a, b = split_rna
    renamed = a.copy()
    renamed.var_names = [f"x{i}" for i in range(a.n_vars)]
    with pytest.raises(CellBridgeInputError, match="share no gene"):
        cb.BiCLUM(b, renamed)
    frac = b.copy()
    frac.X = frac.X * 0.5
    with pytest.raises(CellBridgeInputError, match="non-integer.*layer"):
        cb.BiCLUM(frac, a)
    nan = b.copy()
    nan.X = nan.X.toarray()
    nan.X[0, 0] = np.nan
    with pytest.raises(CellBridgeInputError, match="NaN"):
        cb.BiCLUM(nan, a)
    with pytest.raises(CellBridgeInputError, match="empty"):
        cb.BiCLUM(b[:0].copy(), a)
    dup = b.copy()
    dup.var_names = ["g"] * b.n_vars
    with pytest.raises(CellBridgeInputError, match="duplicated"):
        cb.BiCLUM(dup, a)
    with pytest.raises(CellBridgeInputError, match="preset"):
        cb.BiCLUM(b, a, preset="fast")
    with pytest.raises(CellBridgeInputError, match="unknown BiCLUM parameter"):
        cb.BiCLUM(b, a, learning_rate=1)
    with pytest.raises(CellBridgeInputError, match="mnn_ann"):
        cb.BiCLUM(b, a, mnn_ann="annoy")


@pytest.mark.parametrize("preset, search", [("reference", "hnsw"), ("default", "ivf")])
def test_presets_choose_the_approximate_mnn_search(split_rna, monkeypatch, preset, search):
    import cellbridge.neighbors as pairs

    monkeypatch.setattr(pairs, "EXACT_KNN_MAX_CELLS", 100)  # 300 cells per modality: approximate
    model = _model(split_rna, preset=preset, mnn_smooth=0, pair_refine=0)  # the search itself, unsmoothed
    a, b = model.data.shared_pca(model.params.mnn_dims) if preset == "default" else model.data.shared_views()
    k = model.params.k_mnn
    assert model.params.mnn_ann == search
    # model.cell_pairs holds (rna cell, other cell); mnn_pairs(a=other, b=rna) gives (other, rna)
    np.testing.assert_array_equal(model.cell_pairs, pairs.mnn_pairs(a, b, k=k, method=search)[:, ::-1])
    exact = {tuple(p) for p in pairs.mnn_pairs(a, b, k=k, method="exact")[:, ::-1]}
    assert len({tuple(p) for p in model.cell_pairs} & exact) / len(exact) > 0.9


def test_real_cite_protein_pairs_follow_the_map(shared_data):
    rna = ad.read_h5ad(shared_data / "bmmc_cite_small" / "rna.h5ad")
    adt = ad.read_h5ad(shared_data / "bmmc_cite_small" / "adt.h5ad")
    with pytest.raises(CellBridgeInputError, match='layer="counts"'):
        cb.BiCLUM(rna, adt, modality="protein")  # X holds normalised values
    model = cb.BiCLUM(rna, adt, modality="protein", layer_rna="counts", layer_other="counts",
                      k_mnn=30, n_profile=256, max_epochs=3)
    proteins, genes = model.transforms["other"].features, model.transforms["rna"].features
    mapping = cb.pp.protein_to_gene(proteins)
    # D7: every feature pair joins a protein with the gene it maps to, never by position.
    for g, p in model.feature_pairs:  # (rna feature, other feature), the order of the whole API
        assert mapping[proteins[p]] == genes[g]
    assert len(model.feature_pairs) >= 8 and len(model.cell_pairs) > 0  # RNA holds only 1000 genes
    model.train(progress=False)
    z = model.get_latent(adt, "other")
    assert z.shape == (600, 25) and np.isfinite(z).all()


def test_real_multiome_gene_activity_end_to_end(shared_data):
    rna = ad.read_h5ad(shared_data / "bmmc_multiome_small" / "rna.h5ad")
    atac = ad.read_h5ad(shared_data / "bmmc_multiome_small" / "atac.h5ad")
    gam = cb.pp.gene_activity(atac, shared_data / "annotation" / "hg38_genes.bed", layer="counts")
    model = cb.BiCLUM(rna, gam, layer_rna="counts", k_mnn=20, n_pcs=30, n_profile=256, max_epochs=3)
    assert model.data.report["n_shared_genes"] > 100
    model.train(progress=False)
    assert model.get_latent(gam, "other").shape == (500, 50)


def test_bf16_mixed_precision_agrees_with_float32(split_rna):
    model = _model(split_rna, max_epochs=5)
    model.train(progress=False)
    z32 = model.get_latent(modality="rna")
    model.params = model.params.replace(precision="bf16-mixed")
    z16 = model.get_latent(modality="rna")
    # bfloat16 keeps 8 mantissa bits (~0.4% per rounding); through 3 layers we allow 3% relative error.
    assert np.linalg.norm(z16 - z32) / np.linalg.norm(z32) < 3e-2
    mixed = _model(split_rna, precision="bf16-mixed", max_epochs=3)
    assert np.isfinite([row["loss"] for row in mixed.train(progress=False).history_]).all()


@pytest.mark.parametrize("options", [{"mnn_rep": "scaled"}, {"mnn_rep": "pca", "mnn_dims": 10},
                                     {"profile": "metacells", "n_profile": 40},
                                     {"target": "scaled", "profile": "metacells", "n_profile": 40}])
def test_options_run_and_embed(split_rna, options):
    model = _model(split_rna, max_epochs=2, **options)
    if options.get("profile") == "metacells":
        assert model.profiles["other"].shape == (200, 40)
    model.train(progress=False)
    assert np.isfinite(model.get_latent(modality="rna")).all()


def test_smoothing_and_refinement_give_pairs_of_the_same_type_more_often():
    """The default's pairs (linked features smoothed over each modality's own neighbours, then a
    CCA refinement on all features) join cells of the same type more often than plain MNN on a
    weakly linked panel: 6 of 20 simulated proteins keep their gene in the RNA."""
    sim = cb.datasets.simulate_multiome(600, n_genes=300, n_types=5, seed=3)
    rna, adt = sim["rna"].copy(), sim["adt"].copy()
    mapping = cb.pp.protein_to_gene(list(adt.var_names))
    linked = [g for g in mapping.dropna() if g in rna.var_names][:6]
    rna = rna[:, [g for g in rna.var_names if g not in set(mapping.dropna()) or g in linked]].copy()
    types = rna.obs["cell_type"].astype(str).to_numpy()

    def agreement(**kw) -> float:
        model = cb.BiCLUM(rna, adt, modality="protein", k_mnn=20, n_pcs=20, seed=0, **kw)
        assert len(model.cell_pairs) > 0
        return float(np.mean(types[model.cell_pairs[:, 0]] == types[model.cell_pairs[:, 1]]))

    plain = agreement(mnn_smooth=0, pair_refine=0)
    assert agreement(mnn_smooth=15, pair_refine=0) > plain
    assert agreement() > plain  # the default: mnn_smooth=15, pair_refine=1


def test_accepts_one_mudata_as_scmdcf_does(split_rna):
    import warnings

    import mudata as md

    a, b = split_rna
    peaks = ad.AnnData(a.X, obs=a.obs, var={"n": np.arange(a.n_vars)})
    peaks.var_names = [f"chr1:{100 * i}-{100 * i + 50}" for i in range(a.n_vars)]
    with warnings.catch_warnings(), md.set_options(pull_on_update=False):
        warnings.simplefilter("ignore", UserWarning)  # genes named alike in both modalities
        mdata = md.MuData({"rna": b, "gene_activity": a})
        with_peaks = md.MuData({"rna": b, "atac": peaks})
    model = cb.BiCLUM(mdata, k_mnn=20, n_pcs=20, n_profile=64, profile="subsample")
    assert model.modality == "atac" and model.rna is mdata["rna"] and model.other is mdata["gene_activity"]
    with pytest.raises(CellBridgeInputError, match="holds peaks; add its gene activity first"):
        cb.BiCLUM(with_peaks)
    with pytest.raises(CellBridgeInputError, match="`other` is missing"):
        cb.BiCLUM(b)
