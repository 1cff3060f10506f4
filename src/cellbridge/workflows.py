"""End-to-end jobs behind the command line: read inputs, run a method, write results."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
from anndata import AnnData

from . import io
from ._errors import CellBridgeInputError
from ._utils import atomic_outputs, check_output, to_json
from ._validate import check_label_column

logger = logging.getLogger("cellbridge")


def _check_out(out: str | os.PathLike, overwrite: bool, *, kind: str = "file", suffix: str | None = ".h5mu") -> Path:
    """Refuse an output that exists (unless ``overwrite``), cannot be written or (a file) does not end
    in ``suffix``, before any work."""
    if suffix and kind == "file":
        io.check_suffix(out, suffix)
    return check_output(out, overwrite=overwrite, kind=kind)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _checkpoint_dir(out: Path, model_dir: str | None) -> Path:
    """Where the CLI's training checkpoints go: the model folder, else ``OUT.checkpoint`` beside ``out``."""
    return Path(model_dir) if model_dir else out.with_name(out.name + ".checkpoint")


def read_input(spec: str | os.PathLike, kind: str, *, flag: str | None = None, layer: str | None = None,
               layer_flag: str | None = None) -> AnnData:
    """Read one input of a command with :func:`cellbridge.io.read`: the modality of ``kind`` unless
    ``spec`` names one (``FILE:MODALITY``), with ``layer`` checked to exist.

    Parameters
    ----------
    spec
        The file, optionally ``FILE:MODALITY`` (see :func:`cellbridge.io.read`).
    kind
        What the input must hold when its file holds several modalities: ``"rna"``, ``"atac"``,
        ``"adt"`` or ``"gene_activity"``.
    flag
        The command-line flag of the input, to start error messages with (None: ``--{kind}``).
    layer
        A layer the input must hold (None: ``.X`` is used).
    layer_flag
        The flag that gave ``layer``, for the message (None: ``--layer-{kind}``).

    Returns
    -------
    anndata.AnnData
        The input's cells x features.
    """
    flag = flag or _flag(kind)
    try:
        adata = io.read(spec, modality=kind)
    except CellBridgeInputError as err:
        raise CellBridgeInputError(f"{flag} {err}") from None
    if layer is not None and layer not in adata.layers:
        layer_flag = layer_flag or f"--layer-{flag.lstrip('-')}"
        raise CellBridgeInputError(
            f"{layer_flag} {layer}: {spec} has no layer {layer!r} (its layers: {list(adata.layers) or 'none'}); name "
            f"one of its layers, or leave {layer_flag} out to use its .X.")
    return adata


def _other_input(inputs: dict[str, str | None], layers: dict[str, str | None],
                 layer_other: str | None) -> tuple[str, str | None]:
    """The one non-RNA input given and the layer that applies to it; refuses a layer option of an
    input that was not given (``--layer-other``: the layer of whichever input was given)."""
    given = [k for k, v in inputs.items() if v]
    if len(given) != 1:
        options = ", ".join(_flag(k) for k in inputs)
        raise CellBridgeInputError(f"give exactly one of {options} (got {[_flag(k) for k in given] or 'none'}).")
    name = given[0]
    for other, layer in layers.items():
        if layer is not None and other != name:
            raise CellBridgeInputError(f"--layer-{_flag(other)[2:]} {layer}: it applies to {_flag(other)}, which was "
                                       f"not given (the input is {_flag(name)}); use --layer-{_flag(name)[2:]}.")
    layer = layers.get(name)
    if layer_other is not None:
        if layer is not None:
            raise CellBridgeInputError(f"give --layer-{_flag(name)[2:]} or --layer-other, not both.")
        layer = layer_other
    if layer is not None and name == "fragments":
        raise CellBridgeInputError("a layer option was given for --fragments, which has no layers; leave it out.")
    return name, layer


