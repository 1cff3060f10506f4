"""Plots return figures, save like scanpy under the Agg backend, and lay out a result once."""

from __future__ import annotations

import faulthandler

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import mudata as md
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import cellbridge as cb
from cellbridge import CellBridgeInputError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _joint(n_per: int = 20, dim: int = 6, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    labels = np.repeat(["B", "T", "NK"], n_per)
    centers = {"B": 0.0, "T": 10.0, "NK": 20.0}
    emb = np.array([centers[c] for c in labels])[:, None] + rng.normal(size=(labels.size, dim))
    emb = np.vstack([emb, emb + 0.1]).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": np.tile(labels, 2), "modality": np.repeat(["rna", "atac"], labels.size)},
        index=[f"c{i}" for i in range(emb.shape[0])],
    )
    return ad.AnnData(obs=obs, obsm={"X_biclum": emb})


def _example_mudata(n_cells: int = 150, seed: int = 0) -> md.MuData:
    """The built-in simulated example laid out as a BiCLUM result without a top-level embedding:
    RNA and ATAC peak modalities (same cell names, as the simulation pairs them), each with its own
    ``obsm["X_biclum"]`` (cell-type centres plus noise)."""
    sim = cb.datasets.simulate_multiome(n_cells, n_genes=60, n_types=3, seed=seed)
    rng = np.random.default_rng(seed)
    mods = {}
    for name in ("rna", "atac"):
        adata = sim[name].copy()
        codes = pd.factorize(adata.obs["cell_type"])[0]
        adata.obsm["X_biclum"] = (np.eye(3)[codes] * 8 + rng.normal(size=(adata.n_obs, 3))).astype(np.float32)
        mods[name] = adata
    return md.MuData(mods)


