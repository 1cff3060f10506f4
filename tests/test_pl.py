"""Plots return figures and save to PNG under the Agg backend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import cellbridge as cb  # noqa: E402
from cellbridge import CellBridgeInputError  # noqa: E402


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


def test_embedding_umap_panels_and_png(tmp_path):
    adata = _joint()
    fig = cb.pl.embedding(adata, color=["cell_type", "modality"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["B", "NK", "T"]
    assert "X_umap" not in adata.obsm  # the input is not modified
    fig.savefig(tmp_path / "emb.png")
    assert (tmp_path / "emb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embedding_from_array_on_given_axes(tmp_path):
    xy = np.random.default_rng(0).normal(size=(30, 2))
    fig = Figure()
    ax = fig.subplots()
    out = cb.pl.embedding(xy, color={"value": np.linspace(0, 1, 30)}, ax=ax)
    assert out is fig and len(ax.collections) == 1
    out.savefig(tmp_path / "xy.png")
    assert (tmp_path / "xy.png").stat().st_size > 0


def test_embedding_errors():
    adata = _joint()
    with pytest.raises(CellBridgeInputError, match="obsm"):
        cb.pl.embedding(adata, basis="X_missing")
    with pytest.raises(CellBridgeInputError, match="obs"):
        cb.pl.embedding(adata, color="nope")


def test_training_history(tmp_path):
    history = {"total": [100.0, 10.0, 0.5, 0.4], "rec": [1.0, 0.8, 0.6, 0.5]}
    fig = cb.pl.training_history(history)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_yscale() == "log"
    assert list(ax.lines[1].get_ydata()) == history["rec"]
    fig.savefig(tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 0
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
