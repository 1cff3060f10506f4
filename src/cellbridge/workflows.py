"""End-to-end jobs behind the command line: read inputs, run a method, write results."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import mudata as md
import numpy as np
from anndata import AnnData

from . import io
from ._errors import CellBridgeInputError
from ._utils import to_json
from ._validate import check_label_column

logger = logging.getLogger("cellbridge")


def _check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it.")
    return out


def load_other_modality(
    *,
    atac: str | None = None,
    fragments: str | None = None,
    gene_activity: str | None = None,
    adt: str | None = None,
    annotation: str | None = None,
    cells: AnnData | None = None,
) -> tuple[AnnData, str]:
    """Read the non-RNA input of ``integrate`` and return it in gene space (or ADT) with its modality."""
    given = [k for k, v in dict(atac=atac, fragments=fragments, gene_activity=gene_activity, adt=adt).items() if v]
    if len(given) != 1:
        raise CellBridgeInputError(f"give exactly one of --atac, --fragments, --gene-activity, --adt (got {given or 'none'}).")
    if adt:
        return io.read(adt), "protein"
    if gene_activity:
        return io.read(gene_activity), "atac"
    if not annotation:
        raise CellBridgeInputError("--atac/--fragments need --genome-annotation (a BED/GTF/GFF3 file or hg38, hg19, mm10).")
    from .pp import gene_activity as compute

    if atac:
        return compute(io.read(atac), annotation), "atac"
    if cells is None:
        raise CellBridgeInputError("--fragments needs the cells to score: pass --cells with an h5ad of the ATAC barcodes.")
    return compute(None, annotation, fragments=fragments, cells=cells), "atac"


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
    layer_other: str | None = None,
    overwrite: bool = False,
    model_dir: str | None = None,
    progress: bool = True,
) -> md.MuData:
    """Run BiCLUM on files and write a MuData with embeddings (obsm/varm) and history (uns)."""
    from .models.biclum import BiCLUM

    out_path = _check_out(out, overwrite)
    rna = io.read(rna_path)
    cell_obs = io.read(cells) if cells else None
    other, modality = load_other_modality(atac=atac, fragments=fragments, gene_activity=gene_activity,
                                          adt=adt, annotation=annotation, cells=cell_obs)
    model = BiCLUM(rna, other, modality=modality, preset=preset, seed=seed,
                   layer_rna=layer_rna, layer_other=layer_other)
    model.train(max_epochs=epochs, max_time=max_time, progress=progress)
    mdata = model.to_mudata()
    io.write_h5mu(mdata, out_path, overwrite=overwrite)
    if model_dir:
        model.save(model_dir, overwrite=overwrite)
    logger.info("wrote %s", out_path)
    return mdata


def evaluate(
    result: str | md.MuData,
    *,
    label: str,
    paired: bool = False,
    key: str = "X_biclum",
    out: str | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Integration metrics (METHODS §4) of a result MuData with two modalities."""
    from .metrics import integration_metrics

    mdata = io.read_mudata(result) if not isinstance(result, md.MuData) else result
    names = list(mdata.mod)
    if len(names) != 2:
        raise CellBridgeInputError(f"the result must hold two modalities, found {names}.")
    a, b = (mdata.mod[n] for n in names)
    for name, adata in zip(names, (a, b)):
        check_label_column(adata, label, name)
        if key not in adata.obsm:
            raise CellBridgeInputError(f"modality {name!r} has no obsm[{key!r}]; pass --key with the embedding name.")
    if paired and not np.array_equal(a.obs_names, b.obs_names):
        common = a.obs_names.intersection(b.obs_names)
        if len(common) == 0:
            raise CellBridgeInputError("--paired was given but the modalities share no cell names.")
        a, b = a[common], b[common]
    metrics = integration_metrics(
        np.asarray(a.obsm[key]), np.asarray(b.obsm[key]),
        a.obs[label].astype(str).to_numpy(), b.obs[label].astype(str).to_numpy(), paired=paired,
    )
    if out:
        _write_json(metrics, out, overwrite)
    return metrics


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
) -> dict[str, float]:
    """Simulate paired RNA + ATAC, compute gene activity from the peaks, integrate them as unpaired
    with BiCLUM, and return the metrics (the pairing is used only for FOSCTTM / neighbourhood overlap)."""
    from . import datasets
    from .metrics import integration_metrics
    from .models.biclum import BiCLUM
    from .pp import gene_activity

    start = time.perf_counter()
    sim = datasets.simulate_multiome(n_cells, seed=seed)
    rna, atac = sim["rna"], sim["atac"]
    gam = gene_activity(atac, sim["annotation"])
    model = BiCLUM(rna, gam, modality="atac", seed=seed)
    model.train(max_epochs=epochs, progress=progress)
    z_rna, z_atac = model.get_latent(rna), model.get_latent(gam)
    labels = rna.obs["cell_type"].astype(str).to_numpy()
    metrics = integration_metrics(z_atac, z_rna, labels, labels, paired=True, seed=seed)
    metrics["seconds"] = time.perf_counter() - start
    if out:
        io.write_h5mu(model.to_mudata(), out, overwrite=overwrite)
    return metrics


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
        _check_out(path, overwrite)
    sim = datasets.simulate_multiome(n_cells, n_types=n_types, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        io.write_h5ad(sim[name], path, overwrite=overwrite)
    columns = ["chrom", "start", "end", "gene_name", "strand"]
    io.write_text(sim["annotation"][columns].to_csv(sep="\t", header=False, index=False), bed,
                  overwrite=overwrite)
    return {"written": [str(p) for p in (*paths.values(), bed)], "n_cells": n_cells}


def gene_activity_file(
    *,
    out: str,
    annotation: str,
    peaks: str | None = None,
    fragments: str | None = None,
    cells: str | None = None,
    method: str = "signac",
    overwrite: bool = False,
) -> dict:
    """Gene activity from a peak matrix file or a fragments file, written as ``.h5ad``."""
    from .pp import gene_activity

    out_path = _check_out(out, overwrite)
    if fragments and not cells:
        raise CellBridgeInputError("--fragments needs --cells: an h5ad whose obs_names are the barcodes to score.")
    atac = io.read(peaks) if peaks else None
    gam = gene_activity(atac, annotation, fragments=fragments, cells=io.read(cells) if cells else None, method=method)
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
    layer_other: str | None = None,
    n_models: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run scMDCF on paired files and write a MuData with ``obsm["X_scmdcf"]`` and ``obs["scmdcf_cluster"]``."""
    from .models.scmdcf import cluster_paired

    out_path = _check_out(out, overwrite)
    if bool(adt) == bool(atac):
        raise CellBridgeInputError("give exactly one of --adt or --atac with --rna.")
    other = io.read(adt or atac)
    options = {k: v for k, v in dict(pretrain_epochs=pretrain_epochs, finetune_epochs=finetune_epochs,
                                     n_models=n_models).items() if v}
    mdata, model = cluster_paired(io.read(rna_path), other, modality="protein" if adt else "atac",
                                  n_clusters=n_clusters, preset=preset, layer_rna=layer_rna,
                                  layer_other=layer_other, seed=seed, progress=progress, **options)
    io.write_h5mu(mdata, out_path, overwrite=overwrite)
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
    embedding comes from the result's other modality, matched to the rows of ``peaks`` by cell name.
    """
    from .tl import gene_peak_links

    out_path = _check_out(out, overwrite)
    mdata = io.read_mudata(result)
    if "rna" not in mdata.mod or len(mdata.mod) < 2:
        raise CellBridgeInputError(f"{result} must hold an 'rna' modality and the ATAC cells; found {list(mdata.mod)}.")
    other = next(m for name, m in mdata.mod.items() if name != "rna")
    table = gene_peak_links(mdata.mod["rna"], io.read(peaks), annotation, use_rep=key, atac_embedding=other,
                            window=window, groupby=groupby, paired=paired, layer_atac=layer_peaks, seed=seed)
    io.write_text(table.to_csv(sep="\t", index=False), out_path, overwrite=overwrite)
    logger.info("wrote %d links to %s", len(table), out_path)
    return {"written": str(out_path), "n_links": int(len(table)),
            "n_fdr_below_0.05": int((table["fdr"] < 0.05).sum())}
