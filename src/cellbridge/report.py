"""The run report: pictures and tables of an integration or clustering result in one folder.

:func:`write_report` writes PNGs (UMAP by modality, cell type and cluster; training curves; label
transfer confusion matrix; per-cell alignment confidence), one self-contained ``index.html``
(images embedded as data URIs, inline CSS, nothing fetched from a network), ``report.md`` beside
the PNGs, and ``summary.json`` (metrics, parameters, versions, timings). The folder appears whole
or not at all.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._errors import CellBridgeInputError
from ._utils import atomic_outputs, check_output, to_json

logger = logging.getLogger("cellbridge")

__all__ = ["check_report_dir", "write_report"]

#: ``obs`` columns taken as cell types, in this order, when ``label_key`` is not given
LABEL_KEYS = ("cell_type", "celltype", "cell_types", "CellType", "cell_label", "label", "labels")
#: ``obs`` columns taken as clusters (besides any column ending in ``_cluster``)
CLUSTER_KEYS = ("leiden", "louvain", "cluster", "clusters")
#: ``uns`` tables shown first (then any other table found in ``uns``)
TABLE_KEYS = ("gene_peak_links", "links", "marker_genes", "markers", "marker_agreement", "regulatory_readout")
#: packages whose versions the report lists (read from their metadata; nothing is imported)
VERSION_PACKAGES = ("cellbridge", "numpy", "scipy", "pandas", "scikit-learn", "anndata", "mudata", "scanpy",
                    "torch", "matplotlib")


def check_report_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that a report can be written to ``out_dir``, before any work is spent on it.

    Parameters
    ----------
    out_dir
        The report folder (new, empty, or replaced with ``overwrite``).
    overwrite
        Whether an existing non-empty folder may be written into.

    Returns
    -------
    pathlib.Path
        ``out_dir`` as a :class:`pathlib.Path`.
    """
    return check_output(out_dir, overwrite=overwrite, kind="dir")


@dataclass
class _Figure:
    name: str
    caption: str
    png: bytes