def test_embedding_umap_panels_stored_once_and_png(tmp_path, monkeypatch):
    adata = _joint()
    fig = cb.pl.embedding(adata, color=["cell_type", "modality"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["B", "NK", "T"]
    assert fig.axes[0].get_xlabel() == "UMAP1"
    xy = adata.obsm["X_umap"]  # computed once and stored, scanpy's way
    assert xy.shape == (adata.n_obs, 2) and np.isfinite(xy).all()
    assert adata.uns["umap"]["params"] == {"use_rep": "X_biclum", "n_neighbors": 15, "random_state": 0}
    assert str(adata.obs["cell_type"].dtype) == "object"  # scanpy's categorical conversion stayed on the view

    def no_recompute(*args, **kwargs):
        raise AssertionError("the stored UMAP should have been reused")

    monkeypatch.setattr(cb.pl, "umap_coordinates", no_recompute)
    fig = cb.pl.embedding(adata, color="cell_type", save=tmp_path / "emb.png")
    assert (tmp_path / "emb.png").read_bytes()[:8] == PNG
    assert np.array_equal(fig.axes[0].collections[0].get_offsets().data[:, 0].min(), xy[:, 0].min())
    with pytest.raises(AssertionError, match="reused"):
        cb.pl.embedding(adata, color="cell_type", recompute=True)


def test_embedding_recomputes_a_umap_of_another_embedding():
    adata = _joint()
    adata.obsm["X_other"] = adata.obsm["X_biclum"][:, ::-1].copy() * 3
    cb.pl.embedding(adata, use_rep="X_other")
    first = adata.obsm["X_umap"].copy()
    cb.pl.embedding(adata)  # X_biclum now: the stored layout of X_other is not reused
    assert adata.uns["umap"]["params"]["use_rep"] == "X_biclum"
    assert not np.allclose(first, adata.obsm["X_umap"])
    cb.pl.embedding(adata, key_added="X_umap_other", use_rep="X_other")
    assert "X_umap_other" in adata.obsm and adata.uns["umap_other"]["params"]["use_rep"] == "X_other"


def test_embedding_of_a_mudata_returns_and_stores_per_modality():
    """Used to hang with growing memory: ``np.asarray(mdata)`` iterated MuData cell by cell."""
    mdata = _example_mudata()
    faulthandler.dump_traceback_later(300, exit=True)  # a hang fails the run with a traceback, not silently
    try:
        fig = cb.pl.embedding(mdata, color=["modality", "cell_type"])
    finally:
        faulthandler.cancel_dump_traceback_later()
    legend = sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert legend == ["atac", "rna"]
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 2 * mdata.mod["rna"].n_obs
    for name in ("rna", "atac"):
        assert mdata.mod[name].obsm["X_umap"].shape == (mdata.mod[name].n_obs, 2)
    assert "X_umap" not in mdata.obsm


def test_embedding_uses_the_top_level_joint_layout():
    joint = _joint()
    rna = ad.AnnData(obs=joint.obs[joint.obs["modality"] == "rna"][["cell_type"]])
    atac = ad.AnnData(obs=joint.obs[joint.obs["modality"] == "atac"][["cell_type"]])
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obsm["X_biclum"] = joint[mdata.obs_names].obsm["X_biclum"]
    mdata.obs["modality"] = joint.obs.loc[mdata.obs_names, "modality"].to_numpy()
    fig = cb.pl.embedding(mdata, color=["cell_type", "modality"])  # "cell_type" from rna:/atac:cell_type
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == ["B", "NK", "T"]
    assert mdata.obsm["X_umap"].shape == (mdata.n_obs, 2)
    assert all("X_umap" not in m.obsm for m in mdata.mod.values())


def test_embedding_of_a_paired_result_draws_each_cell_once():
    joint = _joint(n_per=10)
    cells = joint[joint.obs["modality"] == "rna"]
    z = np.array(cells.obsm["X_biclum"])
    z[:2] = np.nan  # cells a model dropped
    rna = ad.AnnData(obs=cells.obs[["cell_type"]].copy(), obsm={"X_scmdcf": z.copy()})
    adt = ad.AnnData(obs=pd.DataFrame({"scmdcf_cluster": ["0"] * rna.n_obs}, index=rna.obs_names),
                     obsm={"X_scmdcf": z.copy()})
    fig = cb.pl.embedding(md.MuData({"rna": rna, "adt": adt}), color="cell_type")
    assert len(fig.axes[0].collections[0].get_offsets()) == rna.n_obs
    assert np.isnan(rna.obsm["X_umap"][:2]).all() and np.isfinite(rna.obsm["X_umap"][2:]).all()


def test_embedding_from_array_on_given_axes(tmp_path):
    xy = np.random.default_rng(0).normal(size=(30, 2))
    fig = Figure()
    ax = fig.subplots()
    out = cb.pl.embedding(xy, color={"value": np.linspace(0, 1, 30)}, ax=ax)
    assert out is fig and len(ax.collections) == 1
    assert np.allclose(np.sort(ax.collections[0].get_offsets(), axis=0), np.sort(xy, axis=0))  # drawn as it is
    out.savefig(tmp_path / "xy.png")
    assert (tmp_path / "xy.png").stat().st_size > 0


def test_save_and_show_like_scanpy(tmp_path):
    import scanpy as sc

    adata = _joint()
    saved = sc.settings.figdir
    sc.settings.figdir = tmp_path / "figures"  # a property: monkeypatch cannot restore it
    try:
        _save_and_show(adata, tmp_path)
    finally:
        sc.settings.figdir = saved


def _save_and_show(adata, tmp_path):
    cb.pl.embedding(adata, color="cell_type", save="_types.pdf")  # scanpy: a suffix of the default name
    assert (tmp_path / "figures" / "umap_types.pdf").read_bytes()[:4] == b"%PDF"
    cb.pl.embedding(adata, color="cell_type", save=True)
    assert (tmp_path / "figures" / "umap.png").read_bytes()[:8] == PNG
    with pytest.raises(FileExistsError, match="overwrite"):
        cb.pl.embedding(adata, color="cell_type", save=True)
    cb.pl.embedding(adata, color="cell_type", save=True, overwrite=True)
    assert cb.pl.embedding(adata, color="cell_type", show=True) is None  # shown (a no-op under Agg): no figure
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["umap.png", "umap_types.pdf"]  # no temp


def test_embedding_errors():
    adata = _joint()
    with pytest.raises(CellBridgeInputError, match="obsm"):
        cb.pl.embedding(adata, use_rep="X_missing")
    with pytest.raises(CellBridgeInputError, match="obs"):
        cb.pl.embedding(adata, color="nope")
    with pytest.raises(CellBridgeInputError, match="joint embedding"):
        cb.pl.embedding(ad.AnnData(np.zeros((5, 2))))
    with pytest.raises(CellBridgeInputError, match="cannot plot a dict"):
        cb.pl.embedding({"a": 1})
    with pytest.raises(CellBridgeInputError, match="one panel"):
        cb.pl.embedding(adata, color=["cell_type", "modality"], ax=Figure().subplots())
    with pytest.raises(CellBridgeInputError, match="joint embedding"):
        cb.pl.embedding(md.MuData({"rna": ad.AnnData(np.zeros((4, 2)))}))


def test_umap_is_embedding_under_scanpys_name():
    adata = _joint()
    fig = cb.pl.umap(adata, color="modality", title="by modality")
    assert fig.axes[0].get_title() == "by modality" and "X_umap" in adata.obsm


def test_training_history(tmp_path):
    history = {"total": [100.0, 10.0, 0.5, 0.4], "rec": [1.0, 0.8, 0.6, 0.5]}
    fig = cb.pl.training_history(history, save=tmp_path / "hist.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_yscale() == "log"
    assert list(ax.lines[1].get_ydata()) == history["rec"]
    assert (tmp_path / "hist.png").read_bytes()[:8] == PNG
    with pytest.raises(CellBridgeInputError, match="history"):
        cb.pl.training_history({})


def test_training_history_accepts_rows_frames_and_models():
    rows = [{"phase": p, "epoch": e, "loss": 10.0 - i, "rec": 1.0, "member": m}
            for m in (0, 1) for i, (p, e) in enumerate([("pretrain", 0), ("pretrain", 1), ("finetune", 0)])]
    for history in (rows, pd.DataFrame(rows), type("Trained", (), {"history_": rows})()):
        fig = cb.pl.training_history(history)
        ax = fig.axes[0]
        assert [line.get_label() for line in ax.lines[:2]] == ["loss", "rec"]  # not epoch/phase/member
        assert list(ax.lines[0].get_ydata()) == [10.0, 9.0, 8.0]  # the first ensemble member only
        assert any(list(line.get_xdata()) == [2.5, 2.5] for line in ax.lines[2:])  # phase boundary
    with pytest.raises(CellBridgeInputError, match="train the model first"):
        cb.pl.training_history(type("Untrained", (), {"history_": []})())
    with pytest.raises(CellBridgeInputError, match="equal"):
        cb.pl.training_history({"loss": [1.0, 2.0], "rec": [1.0]})


def test_confusion_matrix_rows_are_true_labels(tmp_path):
    frame = {"cell_type": ["a", "a", "b", "b", "c", None], "pred": ["a", "b", "b", "b", "a", "a"]}
    fig = cb.pl.confusion_matrix(frame, true_key="cell_type", predicted_key="pred", save=tmp_path / "cm.png")
    ax = fig.axes[0]
    # 5 cells with both labels (the None row is left out); a: 1 of 2 right, b: 2 of 2, c: 0 of 1
    assert np.allclose(ax.images[0].get_array(), [[0.5, 0.5, 0], [0, 1, 0], [1, 0, 0]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]  # the diagonal is "right"
    assert "accuracy 0.600, 5 cells" in ax.get_title()
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG
    counts = cb.pl.confusion_matrix(frame, true_key="cell_type", predicted_key="pred", normalize=False)
    assert np.array_equal(counts.axes[0].images[0].get_array(), [[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_confusion_matrix_of_clusters_and_cell_types():
    adata = _joint(n_per=4)
    adata.obs["cluster"] = np.tile(["10", "2", "2", "2"], 6)
    ax = cb.pl.confusion_matrix(adata, true_key="cell_type", predicted_key="cluster").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "10"]  # clusters only, in numeric order
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B", "NK", "T"]
    with pytest.raises(CellBridgeInputError, match="no column"):
        cb.pl.confusion_matrix(adata, true_key="cell_type", predicted_key="missing")


def test_alignment_confidence_map_and_histograms():
    adata = _joint()
    score = np.linspace(0, 1, adata.n_obs)
    score[:5] = np.nan  # e.g. the reference cells of a transfer
    adata.obs["transfer_confidence"] = score
    fig = cb.pl.alignment_confidence(adata, groupby="modality")
    umap_ax, hist_ax = fig.axes[0], next(a for a in fig.axes if a.get_xlabel() == "transfer_confidence")
    assert "X_umap" in adata.obsm and umap_ax.get_title() == "transfer_confidence"
    labels = [t.get_text() for t in hist_ax.get_legend().get_texts()]
    assert labels == [f"rna (n={adata.n_obs // 2 - 5}, mean {np.nanmean(score[:adata.n_obs // 2]):.2f})",
                      f"atac (n={adata.n_obs // 2}, mean {score[adata.n_obs // 2:].mean():.2f})"]
    with pytest.raises(CellBridgeInputError, match="per-cell confidence"):
        cb.pl.alignment_confidence(adata, key="missing")
