"""Gene-set enrichment of marker lists (over-representation, hypergeometric test) from user gene sets.

For each marker list (the top ``n_genes`` markers of a group) and gene set, both restricted to the
universe of genes tested (N genes), the overlap of the list (n genes) with the set (K genes) is
compared with the hypergeometric distribution of the overlap of a random list of n genes: p =
P(X >= overlap), X ~ Hypergeom(N, K, n) (the one-sided Fisher exact test, as decoupler's
``query_set`` computes it). FDR: Benjamini-Hochberg over the sets tested for one list.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .._errors import CellBridgeInputError
from ._tables import ATTRS_SUFFIX, check_store, store_table

__all__ = ["ENRICHMENT_COLUMNS", "gene_set_enrichment", "read_gmt"]

#: Columns of :func:`gene_set_enrichment`.
ENRICHMENT_COLUMNS = ["group", "source", "gene_set", "set_size", "n_markers", "n_universe", "overlap", "expected",
                      "enrichment", "pvalue", "fdr", "genes"]


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Gene sets of a GMT file (plain or gzip): one set a line, ``name<TAB>description<TAB>gene...``.

    Parameters
    ----------
    path
        The ``.gmt`` / ``.gmt.gz`` file (tab-separated, as MSigDB and Enrichr write it).

    Returns
    -------
    dict
        Set name -> its genes (in file order, duplicates dropped). Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise CellBridgeInputError(f"The gene-set file {path} does not exist; pass an existing `.gmt` path.")
    opener = gzip.open if path.name.endswith(".gz") else open
    sets: dict[str, list[str]] = {}
    with opener(path, "rt") as fh:
        for number, line in enumerate(fh, 1):
            fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
            if not any(fields):
                continue
            if len(fields) < 3 or not fields[0]:
                raise CellBridgeInputError(
                    f"{path} line {number} is not GMT (`name<TAB>description<TAB>gene<TAB>...`): "
                    f"{line.strip()[:80]!r}; separate the fields with tabs."
                )
            merged = dict.fromkeys(sets.get(fields[0], []) + [g for g in fields[2:] if g])  # a name twice: one set
            sets[fields[0]] = list(merged)
    if not sets:
        raise CellBridgeInputError(f"The gene-set file {path} holds no gene set; pass a non-empty `.gmt` file.")
    return sets


def _gene_sets(gene_sets) -> dict[str, list[str]]:
    if isinstance(gene_sets, (str, os.PathLike)):
        return read_gmt(gene_sets)
    if isinstance(gene_sets, pd.DataFrame):  # decoupler's network format
        missing = [c for c in ("source", "target") if c not in gene_sets]
        if missing:
            raise CellBridgeInputError(
                f"The gene-set table lacks columns {missing} (it has {list(gene_sets.columns)}); it needs "
                "`source` (set name) and `target` (gene)."
            )
        sets = {str(k): list(dict.fromkeys(v.astype(str))) for k, v in gene_sets.groupby("source")["target"]}
    elif isinstance(gene_sets, Mapping):
        sets = {str(k): list(dict.fromkeys(map(str, v))) for k, v in gene_sets.items()}
    else:
        raise CellBridgeInputError(
            f"`gene_sets` must be a .gmt path, a dict of gene lists or a source/target DataFrame, got "
            f"{type(gene_sets).__name__}."
        )
    if not sets:
        raise CellBridgeInputError("`gene_sets` holds no gene set.")
    return sets


def _marker_lists(data, markers_key: str):
    """``(table, features)``: a long marker table (``group, rank, gene, source``) and the genes each
    source tested (or None)."""
    if hasattr(data, "uns"):
        if markers_key not in data.uns:
            raise CellBridgeInputError(
                f"`data.uns` has no {markers_key!r} (keys: {list(data.uns)}); compute the markers first, e.g. "
                f"`cellbridge.tl.marker_genes(mdata, groupby=..., n_genes=None, key_added={markers_key!r})`."
            )
        attrs = data.uns.get(markers_key + ATTRS_SUFFIX, {})
        table, features = pd.DataFrame(data.uns[markers_key]), attrs.get("features")
    elif isinstance(data, pd.DataFrame):
        table, features = data, data.attrs.get("features")
    elif isinstance(data, Mapping):
        rows = [(str(g), r, str(gene)) for g, genes in data.items() for r, gene in enumerate(genes)]
        table, features = pd.DataFrame(rows, columns=["group", "rank", "gene"]), None
    else:
        raise CellBridgeInputError(
            "`data` must be a marker table (`cellbridge.tl.marker_genes`), a dict group -> genes, or an "
            f"AnnData / MuData holding the table in `uns[markers_key]`; got {type(data).__name__}."
        )
    missing = [c for c in ("group", "gene") if c not in table]
    if missing:
        raise CellBridgeInputError(
            f"The marker table lacks columns {missing} (it has {list(table.columns)}); pass the output of "
            "`cellbridge.tl.marker_genes`."
        )
    table = table.assign(group=table["group"].astype(str), gene=table["gene"].astype(str),
                         source=table["source"].astype(str) if "source" in table else "markers")
    if "rank" not in table:
        table["rank"] = table.groupby(["source", "group"]).cumcount()
    if table.empty:
        raise CellBridgeInputError("The marker table has no rows.")
    return table, features


def _universe(universe, features, source: str, table: pd.DataFrame) -> list[str]:
    if universe is not None:
        genes = list(dict.fromkeys(map(str, universe)))
    elif features is not None and source in features:
        genes = list(dict.fromkeys(map(str, features[source])))
    else:
        raise CellBridgeInputError(
            f"The genes tested for the markers of {source!r} are not known: pass `universe=` (e.g. "
            "`adata.var_names`), or a table from `cellbridge.tl.marker_genes` that records them."
        )
    outside = set(table["gene"]) - set(genes)
    if outside:
        raise CellBridgeInputError(
            f"{len(outside)} marker genes (e.g. {sorted(outside)[:3]}) are not in the universe; pass the genes "
            "the markers were chosen from as `universe`."
        )
    return genes


def _incidence(lists: Sequence[Sequence[str]], index: dict[str, int]) -> sp.csr_matrix:
    """Rows x universe indicator matrix of gene lists (genes outside the universe dropped)."""
    rows, cols = [], []
    for i, genes in enumerate(lists):
        pos = [index[g] for g in genes if g in index]
        rows += [i] * len(pos)
        cols += pos
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(lists), len(index)))


def gene_set_enrichment(
    data,
    *,
    gene_sets: str | os.PathLike | Mapping[str, Sequence[str]] | pd.DataFrame,
    n_genes: int = 50,
    universe: Sequence[str] | None = None,
    min_size: int = 5,
    max_size: int = 500,
    markers_key: str = "marker_genes",
    key_added: str | None = None,
) -> pd.DataFrame:
    """Over-representation of user gene sets among each group's top marker genes.

    Parameters
    ----------
    data
        Markers: a table from :func:`cellbridge.tl.marker_genes` (one list per group and
        ``source``), a dict group -> ranked genes, or an AnnData / MuData holding such a table in
        ``uns[markers_key]`` (``marker_genes(..., key_added=...)``).
    gene_sets
        A ``.gmt`` file (plain or gzip), a dict set name -> genes, or a DataFrame with ``source``
        (set) and ``target`` (gene) columns, as decoupler's networks. Nothing is downloaded.
    n_genes
        Top markers per group tested (by ``rank``).
    universe
        The genes the markers were chosen from (N). Default: those the marker table records
        (``df.attrs["features"]`` of :func:`marker_genes`); required for a dict of lists.
    min_size, max_size
        Gene sets with fewer / more genes in the universe are not tested.
    markers_key
        ``uns`` key of the marker table when ``data`` is an AnnData / MuData.
    key_added
        Also store the table in ``uns[key_added]`` of ``data`` (an AnnData / MuData).

    Returns
    -------
    pandas.DataFrame
        Columns ``group, source, gene_set, set_size, n_markers, n_universe, overlap, expected,
        enrichment`` (overlap / expected), ``pvalue``, ``fdr`` (per group and source), ``genes``
        (the overlapping markers, ``;``-separated), sorted by group, source and p-value.
    """
    if n_genes < 1:
        raise CellBridgeInputError(f"`n_genes` must be at least 1, got {n_genes}.")
    if not 1 <= min_size <= max_size:
        raise CellBridgeInputError(f"need 1 <= min_size <= max_size, got {min_size} and {max_size}.")
    check_store(data, key_added)
    table, features = _marker_lists(data, markers_key)
    sets = _gene_sets(gene_sets)
    frames = []
    for source, markers in table.groupby("source", sort=True):
        genes = _universe(universe, features, source, markers)
        index = {g: i for i, g in enumerate(genes)}
        names = list(sets)
        S = _incidence([sets[n] for n in names], index)
        size = np.asarray(S.sum(1)).ravel()
        usable = (size >= min_size) & (size <= max_size)
        if not usable.any():
            raise CellBridgeInputError(
                f"No gene set has between {min_size} and {max_size} genes among the {len(genes)} genes tested "
                f"(largest overlap {int(size.max())}; set genes e.g. {sets[names[0]][:3]}, tested e.g. {genes[:3]}): "
                "check the gene identifiers and species, or lower `min_size`."
            )
        S, size, names = S[usable], size[usable], [n for n, u in zip(names, usable) if u]
        top = markers.sort_values("rank", kind="stable").groupby("group", sort=True).head(n_genes)
        groups = sorted(top["group"].unique())
        lists = [top.loc[top["group"] == g, "gene"].tolist() for g in groups]
        L = _incidence(lists, index)
        n = np.asarray(L.sum(1)).ravel()
        overlap = (L @ S.T).toarray()
        N = len(genes)
        p = stats.hypergeom.sf(overlap - 1, N, size[None, :], n[:, None])
        expected = n[:, None] * size[None, :] / N
        gene_names = np.asarray(genes, dtype=object)
        for i, g in enumerate(groups):
            hits = L[i].multiply(S).tocsr()  # sets x universe: the overlapping genes
            frames.append(pd.DataFrame({
                "group": g, "source": source, "gene_set": names, "set_size": size.astype(int),
                "n_markers": int(n[i]), "n_universe": N, "overlap": overlap[i].astype(int),
                "expected": expected[i], "enrichment": overlap[i] / expected[i], "pvalue": p[i],
                "fdr": stats.false_discovery_control(p[i], method="bh"),
                "genes": [";".join(gene_names[hits.indices[hits.indptr[j]:hits.indptr[j + 1]]])
                          for j in range(len(names))],
            }))
    out = pd.concat(frames, ignore_index=True)[ENRICHMENT_COLUMNS]
    out = out.sort_values(["group", "source", "pvalue", "gene_set"], kind="stable").reset_index(drop=True)
    out.attrs["gene_set_enrichment"] = {"n_genes": n_genes, "min_size": min_size, "max_size": max_size,
                                        "n_sets": int(out["gene_set"].nunique())}
    if key_added is not None:
        store_table(data, key_added, out)
    return out