@dataclass
class _Report:
    title: str
    sections: list[tuple[str, list]] = field(default_factory=list)  # (heading, items)
    figures: list[_Figure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_report(
    result,
    out_dir: str | os.PathLike,
    *,
    metrics: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    history=None,
    timings: Mapping[str, float] | None = None,
    label_key: str | None = None,
    cluster_key: str | None = None,
    use_rep: str | None = None,
    title: str | None = None,
    n_neighbors: int = 15,
    k_transfer: int = 15,
    max_rows: int = 20,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the run report of a result into ``out_dir``.

    The result object is not changed: the UMAP and the label transfer are computed on a view of
    it. When the cells of one modality carry labels (``label_key``) and another modality's do
    not share that pairing, labels are transferred from the labelled modality (``"rna"`` when
    present) to the others by a ``k_transfer``-neighbour vote in the joint space
    (:func:`cellbridge.tl.transfer_labels`): the vote fraction is the per-cell alignment
    confidence, and where the other cells have labels too a confusion matrix compares them. For a
    paired result (one embedding per cell) the confidence is the fraction of each cell's
    neighbours in its cluster, and the matrix compares clusters with cell types.

    Parameters
    ----------
    result
        The result: a MuData (as written by ``cellbridge integrate`` / ``cluster``), an AnnData
        with a joint embedding, or the path of an ``.h5mu`` / ``.h5ad`` file.
    out_dir
        Folder to write (``index.html``, ``report.md``, ``summary.json`` and the PNGs).
    metrics
        Metrics to show, e.g. those of :func:`cellbridge.metrics.integration_metrics` (nested
        dicts are flattened).
    params
        Run parameters to show (inputs, preset, epochs ...). The model's own parameters stored in
        the result's ``uns`` are shown as well.
    history
        Training history: a trained model or its ``history_`` (see
        :func:`cellbridge.pl.training_history`); default the history stored in ``uns``.
    timings
        Seconds per step, e.g. ``{"read": 1.2, "train": 80.0}``.
    label_key
        ``obs`` column of the cell types; default the first of :data:`LABEL_KEYS` present.
    cluster_key
        ``obs`` column of the clusters; default a column ending in ``_cluster`` or one of
        :data:`CLUSTER_KEYS`.
    use_rep
        ``obsm`` key of the joint embedding; default ``X_biclum`` or ``X_scmdcf``.
    title
        Page title; default names the method and the number of cells.
    n_neighbors
        Neighbours of the UMAP graph and of the paired neighbour agreement.
    k_transfer
        Neighbours voting in the label transfer.
    max_rows
        Rows shown of each table found in ``uns``.
    seed
        Seed of the UMAP layout.
    overwrite
        Write into an existing non-empty ``out_dir`` (each file replaces its namesake); otherwise
        :class:`FileExistsError`.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    out = check_report_dir(out_dir, overwrite=overwrite)
    start = time.perf_counter()
    data = _load(result)
    report = _build(data, metrics=metrics, params=params, history=history, timings=timings, label_key=label_key,
                    cluster_key=cluster_key, use_rep=use_rep, title=title, n_neighbors=n_neighbors,
                    k_transfer=k_transfer, max_rows=max_rows, seed=seed)
    report.summary["timings"]["report"] = time.perf_counter() - start
    with atomic_outputs(overwrite=overwrite) as outputs:
        tmp = outputs.stage(out, kind="dir")
        for fig in report.figures:
            (tmp / f"{fig.name}.png").write_bytes(fig.png)
        (tmp / "index.html").write_text(_html(report), encoding="utf-8")
        (tmp / "report.md").write_text(_markdown(report), encoding="utf-8")
        (tmp / "summary.json").write_text(to_json(report.summary), encoding="utf-8")
    logger.info("wrote the report to %s", out / "index.html")
    return out


# ------------------------------------------------------------------------------------ content
def _load(result):
    import mudata as md
    from anndata import AnnData

    if isinstance(result, (md.MuData, AnnData)):
        return result
    if isinstance(result, (str, os.PathLike)):
        from . import io

        path = Path(result)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass the result .h5mu written by integrate/cluster.")
        return io.read_mudata(path) if path.suffix.lower() == ".h5mu" else io.read(path)
    raise CellBridgeInputError(f"`result` must be a MuData, an AnnData or a path to .h5mu/.h5ad, "
                               f"not a {type(result).__name__}.")


def _method_info(data) -> tuple[str, dict]:
    """(method name, its ``uns`` entry) of a result written by a CellBridge model."""
    for name in ("biclum", "scmdcf"):
        entry = data.uns.get(name)
        if isinstance(entry, Mapping):
            return {"biclum": "BiCLUM", "scmdcf": "scMDCF"}[name], dict(entry)
    return "", {}


def _pick(obs: pd.DataFrame, given: str | None, candidates, what: str, *, suffix: str | None = None) -> str | None:
    if given is not None:
        if given not in obs:
            raise CellBridgeInputError(f"`{what}={given!r}` names no obs column of the result "
                                       f"(columns: {list(obs.columns)}).")
        return given
    for name in candidates:
        if name in obs:
            return name
    if suffix:
        return next((c for c in obs.columns if str(c).endswith(suffix)), None)
    return None


def _build(data, *, metrics, params, history, timings, label_key, cluster_key, use_rep, title, n_neighbors,
           k_transfer, max_rows, seed) -> _Report:
    from . import pl

    joint = pl._joint(data, use_rep)
    view = joint.adata
    method, entry = _method_info(data)
    label = _pick(view.obs, label_key, LABEL_KEYS, "label_key")
    cluster = _pick(view.obs, cluster_key, CLUSTER_KEYS, "cluster_key", suffix="_cluster")
    modalities = (list(view.obs["modality"].astype(str).unique()) if "modality" in view.obs else [])
    report = _Report(title or f"CellBridge {method or 'result'} report: {view.n_obs:,} cells"
                     + (f" ({', '.join(modalities)})" if modalities else ""))
    rep = joint.rep

    # UMAP panels (computed once on the view, reused by every figure)
    colourings = [(c, f"UMAP by {c}") for c in ("modality", label, cluster) if c and c in view.obs
                  and view.obs[c].nunique() > (1 if c == "modality" else 0)]
    for column, caption in colourings:
        fig = pl.embedding(view, color=column, use_rep=rep, n_neighbors=n_neighbors, seed=seed, show=False)
        report.figures.append(_Figure(f"umap_{_slug(column)}", caption, _png(fig)))

    # label transfer / agreement, confidence
    confidence_key, matrix = _transfer(view, rep, label, cluster, modalities, k_transfer, n_neighbors, report)
    if matrix is not None:
        table, true_key, pred_key, caption, fig_title = matrix
        fig = pl.confusion_matrix(table, true_key=true_key, predicted_key=pred_key, show=False, title=fig_title)
        report.figures.append(_Figure("confusion_matrix", caption, _png(fig)))
    if confidence_key is not None:
        groupby = "modality" if len(modalities) > 1 else None
        fig = pl.alignment_confidence(view, key=confidence_key, groupby=groupby, use_rep=rep, seed=seed,
                                      n_neighbors=n_neighbors, show=False)
        report.figures.append(_Figure("alignment_confidence", _CONFIDENCE_CAPTIONS[confidence_key], _png(fig)))

    # training curves
    history = history if history is not None else entry.get("history")
    if history is not None:
        try:
            fig = pl.training_history(history, show=False)
        except CellBridgeInputError as err:
            report.notes.append(f"No training curves: {err}")
        else:
            report.figures.append(_Figure("training_history", "Training losses per epoch", _png(fig)))

    # tables
    model_params = entry.get("params")
    if isinstance(model_params, str):
        try:
            model_params = json.loads(model_params)
        except ValueError:
            model_params = {"params": model_params}
    info = {k: v for k, v in entry.items() if k not in ("history", "params") and not isinstance(v, pd.DataFrame)}
    summary = {
        "method": method,
        "n_cells": int(view.n_obs),
        "cells_per_modality": (view.obs["modality"].astype(str).value_counts().to_dict() if modalities else {}),
        "embedding": rep,
        "label_key": label,
        "cluster_key": cluster,
        "metrics": _flatten(metrics or {}),
        "params": _flatten(dict(params or {})),
        "model_params": _flatten(dict(model_params or {})),
        "model_info": _flatten(info),
        "timings": {k: float(v) for k, v in (timings or {}).items()},
        "versions": _versions(),
    }
    report.summary = summary
    overview = {"method": method or "-", "cells": f"{view.n_obs:,}", "joint embedding": rep,
                **{f"cells ({m})": f"{n:,}" for m, n in summary["cells_per_modality"].items()},
                "cell-type column": label or "-", "cluster column": cluster or "-"}
    report.sections.append(("Overview", [("kv", overview)]))
    if summary["metrics"]:
        report.sections.append(("Metrics", [("kv", summary["metrics"])]))
    report.sections.append(("Figures", [("figures", None)]))
    tables = _uns_tables(data, max_rows)
    if tables:
        report.sections.append(("Tables", [("table", t) for t in tables]))
    if summary["params"] or summary["model_params"] or summary["model_info"]:
        items = [("kv", summary["params"])] if summary["params"] else []
        if summary["model_info"]:
            items.append(("kv-titled", ("Model summary", summary["model_info"])))
        if summary["model_params"]:
            items.append(("kv-titled", ("Model parameters", summary["model_params"])))
        report.sections.append(("Parameters", items))
    report.sections.append(("Timings", [("timings", summary["timings"])]))
    report.sections.append(("Versions", [("kv", summary["versions"])]))
    return report


_CONFIDENCE_CAPTIONS = {
    "transfer_confidence": "Alignment confidence: fraction of each cell's nearest labelled cells of the other "
                           "modality that vote for its transferred label (reference cells grey)",
    "neighbour_agreement": "Alignment confidence: fraction of each cell's nearest neighbours in its own cluster",
}


def _transfer(view, rep, label, cluster, modalities, k_transfer, n_neighbors, report):
    """Add label-transfer / agreement columns to ``view.obs``; return (confidence column, matrix spec)."""
    from .neighbors import knn_indices
    from .tl import transfer_labels

    emb = np.asarray(view.obsm[rep], dtype=np.float32)
    finite = np.isfinite(emb).all(axis=1)
    if label and len(modalities) > 1:
        modality = view.obs["modality"].astype(str).to_numpy()
        labelled = view.obs[label].notna().to_numpy() & finite
        ref_name = "rna" if "rna" in modalities and labelled[modality == "rna"].any() else next(
            (m for m in modalities if labelled[modality == m].any()), None)
        if ref_name is not None:
            ref = (modality == ref_name) & labelled
            query = (modality != ref_name) & finite
            if query.any() and ref.sum() >= 2:
                pred, conf = transfer_labels(emb[ref], view.obs[label].to_numpy()[ref], emb[query], k=k_transfer)
                view.obs["transferred_label"] = pd.Series(pd.NA, index=view.obs_names, dtype=object)
                view.obs.loc[query, "transferred_label"] = pred
                view.obs["transfer_confidence"] = np.where(query, 0.0, np.nan)
                view.obs.loc[query, "transfer_confidence"] = conf
                has_truth = view.obs.loc[query, label].notna().any()
                caption = (f"Labels transferred from {ref_name} to {', '.join(m for m in modalities if m != ref_name)}"
                           f" cells ({k_transfer}-neighbour vote) against their own {label!r}")
                truth = pd.DataFrame({label: view.obs[label].where(query, other=pd.NA),
                                      "transferred label": view.obs["transferred_label"]})
                matrix = (truth, label, "transferred label", caption, None) if has_truth else None
                if not has_truth:
                    report.notes.append(f"The {', '.join(modalities)} cells other than {ref_name} have no "
                                        f"{label!r}: no confusion matrix (the transferred labels are unchecked).")
                return "transfer_confidence", matrix
    if cluster is not None and finite.sum() > 2:
        codes = pd.factorize(view.obs[cluster].astype(str))[0]
        rows = np.flatnonzero(finite)
        _, idx = knn_indices(emb[rows], min(n_neighbors, rows.size - 1))
        agree = (codes[rows][idx] == codes[rows][:, None]).mean(axis=1)
        view.obs["neighbour_agreement"] = np.nan
        view.obs.loc[view.obs_names[rows], "neighbour_agreement"] = agree
        matrix = None
        if label:
            table = pd.DataFrame({label: view.obs[label], cluster: view.obs[cluster].astype(str)})
            caption = f"Clusters ({cluster!r}) against cell types ({label!r})"
            matrix = (table, label, cluster, caption, caption)
        return "neighbour_agreement", matrix
    report.notes.append("No per-cell alignment confidence: the result has neither labels in one of two "
                        "modalities nor clusters.")
    return None, None


def _uns_tables(data, max_rows: int) -> list[tuple[str, pd.DataFrame, int]]:
    """(``uns`` path, top rows, total rows) of every table in ``uns`` (the known keys first)."""
    found: dict[str, pd.DataFrame] = {}

    def visit(prefix: str, mapping, depth: int):
        for key, value in mapping.items():
            path = f"{prefix}{key}"
            if isinstance(value, pd.DataFrame):
                if str(key) != "history":
                    found[path] = value
            elif isinstance(value, Mapping) and depth < 2:
                visit(f"{path}/", value, depth + 1)

    visit("", data.uns, 0)
    for name, mod in getattr(data, "mod", {}).items():
        visit(f"{name}:", mod.uns, 0)
    order = sorted(found, key=lambda p: (next((i for i, k in enumerate(TABLE_KEYS) if p.split("/")[0].split(":")[-1]
                                                == k), len(TABLE_KEYS)), p))
    return [(p, found[p].head(max_rows), len(found[p])) for p in order]


def _flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, np.ndarray) and value.size > 10:
            out[name] = f"array of shape {value.shape}"
        else:
            out[name] = value.item() if isinstance(value, np.generic) else value
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["command"] = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)) or "-"
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))