def _original_names(adata: AnnData) -> AnnData:
    """``adata`` with the cell names it had before a result renamed them (``obs["input_obs_name"]``,
    see :func:`cellbridge.io.joint_mudata`); changed in place."""
    if "input_obs_name" in adata.obs:
        adata.obs_names = adata.obs["input_obs_name"].astype(str).to_numpy()
    return adata


def integrate(
    rna_path: str,
    out: str,
    *,
    atac: str | None = None,
    fragments: str | None = None,
    cells: str | None = None,
    gene_activity: str | None = None,
    adt: str | None = None,
    annotation: str | None = None,
    preset: str = "default",
    epochs: int | None = None,
    max_time: float | None = None,
    seed: int = 0,
    layer_rna: str | None = None,
    layer_atac: str | None = None,
    layer_adt: str | None = None,
    layer_gene_activity: str | None = None,
    layer_other: str | None = None,
    keep_peaks: bool = True,
    overwrite: bool = False,
    model_dir: str | None = None,
    progress: bool = True,
    report: str | None = None,
    protein_map: str | None = None,
    accelerator: str = "auto",
    resume: bool = False,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 600.0,
) -> md.MuData:
    """Run BiCLUM on files and write the result MuData (:meth:`cellbridge.BiCLUM.to_mudata`: joint
    embedding ``obsm["X_biclum"]``, ``obs["modality"]``, the modalities ``rna``, ``gene_activity``
    (or ``adt``) and, from ``atac``, the peaks as ``atac`` unless ``keep_peaks=False``); with
    ``report``, also the run report (:func:`cellbridge.report.write_report`) into that folder.

    Every input is read by :func:`read_input` (``FILE:MODALITY`` syntax; a 10x Multiome ``.h5``
    can be given as both ``rna_path`` and ``atac``). Layers: ``layer_rna`` applies to the RNA,
    ``layer_atac`` to the peaks (the counts gene activity is computed from), ``layer_adt`` to the
    ADT, ``layer_gene_activity`` to a precomputed gene activity; ``layer_other`` is the layer of
    whichever of these non-RNA inputs is given.

    The training state is checkpointed into ``model_dir`` (else ``OUT.checkpoint`` beside ``out``,
    removed once the result is written) every ``checkpoint_every`` epochs / ``checkpoint_seconds``
    seconds and on Ctrl-C; ``resume`` continues an interrupted run from it.
    """
    from .models.biclum import BiCLUM, resolve_params
    from .models.training import prepare_checkpoint_dir, remove_checkpoint

    resolve_params(preset, "protein" if adt else "atac", {"max_epochs": epochs})  # numbers before any work
    if max_time is not None and not max_time > 0:
        raise CellBridgeInputError(f"`max_time` must be a number of seconds above 0, got {max_time!r}.")
    out_path = _check_out(out, overwrite)
    if model_dir:
        _check_out(model_dir, overwrite or resume, kind="dir")
    checkpoint_dir = prepare_checkpoint_dir(_checkpoint_dir(out_path, model_dir), resume=resume, overwrite=overwrite)
    _check_report(report, overwrite)
    timings, start = {}, time.perf_counter()
    name, layer = _other_input({"atac": atac, "fragments": fragments, "gene_activity": gene_activity, "adt": adt},
                               {"atac": layer_atac, "adt": layer_adt, "gene_activity": layer_gene_activity},
                               layer_other)
    if name in ("atac", "fragments") and not annotation:
        raise CellBridgeInputError(f"{_flag(name)} needs --genome-annotation (a BED/GTF/GFF3 file or hg38, hg19, mm10).")
    if name == "fragments" and not cells:
        raise CellBridgeInputError("--fragments needs the cells to score: pass --cells with a file of the ATAC "
                                   "barcodes (e.g. an .h5ad whose obs_names are the barcodes).")
    rna = read_input(rna_path, "rna", layer=layer_rna)
    peaks, other_layer = None, layer
    if name == "adt":
        other = read_input(adt, "adt", layer=layer)
    elif name == "gene_activity":
        other = read_input(gene_activity, "gene_activity", layer=layer)
    else:
        from .pp import gene_activity as compute

        if name == "atac":
            peaks = read_input(atac, "atac", layer=layer)
            other = compute(peaks, annotation, layer=layer)
        else:
            cell_obs = read_input(cells, "rna", flag="--cells")
            other = compute(None, annotation, fragments=fragments, cells=cell_obs)
        other_layer = None  # the gene activity just computed is in .X
    model = BiCLUM(rna, other, modality="protein" if name == "adt" else "atac", preset=preset, seed=seed,
                   layer_rna=layer_rna, layer_other=other_layer, protein_map=protein_map, accelerator=accelerator)
    timings["read and prepare"] = time.perf_counter() - start
    model.train(max_epochs=epochs, max_time=max_time, progress=progress, checkpoint_dir=checkpoint_dir,
                checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds, resume=resume)
    timings["train"] = time.perf_counter() - start - timings["read and prepare"]
    mdata = model.to_mudata(atac=peaks if keep_peaks else None)
    with atomic_outputs(overwrite=overwrite) as outputs:  # the result and the model appear together
        io.write_h5mu(mdata, outputs.stage(out_path))
        if model_dir:  # checked above; training may have put checkpoints there since
            model.save(outputs.stage(model_dir, kind="dir", overwrite=True))
    if not model_dir:
        remove_checkpoint(checkpoint_dir)
    logger.info("wrote %s", out_path)
    if report:
        params = {"command": "integrate", "rna": rna_path, "atac": atac, "fragments": fragments,
                  "gene_activity": gene_activity, "adt": adt, "annotation": annotation, "preset": preset,
                  "epochs": epochs, "max_time": max_time, "seed": seed, "layer_rna": layer_rna,
                  f"layer_{name}": layer, "out": str(out_path)}
        _write_run_report(mdata, report, params=params, history=model.history_, timings=timings,
                          overwrite=overwrite)
    return mdata


