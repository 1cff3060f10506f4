"""Shared helpers of every benchmark suite and probe: data paths, loading, provenance, result files.

Suites (``benchmarks/suites/``) are kept and re-run, and the docs quote them; probes
(``benchmarks/probes/``) answer one question. Both import this module and nothing of each other::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/
    from _common import DATA, load_paired, provenance, write_results
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
DATA = Path(os.environ.get("CELLBRIDGE_DATA", REPO.parent / "shared" / "data"))

#: The shared paired datasets: file of the second modality, its kind, the label column, annotation.
DATASETS: dict[str, dict[str, Any]] = {
    "teaseq_pbmc": dict(other="adt.h5ad", modality="protein", label="cell_type"),
    "mop_snare": dict(other="atac.h5ad", modality="atac", label="cell_type", annotation="annotation/mm10_genes.bed"),
    "bmmc_cite_small": dict(other="adt.h5ad", modality="protein", label="cell_type", layer="counts"),
    "bmmc_multiome_small": dict(other="atac.h5ad", modality="atac", label="cell_type", layer="counts",
                                annotation="annotation/hg38_genes.bed"),
    "pbmc10k_cite_unnamed": dict(h5="pbmc10k_cite.h5", modality="protein", label="label"),
}

PACKAGES = ("cellbridge", "torch", "numpy", "scipy", "scanpy", "anndata", "mudata", "scikit-learn",
            "maxfuse", "scglue", "scvi-tools", "muon", "mofapy2", "harmonypy")


def load_paired(name: str):
    """``(rna, other, spec)`` of a shared paired dataset, raw counts in ``X``, same cells in the same order."""
    import anndata as ad

    spec = DATASETS[name]
    if "h5" in spec:
        import cellbridge as cb

        rna, other = cb.io.read_scmdc_h5(DATA / name / spec["h5"])
    else:
        rna = ad.read_h5ad(DATA / name / "rna.h5ad")
        other = ad.read_h5ad(DATA / name / spec["other"])
    if spec.get("layer"):
        rna.X, other.X = rna.layers[spec["layer"]].copy(), other.layers[spec["layer"]].copy()
    if spec["label"] not in rna.obs and "cell_type" in other.obs:
        rna.obs[spec["label"]] = other.obs["cell_type"]
    return rna, other, spec


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Commit, dirty flag, exact command, date, package versions, machine and its load."""
    argv = sys.argv if argv is None else argv
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": "python " + shlex.join([os.path.relpath(argv[0], REPO), *argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "versions": versions(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
    }