def _png(fig) -> bytes:
    import io as _io

    import matplotlib.pyplot as plt

    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ rendering
def _fmt(value) -> str:
    if isinstance(value, float):
        return "-" if not np.isfinite(value) else (f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}")
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "-" if value is None else str(value)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;border-bottom:2px solid #d0d7de;padding-bottom:8px}
h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.9em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:16px 0;padding:8px;border:1px solid #d0d7de;border-radius:6px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:0.9em;color:#57606a;margin-top:6px}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;border-radius:6px;font-size:0.9em}
.small{color:#57606a;font-size:0.85em}
"""


def _kv_html(mapping: Mapping) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td{' class=num' if isinstance(v, (int, float)) else ''}>"
        f"{html.escape(_fmt(v))}</td></tr>" for k, v in mapping.items())
    return f"<table>{rows}</table>"


def _frame_html(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(
        f"<td{' class=num' if isinstance(v, (int, float, np.number)) else ''}>{html.escape(_fmt(_scalar(v)))}</td>"
        for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def _html(report: _Report) -> str:
    parts = [f"<h1>{html.escape(report.title)}</h1>",
             (f"<p class=small>Written {html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))} by CellBridge "
             f"{html.escape(report.summary['versions'].get('cellbridge', '?'))}.</p>")]
    parts += [f"<p class=note>{html.escape(n)}</p>" for n in report.notes]
    for heading, items in report.sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for kind, content in items:
            if kind == "timings":
                parts.append(_kv_html({k: f"{v:.1f} s" for k, v in content.items()}))
            elif kind == "kv":
                parts.append(_kv_html(content) if content else "<p class=small>none given</p>")
            elif kind == "kv-titled":
                parts.append(f"<h3>{html.escape(content[0])}</h3>{_kv_html(content[1])}")
            elif kind == "figures":
                for fig in report.figures:
                    data = base64.b64encode(fig.png).decode("ascii")
                    parts.append(f'<figure id="{fig.name}"><img alt="{html.escape(fig.caption)}" '
                                 f'src="data:image/png;base64,{data}"><figcaption>{html.escape(fig.caption)}'
                                 "</figcaption></figure>")
            elif kind == "table":
                path, frame, total = content
                parts.append(f"<h3>uns[{html.escape(path)}]</h3><p class=small>first {len(frame)} of {total:,} rows"
                             f"</p>{_frame_html(frame)}")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def _md_cell(value) -> str:
    return _fmt(_scalar(value)).replace("|", "\\|").replace("\n", " ")


def _md_kv(mapping: Mapping) -> str:
    if not mapping:
        return "none given\n"
    return "| | |\n|---|---|\n" + "".join(f"| {_md_cell(k)} | {_md_cell(v)} |\n" for k, v in mapping.items())


def _md_frame(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |\n"
    rule = "|" + "---|" * len(frame.columns) + "\n"
    rows = "".join("| " + " | ".join(_md_cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))
    return head + rule + rows


def _markdown(report: _Report) -> str:
    lines = [f"# {report.title}\n"]
    lines += [f"> {n}\n" for n in report.notes]
    for heading, items in report.sections:
        lines.append(f"## {heading}\n")
        for kind, content in items:
            if kind == "timings":
                lines.append(_md_kv({k: f"{v:.1f} s" for k, v in content.items()}))
            elif kind == "kv":
                lines.append(_md_kv(content))
            elif kind == "kv-titled":
                lines.append(f"### {content[0]}\n\n{_md_kv(content[1])}")
            elif kind == "figures":
                lines += [f"![{fig.caption}]({fig.name}.png)\n\n*{fig.caption}*\n" for fig in report.figures]
            elif kind == "table":
                path, frame, total = content
                lines.append(f"### uns[{path}]\n\nfirst {len(frame)} of {total:,} rows\n\n{_md_frame(frame)}")
    return "\n".join(lines)
