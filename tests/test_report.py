"""The run report: its files, a self-contained HTML page that a real headless browser renders with
its pictures, and a folder that appears whole or not at all."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import mudata as md
import numpy as np
import pandas as pd
import pytest

import cellbridge as cb
from cellbridge import report as cbreport

PNG = b"\x89PNG\r\n\x1a\n"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _unpaired_result(n_per: int = 40, seed: int = 0) -> md.MuData:
    """A BiCLUM-like result: RNA and ATAC cells (different cells) with their own ``X_biclum``,
    cell types in both, a training history and parameters in ``uns["biclum"]``, and two tables."""
    rng = np.random.default_rng(seed)
    types = np.repeat(["B", "T", "NK"], n_per)
    centres = np.eye(3)[pd.factorize(types)[0]] * 6
    mods = {}
    for name, shift in (("rna", 0.0), ("atac", 0.3)):
        obs = pd.DataFrame({"cell_type": types}, index=[f"{name}{i}" for i in range(types.size)])
        emb = (centres + shift + rng.normal(size=(types.size, 3))).astype(np.float32)
        mods[name] = ad.AnnData(obs=obs, obsm={"X_biclum": emb})
    mdata = md.MuData(mods)
    history = pd.DataFrame({"phase": "train", "epoch": np.arange(8), "loss": np.linspace(9, 2, 8),
                            "cell": np.linspace(3, 1, 8)})
    mdata.uns["biclum"] = {"history": history, "params": json.dumps({"tau_cell": 0.5, "k_mnn": 30}),
                           "train_summary": {"epochs": 8, "best_epoch": 7}, "modality": "atac"}
    mdata.uns["gene_peak_links"] = pd.DataFrame({"gene": [f"G{i}" for i in range(30)],
                                                 "peak": [f"chr1:{i}-{i + 500}" for i in range(30)],
                                                 "zscore": np.linspace(8, 2, 30)})
    mdata.uns["marker_genes"] = pd.DataFrame({"group": ["B", "T"], "names": ["CD19", "CD3E"]})
    return mdata


def _paired_result(n_per: int = 30, seed: int = 1) -> md.MuData:
    """An scMDCF-like result: the same cells in RNA and ADT, one fused ``X_scmdcf`` copied into both,
    clusters and cell types."""
    rng = np.random.default_rng(seed)
    types = np.repeat(["B", "T", "NK"], n_per)
    emb = (np.eye(3)[pd.factorize(types)[0]] * 6 + rng.normal(size=(types.size, 3))).astype(np.float32)
    clusters = pd.Categorical(pd.factorize(types)[0].astype(str))
    obs = pd.DataFrame({"cell_type": types, "scmdcf_cluster": clusters}, index=[f"c{i}" for i in range(types.size)])
    mods = {name: ad.AnnData(obs=obs.copy(), obsm={"X_scmdcf": emb.copy()}) for name in ("rna", "adt")}
    mdata = md.MuData(mods)
    mdata.uns["scmdcf"] = {"n_clusters": 3, "preset": "default", "seed": 0}
    return mdata


@pytest.fixture(scope="module")
def unpaired_report(tmp_path_factory):
    result = _unpaired_result()
    before = {name: (list(m.obs.columns), list(m.obsm.keys())) for name, m in result.mod.items()}
    out = tmp_path_factory.mktemp("reports") / "run"
    written = cbreport.write_report(result, out, metrics={"foscttm": 0.12, "transfer": {"accuracy": 0.9}},
                                    params={"preset": "default", "epochs": 8}, timings={"train": 12.5})
    after = {name: (list(m.obs.columns), list(m.obsm.keys())) for name, m in result.mod.items()}
    return written, before, after


class _Refs(HTMLParser):
    """Every attribute of the page that could load something (src, href, srcset, style url())."""

    def __init__(self):
        super().__init__()
        self.refs, self.tags, self.imgs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action") and value is not None:
                self.refs.append((tag, name, value))
        if tag == "img":
            self.imgs.append(dict(attrs))


def test_report_files_and_untouched_result(unpaired_report):
    out, before, after = unpaired_report
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["index.html", "report.md", "summary.json", "umap_modality.png", "umap_cell_type.png",
                            "confusion_matrix.png", "alignment_confidence.png", "training_history.png"])
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5_000
    assert before == after  # the report works on a view: no X_umap or transfer columns added to the result
    assert not [p for p in out.parent.iterdir() if p.name != "run"]  # no temporary sibling left


def test_report_html_is_self_contained(unpaired_report):
    out, _, _ = unpaired_report
    page = (out / "index.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert {"script", "link", "iframe"}.isdisjoint(parser.tags)
    assert all(tag == "img" and name == "src" and value.startswith("data:image/png;base64,")
               for tag, name, value in parser.refs), parser.refs
    assert len(parser.imgs) == 5 and all(img["alt"] for img in parser.imgs)
    for img in parser.imgs:
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == PNG
    assert "url(" not in page and "@import" not in page and "http" not in page


def test_report_shows_metrics_params_tables_versions_timings(unpaired_report):
    out, _, _ = unpaired_report
    page, text = (out / "index.html").read_text(), (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == {"foscttm": 0.12, "transfer.accuracy": 0.9}
    assert summary["params"] == {"preset": "default", "epochs": 8}
    assert summary["model_params"] == {"tau_cell": 0.5, "k_mnn": 30}
    assert summary["cells_per_modality"] == {"rna": 120, "atac": 120}
    assert summary["timings"]["train"] == 12.5 and summary["timings"]["report"] > 0
    assert summary["versions"]["cellbridge"] == cb.__version__ and "numpy" in summary["versions"]
    for doc in (page, text):
        assert "foscttm" in doc and "transfer.accuracy" in doc and "k_mnn" in doc and "12.5 s" in doc
        assert "uns[gene_peak_links]" in doc and "first 20 of 30 rows" in doc  # top rows of the links table
        assert "G19" in doc and "G20" not in doc
        assert "uns[marker_genes]" in doc and "CD3E" in doc
    assert page.index("uns[gene_peak_links]") < page.index("uns[marker_genes]")  # known tables in their order
    for png in out.glob("*.png"):
        assert f"]({png.name})" in text  # report.md shows each picture beside it


def _chromium() -> str:
    found = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    if found is None:  # required, not skipped: .ci/run installs Debian's chromium
        pytest.fail("no headless Chromium found (chromium / chromium-browser / google-chrome); install Debian's "
                    "`chromium` package (apt-get install chromium), as .ci/run does.")
    return found


def _run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(unpaired_report, tmp_path):
    out, _, _ = unpaired_report
    browser = _chromium()
    # 1) the images decode in the browser: a copy of the page with a script that, after load, writes
    #    how many images have a natural size into the DOM that --dump-dom prints
    probe = tmp_path / "probe.html"
    marker = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
              "document.body.setAttribute('data-loaded',i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length);"
              "});</script>")
    probe.write_text((out / "index.html").read_text().replace("</body>", marker + "</body>"))
    dom = _run_chromium(browser, tmp_path / "profile1", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'data-loaded="5/5"', dom.stdout), dom.stdout[:500]
    # 2) the page itself draws: a screenshot that is not blank
    shot = tmp_path / "shot.png"
    run = _run_chromium(browser, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1200,2400",
                        (out / "index.html").as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    dark = (pixels.mean(axis=2) < 0.9).mean()  # text, axes, points
    colourful = (pixels.max(axis=2) - pixels.min(axis=2) > 0.3).mean()  # the plots' colours
    assert dark > 0.02 and colourful > 0.005, (dark, colourful)


def test_report_folder_is_never_overwritten_unless_asked(tmp_path, monkeypatch):
    result = _paired_result(n_per=10)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="not empty"):
        cbreport.write_report(result, out)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]

    def broken(report):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cbreport, "_markdown", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        cbreport.write_report(result, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # nothing half-written, no temporary folder
    monkeypatch.undo()
    cbreport.write_report(result, out, overwrite=True)
    assert {"index.html", "report.md", "mine.txt"} <= {p.name for p in out.iterdir()}


def test_report_of_a_paired_clustering(tmp_path):
    out = cbreport.write_report(_paired_result(), tmp_path / "paired")
    names = {p.name for p in out.glob("*.png")}
    assert names == {"umap_cell_type.png", "umap_scmdcf_cluster.png", "confusion_matrix.png",
                     "alignment_confidence.png"}  # one modality column: no modality panel; no history given
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "scMDCF" and summary["cluster_key"] == "scmdcf_cluster"
    assert summary["n_cells"] == 90 and summary["model_info"]["n_clusters"] == 3
    page = (out / "index.html").read_text()
    assert "Clusters (&#x27;scmdcf_cluster&#x27;) against cell types" in page
    assert "neighbours in its own cluster" in page


def test_report_errors(tmp_path):
    with pytest.raises(cb.CellBridgeInputError, match="label_key"):
        cbreport.write_report(_paired_result(n_per=5), tmp_path / "r", label_key="missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cbreport.write_report(tmp_path / "missing.h5mu", tmp_path / "r2")
    (tmp_path / "file").write_text("x")
    with pytest.raises(cb.CellBridgeInputError, match="is a file"):
        cbreport.write_report(_paired_result(n_per=5), tmp_path / "file")