def peak_rss_gib() -> float:
    """Peak resident memory of this process (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def provenance_header(prov: dict[str, Any]) -> str:
    """The first lines of a markdown result file."""
    dirty = " (dirty tree)" if prov["dirty"] else ""
    load = ", ".join(f"{x:.2f}" for x in prov["machine"]["load_average"])
    vers = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    return (f"Commit `{prov['commit'][:12]}`{dirty}; {prov['date']}; load average {load}; "
            f"{prov['machine']['cpus']} CPUs.\n\nCommand: `{prov['command']}`\n\nVersions: {vers}\n")


def write_results(stem: str | Path, records: list[dict], markdown: str, prov: dict[str, Any] | None = None) -> None:
    """``stem.json`` (provenance + records, strict JSON) and ``stem.md`` (provenance header + table)."""
    prov = provenance() if prov is None else prov
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**prov, "records": records}, indent=1, default=_jsonable, allow_nan=False)
    stem.with_suffix(".json").write_text(text + "\n")
    stem.with_suffix(".md").write_text(provenance_header(prov) + "\n" + markdown)


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def finite_or_none(x):
    """JSON has no NaN: a non-finite number becomes ``None``."""
    import math

    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


# --------------------------------------------------------------------------------------------------
# appended for the peer-tool suites (benchmarks/suites/peers_*.py); nothing above depends on it
# --------------------------------------------------------------------------------------------------

#: Environment of a one-thread method subprocess.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                  "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}


def cv_knn_accuracy(emb, labels, *, k: int = 15, folds: int = 5, seed: int = 0) -> float:
    """Mean accuracy of a ``k``-NN classifier (scikit-learn, uniform weights) over ``folds``
    shuffled K-fold splits of the cells of one embedding (cell-type information kept)."""
    import numpy as np
    from sklearn.model_selection import KFold
    from sklearn.neighbors import KNeighborsClassifier

    X = np.asarray(emb, dtype=np.float32)
    y = np.asarray(labels).astype(str)
    accs = []
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(X):
        clf = KNeighborsClassifier(n_neighbors=min(k, len(train))).fit(X[train], y[train])
        accs.append(float(np.mean(clf.predict(X[test]) == y[test])))
    return float(np.mean(accs))


def mean_sd(values) -> tuple[float | None, float | None, int]:
    """(mean, sample sd, n) of the finite values; sd is None for a single value."""
    import math

    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return m, sd, len(vals)


def merge_records(old: list[dict], new: list[dict], key=("dataset", "method", "seed")) -> list[dict]:
    """``old`` with the records of ``new`` added, replacing those with the same key."""
    index = {tuple(r.get(k) for k in key): r for r in old}
    for r in new:
        index[tuple(r.get(k) for k in key)] = r
    return list(index.values())


# --------------------------------------------------------------------------------------------------
# appended with the benchmarks/ reorganisation: helpers that several suites and probes share
# (formerly private functions of biclum_benchmark.py, scmdcf_benchmark.py, scaling.py and
# scmdcf_probe_clustering.py, imported across scripts); nothing above depends on them
# --------------------------------------------------------------------------------------------------

#: Settings of ``cellbridge.datasets.simulate_multiome`` in the scaling suites and their probes.
SIM = dict(n_genes=600, n_types=8, peaks_per_gene=2, rna_depth=1000.0, atac_depth=300.0)


def load_unpaired(name: str):
    """``(rna, other, spec)`` for BiCLUM: ``other`` is the ADT matrix or, for ATAC, the gene
    activity of the peaks (``cellbridge.pp.gene_activity`` with the dataset's annotation). The
    cells are paired; BiCLUM does not use that (FOSCTTM does)."""
    import cellbridge as cb

    rna, other, spec = load_paired(name)
    if spec["modality"] == "atac":
        other = cb.pp.gene_activity(other, DATA / spec["annotation"])
    return rna, other, spec


def load_scmdcf(name: str):
    """``(rna, other, label_key)`` for scMDCF: raw counts of both modalities, same cells."""
    rna, other, spec = load_paired(name)
    return rna, other, spec["label"]


def evaluate_labels(adata, label_key: str, labels_pred) -> dict[str, float]:
    """NMI / ARI / AMI of ``labels_pred`` against ``adata.obs[label_key]`` (error if the column is
    missing), by ``cellbridge.metrics.clustering_metrics``."""
    import numpy as np

    from cellbridge._validate import check_label_column
    from cellbridge.metrics import clustering_metrics

    check_label_column(adata, label_key, "adata")
    truth = adata.obs[label_key].astype(str).to_numpy()
    res = clustering_metrics(np.asarray(labels_pred), truth)
    return {"NMI": res["nmi"], "ARI": res["ari"], "AMI": res["ami"]}


def parse_set(items: list[str] | None) -> dict:
    """``["key=json_value", ...]`` (the ``--set`` options) as a dict; non-JSON values stay strings."""
    out = {}
    for item in items or []:
        key, val = item.split("=", 1)
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def block_scale(x):
    """Centre a block of columns and scale it to total variance 1."""
    import numpy as np

    x = x - x.mean(axis=0)
    return x / max(np.sqrt(x.var(axis=0).sum()), 1e-12)


def print_provenance(**extra) -> None:
    """First line of a probe's JSON-lines output: ``{"provenance": {commit, dirty, command, date,
    versions, machine, ...}}``; redirect the output to a file under ``results/probes/``."""
    print(json.dumps({"provenance": {**provenance(), **extra}}), flush=True)


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines result file, the provenance line left out."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if "provenance" not in r]


def provenance_lines(data: dict) -> str:
    """Markdown header for a result file: :func:`provenance_header` when ``data`` holds a full
    provenance, else the back-filled ``data["provenance"]`` (what is known, "not recorded")."""
    if isinstance(data.get("versions"), dict) and isinstance(data.get("machine"), dict):
        return provenance_header(data)
    prov = data.get("provenance") or {}
    return "".join(f"- {key}: {value}\n" for key, value in prov.items())


def leiden_weighted(graph, *, resolution: float = 1.0, seed: int = 0, n_clusters: int | None = None):
    """Leiden (``leidenalg``, RB-configuration, 2 iterations) on a weighted sparse graph, edge weights
    used; with ``n_clusters`` the resolution is bisected over [0.01, 5] (12 steps). The WNN
    baseline's clustering as it was measured."""
    from cellbridge.tl.clustering import leiden_on_graph

    return leiden_on_graph(graph, resolution=resolution, n_clusters=n_clusters, seed=seed, flavor="leidenalg",
                           weighted=True)