def evaluate(
    result: str | md.MuData,
    *,
    label: str,
    paired: bool = False,
    key: str | None = None,
    out: str | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Integration metrics (METHODS §4) of a result MuData: the embedding of the cells of two
    modalities in one space.

    Reads the layout of :func:`cellbridge.io.joint_mudata` (``obsm[key]`` and ``obs["modality"]``
    at the top level; with ``paired``, cells matched by their input names), or an older result
    with ``obsm[key]`` in each of its two modalities. A result holding one embedding shared by the
    modalities (scMDCF's fused embedding) is refused: FOSCTTM, alignment and mixing would score it
    as perfect by construction.

    Parameters
    ----------
    result
        A result ``.h5mu`` file (or MuData) of ``integrate``.
    label
        ``obs`` column with the cell types (for the cells of both modalities).
    paired
        The two modalities measured the same cells: adds FOSCTTM and neighbourhood overlap.
    key
        ``obsm`` key of the embedding (None: ``X_biclum`` or ``X_scmdcf``, whichever the result has).
    out
        Write the metrics as JSON to this file (ending in ``.json``).
    overwrite
        Replace ``out`` if it exists.

    Returns
    -------
    dict
        The metrics of :func:`cellbridge.metrics.integration_metrics`.
    """
    from .metrics import integration_metrics

    if out:
        _check_out(out, overwrite, suffix=".json")
    mdata = io.read_mudata(result) if not isinstance(result, md.MuData) else result
    key = key or next((k for k in ("X_biclum", "X_scmdcf")
                       if k in mdata.obsm or any(k in m.obsm for m in mdata.mod.values())), "X_biclum")
    (emb_a, lab_a, ids_a), (emb_b, lab_b, ids_b) = _two_sides(mdata, key, label)
    if paired:
        common = ids_a[ids_a.isin(ids_b)]
        if len(common) == 0:
            raise CellBridgeInputError("--paired was given but the two modalities share no cell names; leave out "
                                       "--paired for unpaired cells.")
        ia, ib = ids_a.get_indexer(common), ids_b.get_indexer(common)
        emb_a, lab_a, emb_b, lab_b = emb_a[ia], lab_a[ia], emb_b[ib], lab_b[ib]
        if np.array_equal(emb_a, emb_b):
            raise CellBridgeInputError(_SHARED_EMBEDDING.format(key=key))
    metrics = integration_metrics(emb_a, emb_b, lab_a, lab_b, paired=paired)
    if out:
        _write_json(metrics, out, overwrite)
    return metrics


_SHARED_EMBEDDING = (
    "obsm[{key!r}] gives every cell one embedding shared by its modalities (as scMDCF's fused embedding): "
    "metrics that compare the two modalities' embeddings of a cell (FOSCTTM, alignment, mixing, label transfer) "
    "would score it as perfect by construction. Evaluate its clusters instead, e.g. "
    "cellbridge.metrics.clustering_metrics(mdata, cluster_key='scmdcf_cluster', label_key=...).")


def _two_sides(mdata: md.MuData, key: str, label: str):
    """``(embedding, labels, cell names)`` of the cells of each of the result's two sides."""
    if key in mdata.obsm and "modality" in mdata.obs:
        side = mdata.obs["modality"].astype(str)
        names = list(dict.fromkeys(side))
        if len(names) == 1:
            raise CellBridgeInputError(_SHARED_EMBEDDING.format(key=key))
        if len(names) != 2:
            raise CellBridgeInputError(f"the result holds cells of {names} (obs['modality']); evaluate compares two.")
        check_label_column(mdata, label, "result")
        emb = np.asarray(mdata.obsm[key])
        ids = mdata.obs["input_obs_name"] if "input_obs_name" in mdata.obs else mdata.obs_names.to_series()
        sides = []
        for name in names:
            rows = (side == name).to_numpy()
            labels = mdata.obs[label][rows]
            if labels.isna().any():
                raise CellBridgeInputError(f"obs[{label!r}] has no value for {int(labels.isna().sum())} {name} cells; "
                                           "evaluate needs a label for every cell.")
            sides.append((emb[rows], labels.astype(str).to_numpy(), pd.Index(ids[rows].astype(str))))
        return sides
    names = [n for n, m in mdata.mod.items() if key in m.obsm]
    if len(names) != 2:
        raise CellBridgeInputError(f"the result has no obsm[{key!r}] at the top level and {len(names)} modalities with "
                                   f"it ({list(mdata.mod)}); pass --key with the embedding's name.")
    sides = []
    for name in names:
        adata = mdata.mod[name]
        check_label_column(adata, label, name)
        sides.append((np.asarray(adata.obsm[key]), adata.obs[label].astype(str).to_numpy(), adata.obs_names))
    return sides


def _write_json(obj: dict, path: str, overwrite: bool) -> None:
    io.write_text(to_json(obj), path, overwrite=overwrite)


def demo(
    *,
    n_cells: int = 2000,
    epochs: int = 30,
    seed: int = 0,
    out: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: str | None = None,
    accelerator: str = "auto",
) -> dict[str, float]:
    """Simulate paired RNA + ATAC, compute gene activity from the peaks, integrate them as unpaired
    with BiCLUM, and return the metrics (the pairing is used only for FOSCTTM / neighbourhood overlap);
    with ``report``, also write the run report into that folder."""
    from . import datasets
    from .metrics import integration_metrics
    from .models.biclum import BiCLUM
    from .pp import gene_activity

    if out:
        _check_out(out, overwrite)
    _check_report(report, overwrite)
    start = time.perf_counter()
    sim = datasets.simulate_multiome(n_cells, seed=seed)
    rna, atac = sim["rna"], sim["atac"]
    gam = gene_activity(atac, sim["annotation"])
    model = BiCLUM(rna, gam, modality="atac", seed=seed, accelerator=accelerator)
    timings = {"simulate and prepare": time.perf_counter() - start}
    model.train(max_epochs=epochs, progress=progress)
    timings["train"] = time.perf_counter() - start - sum(timings.values())
    z_rna, z_atac = model.get_latent(rna), model.get_latent(gam)
    labels = rna.obs["cell_type"].astype(str).to_numpy()
    metrics = integration_metrics(z_atac, z_rna, labels, labels, paired=True, seed=seed)
    timings["metrics"] = time.perf_counter() - start - sum(timings.values())
    metrics["seconds"] = time.perf_counter() - start
    if out or report:
        mdata = model.to_mudata(atac=atac)
    if out:
        io.write_h5mu(mdata, out, overwrite=overwrite)
    if report:
        params = {"command": "demo", "n_cells": n_cells, "epochs": epochs, "seed": seed, "out": out}
        _write_run_report(mdata, report, metrics=metrics, params=params, history=model.history_, timings=timings,
                          overwrite=overwrite)
        metrics["report"] = str(Path(report) / "index.html")
    return metrics


def _check_report(report: str | None, overwrite: bool) -> None:
    """Refuse a report folder that cannot be written, before any work (see :func:`report_file`)."""
    if report:
        from .report import check_report_dir

        check_report_dir(report, overwrite=overwrite)


def _write_run_report(mdata, report: str, **options) -> None:
    from .report import write_report

    write_report(mdata, report, **options)
    logger.info("wrote the report %s", Path(report) / "index.html")


def report_file(
    result: str,
    out: str,
    *,
    label: str | None = None,
    cluster: str | None = None,
    key: str | None = None,
    metrics: str | None = None,
    overwrite: bool = False,
) -> dict:
    """The run report of a result ``.h5mu`` (:func:`cellbridge.report.write_report`) into the folder ``out``;
    ``metrics``: a JSON file of metrics to show (e.g. written by ``evaluate --out``)."""
    import json

    _check_report(out, overwrite)
    shown = json.loads(Path(metrics).read_text()) if metrics else None
    _write_run_report(io.read_mudata(result), out, metrics=shown, label_key=label, cluster_key=cluster, use_rep=key,
                      params={"command": "report", "result": result}, overwrite=overwrite)
    return {"written": str(Path(out) / "index.html")}


def simulate(out_dir: str, *, n_cells: int = 1000, n_types: int = 6, seed: int = 0,
             overwrite: bool = False) -> dict:
    """Write the built-in simulated example (paired counts of the same cells with
    ``obs["cell_type"]``) as ``rna.h5ad``, ``atac.h5ad``, ``adt.h5ad`` and the gene annotation
    ``genes.bed`` into ``out_dir``: inputs for ``cluster``, ``integrate`` and ``gene-activity``."""
    from . import datasets

    out = Path(out_dir)
    paths = {name: out / f"{name}.h5ad" for name in ("rna", "atac", "adt")}
    bed = out / "genes.bed"
    for path in (*paths.values(), bed):
        _check_out(path, overwrite, suffix=None)
    sim = datasets.simulate_multiome(n_cells, n_types=n_types, seed=seed)
    columns = ["chrom", "start", "end", "gene_name", "strand"]
    with atomic_outputs(overwrite=overwrite) as outputs:  # the four files appear together or not at all
        for name, path in paths.items():
            io.write_h5ad(sim[name], outputs.stage(path))
        io.write_text(sim["annotation"][columns].to_csv(sep="\t", header=False, index=False), outputs.stage(bed))
    return {"written": [str(p) for p in (*paths.values(), bed)], "n_cells": n_cells}


def gene_activity_file(
    *,
    out: str,
    annotation: str,
    peaks: str | None = None,
    fragments: str | None = None,
    cells: str | None = None,
    method: str = "signac",
    layer_peaks: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Gene activity from a peak matrix file or a fragments file, written as ``.h5ad``.

    ``peaks`` is read by :func:`read_input` (``FILE:MODALITY``; the ``Peaks`` of a 10x Multiome
    ``.h5``); ``layer_peaks``: its layer holding the counts (None: ``.X``)."""
    from .pp import gene_activity

    out_path = _check_out(out, overwrite, suffix=".h5ad")
    if fragments and not cells:
        raise CellBridgeInputError("--fragments needs --cells: a file whose obs_names are the barcodes to score.")
    if layer_peaks and not peaks:
        raise CellBridgeInputError("--layer-peaks applies to --peaks, which was not given; leave it out.")
    atac = read_input(peaks, "atac", flag="--peaks", layer=layer_peaks) if peaks else None
    cell_obs = read_input(cells, "rna", flag="--cells") if cells else None
    gam = gene_activity(atac, annotation, fragments=fragments, cells=cell_obs, method=method, layer=layer_peaks)
    io.write_h5ad(gam, out_path, overwrite=overwrite)
    report = dict(gam.uns["gene_activity"])
    report["written"] = str(out_path)
    return report


def cluster(
    rna_path: str,
    out: str,
    *,
    adt: str | None = None,
    atac: str | None = None,
    n_clusters: int | None = None,
    preset: str = "default",
    seed: int = 0,
    pretrain_epochs: int | None = None,
    finetune_epochs: int | None = None,
    layer_rna: str | None = None,
    layer_atac: str | None = None,
    layer_adt: str | None = None,
    layer_other: str | None = None,
    n_models: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: str | None = None,
    model_dir: str | None = None,
    accelerator: str = "auto",
    resume: bool = False,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 600.0,
) -> dict:
    """Run scMDCF on paired files and write a MuData with ``obs["scmdcf_cluster"]`` and ``obsm["X_scmdcf"]``;
    with ``model_dir``, also the model (result and model appear together); with ``report``, also the
    run report into that folder.

    Inputs are read by :func:`read_input` (``FILE:MODALITY``; one 10x CITE-seq or Multiome ``.h5``
    or one ``.h5mu`` can be given for both). ``layer_rna``, ``layer_adt`` / ``layer_atac`` (the
    peaks) name each input's counts layer; ``layer_other``: that of whichever of ADT / ATAC is
    given. The MuData layout is that of :func:`cellbridge.models.scmdcf.cluster_paired`.
    Checkpoints and ``resume`` as in :func:`integrate`.
    """
    from .models.scmdcf import check_n_clusters, cluster_paired, resolve_params
    from .models.training import prepare_checkpoint_dir, remove_checkpoint

    options = {k: v for k, v in {"pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs,
                                 "n_models": n_models}.items() if v is not None}  # 0 is a value, not "unset"
    resolve_params(preset, "protein" if adt else "atac", options)  # numbers before any work
    check_n_clusters(n_clusters)
    out_path = _check_out(out, overwrite)
    if model_dir:
        _check_out(model_dir, overwrite or resume, kind="dir")
    checkpoint_dir = prepare_checkpoint_dir(_checkpoint_dir(out_path, model_dir), resume=resume, overwrite=overwrite)
    _check_report(report, overwrite)
    start = time.perf_counter()
    name, layer = _other_input({"adt": adt, "atac": atac}, {"adt": layer_adt, "atac": layer_atac}, layer_other)
    rna = read_input(rna_path, "rna", layer=layer_rna)
    other = read_input(adt or atac, name, layer=layer)
    mdata, model = cluster_paired(rna, other, modality="protein" if adt else "atac",
                                  n_clusters=n_clusters, preset=preset, layer_rna=layer_rna,
                                  layer_other=layer, seed=seed, progress=progress,
                                  accelerator=accelerator, checkpoint_dir=checkpoint_dir,
                                  checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
                                  resume=resume, **options)
    with atomic_outputs(overwrite=overwrite) as outputs:
        io.write_h5mu(mdata, outputs.stage(out_path))
        if model_dir:
            model.save(outputs.stage(model_dir, kind="dir", overwrite=True))
    if not model_dir:
        remove_checkpoint(checkpoint_dir)
    if report:
        params = {"command": "cluster", "rna": rna_path, "adt": adt, "atac": atac, "n_clusters": n_clusters,
                  "preset": preset, "seed": seed, "layer_rna": layer_rna, f"layer_{name}": layer,
                  "out": str(out_path), **options}
        _write_run_report(mdata, report, params=params, history=model.history_,
                          timings={"read, train and write": time.perf_counter() - start}, overwrite=overwrite)
    return {"written": str(out_path), "n_clusters": int(model.n_clusters_),
            "n_clusters_source": model.n_clusters_source_, "n_cells": int(mdata.n_obs)}


def links(
    result: str,
    peaks: str,
    annotation: str,
    out: str,
    *,
    key: str = "X_biclum",
    window: int = 500_000,
    groupby: str | None = None,
    paired: bool = False,
    layer_peaks: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Gene-peak links of an integration result (:func:`cellbridge.tl.gene_peak_links`) as a TSV.

    The RNA modality of ``result`` gives expression and its cells' embedding; the ATAC cells'
    embedding comes from the result's ``gene_activity`` modality (or its other embedded one),
    matched to the rows of ``peaks`` by cell name (the input names, when the result renamed its
    cells). ``peaks`` is read by :func:`read_input` (``FILE:MODALITY``).
    """
    from .tl import gene_peak_links

    out_path = _check_out(out, overwrite, suffix=".tsv")
    mdata = io.read_mudata(result)
    embedded = [name for name, m in mdata.mod.items() if name != "rna" and key in m.obsm]
    if "rna" not in mdata.mod or key not in mdata.mod["rna"].obsm or not embedded:
        raise CellBridgeInputError(f"{result} must hold an 'rna' modality and the ATAC cells, both with obsm[{key!r}] "
                                   f"(it holds {list(mdata.mod)}); pass the .h5mu written by integrate, or --key.")
    rna = _original_names(mdata.mod["rna"])
    other = _original_names(mdata.mod["gene_activity" if "gene_activity" in embedded else embedded[0]])
    atac = read_input(peaks, "atac", flag="--peaks", layer=layer_peaks)
    table = gene_peak_links(rna, atac, annotation, use_rep=key, atac_embedding=other,
                            window=window, groupby=groupby, paired=paired, layer_atac=layer_peaks, seed=seed)
    io.write_text(table.to_csv(sep="\t", index=False), out_path, overwrite=overwrite)
    logger.info("wrote %d links to %s", len(table), out_path)
    return {"written": str(out_path), "n_links": len(table),
            "n_fdr_below_0.05": int((table["fdr"] < 0.05).sum())}


def load_model(model_dir: str | os.PathLike, *, accelerator: str = "auto"):
    """The BiCLUM or scMDCF model saved in ``model_dir`` (the kind is read from its ``metadata.json``)."""
    import json

    meta = Path(model_dir) / "metadata.json"
    if not Path(model_dir).is_dir() or not meta.is_file():
        raise CellBridgeInputError(f"{model_dir} is not a saved CellBridge model (no metadata.json); pass a folder "
                                   "written by --save-model (or `model.save()`).")
    try:
        kind = json.loads(meta.read_text()).get("model")
    except (OSError, ValueError, AttributeError) as err:
        raise CellBridgeInputError(f"{meta} cannot be read ({err}); the model folder is damaged: save the model "
                                   "again.") from err
    if kind == "BiCLUM":
        from .models.biclum import BiCLUM

        return BiCLUM.load(model_dir, accelerator=accelerator)
    if kind == "scMDCF":
        from .models.scmdcf import scMDCF

        return scMDCF.load(model_dir, accelerator=accelerator)
    raise CellBridgeInputError(f"{model_dir} holds a {kind!r} model; embedding needs a BiCLUM or scMDCF model.")


#: ``embed`` input kind -> the model modality it must be the other side of
_EMBED_OTHER = {"gene_activity": "atac", "adt": "protein"}


def embed(
    model_dir: str,
    cells: str,
    out: str,
    *,
    modality: str = "rna",
    layer: str | None = None,
    key_added: str | None = None,
    overwrite: bool = False,
    accelerator: str = "auto",
) -> dict:
    """Embed cells with a saved model and write them as ``.h5ad`` with ``obsm[key_added]``.

    BiCLUM maps any new cells of either modality (the training normalisation and PCA are applied);
    scMDCF returns the saved embedding of the cells it was trained on (matched by name).
    ``modality``: ``"rna"``, ``"gene_activity"`` or ``"adt"``."""
    out_path = io.check_output_file(out, ".h5ad", "an AnnData", overwrite=overwrite)
    model = load_model(model_dir, accelerator=accelerator)
    name = type(model).__name__
    flag = {"rna": "--rna", "gene_activity": "--gene-activity", "adt": "--adt"}[modality]
    if modality != "rna" and model.modality != _EMBED_OTHER[modality]:
        other = next(k for k, v in _EMBED_OTHER.items() if v == model.modality).replace("_", "-")
        raise CellBridgeInputError(f"the model in {model_dir} integrates RNA with {model.modality}, so {flag} "
                                   f"cannot be embedded with it; pass --rna or --{other} cells.")
    if layer and name != "BiCLUM":
        raise CellBridgeInputError("--layer is not used with an scMDCF model: it returns the saved embedding of "
                                   "its trained cells; leave out --layer.")
    adata = read_input(cells, modality, flag=flag, layer=layer, layer_flag="--layer")
    side = "rna" if modality == "rna" else "other"
    z = model.get_latent(adata, side, layer=layer) if name == "BiCLUM" else model.get_latent(adata, side)
    key = key_added or f"X_{name.lower()}"
    adata.obsm[key] = np.asarray(z)
    io.write_h5ad(adata, out_path, overwrite=overwrite)
    logger.info("wrote %s (%d cells, obsm[%r])", out_path, adata.n_obs, key)
    return {"written": str(out_path), "model": name, "n_cells": int(adata.n_obs), "key": key,
            "n_dims": int(adata.obsm[key].shape[1])}


def transfer(
    reference: str,
    query: str,
    out: str,
    *,
    label: str,
    key: str = "X_biclum",
    k: int = 5,
    overwrite: bool = False,
) -> dict:
    """Transfer ``obs[label]`` from reference cells to query cells by a k-nearest-neighbour vote in
    ``obsm[key]`` (:func:`cellbridge.tl.transfer_labels`); write a TSV of cell, predicted label,
    confidence (and the query's own label when it has that column)."""
    import pandas as pd

    from .tl import transfer_labels

    out_path = io.check_output_file(out, ".tsv", "a tab-separated table", overwrite=overwrite)
    ref, qry = io.read(reference), io.read(query)
    check_label_column(ref, label, "reference")
    for what, path, adata in (("--reference", reference, ref), ("--query", query, qry)):
        if key not in adata.obsm:
            raise CellBridgeInputError(f"{what} {path} has no obsm[{key!r}] (it has {list(adata.obsm)}); pass --key "
                                       "with the joint embedding's name, or embed the cells first (cellbridge embed).")
    predicted, confidence = transfer_labels(np.asarray(ref.obsm[key]), ref.obs[label].to_numpy(),
                                            np.asarray(qry.obsm[key]), k=k)
    table = pd.DataFrame({"cell": qry.obs_names, "predicted": predicted, "confidence": confidence})
    summary = {"written": str(out_path), "n_reference": int(ref.n_obs), "n_query": int(qry.n_obs), "k": int(k),
               "predicted_counts": {str(c): int(n) for c, n in table["predicted"].value_counts().items()}}
    if label in qry.obs:
        observed = qry.obs[label].astype(str).to_numpy()
        table["observed"] = observed
        summary["accuracy"] = float(np.mean(observed == table["predicted"].astype(str).to_numpy()))
    io.write_text(table.to_csv(sep="\t", index=False), out_path, overwrite=overwrite)
    return summary