def wnn_leiden(reps: dict, obs, k: int | None, seed: int = 0):
    """Leiden labels on muon's weighted-nearest-neighbour graph (Hao et al. 2021) of per-modality
    representations of the cells ``obs``: rows scaled to unit L2 norm (as Seurat's
    ``FindMultiModalNeighbors``), an exact 15-NN graph per modality (``scanpy.pp.neighbors``),
    ``muon.pp.neighbors`` (15 WNN neighbours), then :func:`leiden_weighted` on its connectivities:
    resolution bisected to ``k``, or 1 when ``k`` is None. Needs the optional ``muon``."""
    import mudata
    import muon as mu
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    mods = {}
    for name, rep in reps.items():
        m = sc.AnnData(sp.csr_matrix((rep.shape[0], 1), dtype=np.float32), obs=obs[[]].copy())
        m.obsm["X_rep"] = rep / np.maximum(np.linalg.norm(rep, axis=1, keepdims=True), 1e-12)
        # exact kNN (scikit-learn, scanpy's choice below 4,096 cells anyway): scanpy 1.11's
        # pynndescent path fails on scipy >= 1.17 sparse arrays (no `getnnz`) on mop_snare
        sc.pp.neighbors(m, n_neighbors=15, use_rep="X_rep", random_state=seed, transformer="sklearn")
        mods[name] = m
    mdata = mudata.MuData(mods)
    mu.pp.neighbors(mdata, n_neighbors=15, random_state=seed)
    return leiden_weighted(mdata.obsp["connectivities"], resolution=1.0, seed=seed, n_clusters=k)


# --- the derived weak-linkage case -------------------------------------------------------------

WEAK_N_GENES, WEAK_N_PROTEINS, WEAK_N_LINKED = 2000, 13, 5


def load_dataset(name: str):
    """``(rna, other, spec, notes)`` of a shared paired set (:func:`load_paired`) or of the derived
    weak-linkage case ``teaseq_weak13``: TEA-seq with the RNA cut to its 2,000 seurat_v3 HVGs
    (scanpy, on raw counts) and 13 of the 46 proteins, drawn with ``numpy.random.default_rng(0)``:
    5 whose gene (CellBridge's protein -> gene map) is in the 2,000-gene panel and 8 whose gene is
    not in the panel or that map to no gene (isotype controls excluded). So only 5 protein-gene
    links connect the two modalities, as in real panels of 10-30 proteins."""
    import warnings

    import anndata as ad
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    import cellbridge as cb

    if name != "teaseq_weak13":
        rna, other, spec = load_paired(name)
        return rna, other, dict(spec), {}
    rna, adt, spec = load_paired("teaseq_pbmc")
    genes = ad.AnnData(sp.csr_matrix(rna.X, dtype=np.float32))
    sc.pp.highly_variable_genes(genes, n_top_genes=min(WEAK_N_GENES, genes.n_vars), flavor="seurat_v3")
    rna = rna[:, genes.var["highly_variable"].to_numpy()].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapping = cb.pp.protein_to_gene(list(adt.var_names))
    names = [p for p in adt.var_names if not cb.pp.protein.is_isotype_control(p)]
    linked = sorted(p for p in names if isinstance(mapping[p], str) and mapping[p] in rna.var_names)
    unlinked = sorted(p for p in names if p not in linked)
    rng = np.random.default_rng(0)
    pick = list(rng.choice(linked, WEAK_N_LINKED, replace=False)) + list(
        rng.choice(unlinked, WEAK_N_PROTEINS - WEAK_N_LINKED, replace=False))
    adt = adt[:, [p for p in adt.var_names if p in set(pick)]].copy()
    notes = {"derived_from": "teaseq_pbmc", "rna_genes": int(rna.n_vars), "proteins": list(adt.var_names),
             "linked_proteins": sorted(set(pick) & set(linked)), "n_linked_in_full_panel": len(linked)}
    return rna, adt, dict(DATASETS["teaseq_pbmc"]), notes
