# %% [markdown]
# # Unpaired RNA + ATAC from a fragments file
#
# Many scATAC-seq pipelines (Cell Ranger ATAC, ArchR, SnapATAC) provide a **fragments file**: one
# line per sequenced DNA fragment, `chrom, start, end, barcode[, count]`, gzip- or bgzip-compressed.
# {func}`cellbridge.pp.gene_activity` computes gene activity straight from it, streaming the file
# in chunks (memory does not grow with the file) and without needing a peak matrix or R.

# %%
import gzip
import os
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import cellbridge as cb

# %% [markdown]
# ## A fragments file
#
# To keep this page self-contained, we write a small fragments file from the simulator's ATAC
# peak counts: every count becomes one fragment placed inside its peak. RNA and ATAC again come
# from different cells (the first and second half of the simulated cells). With your own data,
# skip this cell and set `fragments = "path/to/fragments.tsv.gz"`.

# %%
sim = cb.datasets.simulate_multiome(800, seed=1)
rna = sim["rna"][:400].copy()
atac_cells = sim["atac"][400:]
annotation = sim["annotation"]

rng = np.random.default_rng(0)
counts = atac_cells.X.tocoo()
n = counts.data.astype(int)
cell, peak = np.repeat(counts.row, n), np.repeat(counts.col, n)
peaks = atac_cells.var
length = rng.integers(60, 300, size=cell.size)
start = peaks["start"].to_numpy()[peak] + rng.integers(0, 200, size=cell.size)
table = pd.DataFrame({"chrom": peaks["chrom"].to_numpy()[peak], "start": start, "end": start + length,
                      "barcode": atac_cells.obs_names.to_numpy()[cell], "count": 1})

workdir = Path(tempfile.mkdtemp())
fragments = workdir / "fragments.tsv.gz"
with gzip.open(fragments, "wt") as f:
    table.sort_values(["chrom", "start"]).to_csv(f, sep="\t", header=False, index=False)
print(f"{len(table):,} fragments of {atac_cells.n_obs} cells")
table.head(3)

# %% [markdown]
# ## Gene activity from the fragments
#
# `cells=` names the barcodes to score (a list, or an AnnData whose `obs_names` are the barcodes);
# fragments of other barcodes are skipped and their fraction is reported. Each fragment overlapping
# a gene body or the 2 kb upstream of its TSS counts once (`insertions=True` counts both Tn5
# insertion sites instead; `method="archr"` computes ArchR's distance-weighted gene score).

# %%
gam = cb.pp.gene_activity(annotation=annotation, fragments=fragments, cells=list(atac_cells.obs_names))
gam.obs["cell_type"] = atac_cells.obs["cell_type"].to_numpy()  # kept to check the result below
report = gam.uns["gene_activity"]
{k: report[k] for k in ("method", "n_fragments", "n_fragments_in_cells", "n_genes", "n_genes_with_signal")}

# %% [markdown]
# ## Integration and label transfer
#
# From here on the workflow is the one of {doc}`rna_atac_peaks`.

# %%
model = cb.BiCLUM(rna, gam, modality="atac", seed=0)
model.train(max_epochs=20, progress=False)  # drop max_epochs on real data
rna.obsm["X_biclum"] = model.get_latent(rna)
gam.obsm["X_biclum"] = model.get_latent(gam)

predicted, confidence = cb.tl.transfer_labels(rna.obsm["X_biclum"], rna.obs["cell_type"], gam.obsm["X_biclum"])
print(f"RNA -> ATAC label transfer accuracy: {np.mean(predicted == gam.obs['cell_type'].astype(str)):.2f}")

joint = ad.concat({"RNA": rna, "ATAC": gam}, label="modality", index_unique="-")
joint.obs["cell_type"] = joint.obs["cell_type"].astype(str)
cb.pl.embedding(joint, color=["cell_type", "modality"])

# %% [markdown]
# ## A real fragments file
#
# The same call on real data: a tiny public scATAC fragments file (human PBMC, hg19, chromosomes
# 5 and 11 only; B, T and myeloid cells, from the ArchR test data) with an unpaired scRNA-seq set.
# Its barcodes follow ArchR's `sample#barcode` convention in the RNA object (`PBSmall#T.1`) and
# are bare in the fragments (`T.1`); `gene_activity(..., cells=rna)` matches them. This cell runs
# when the project's shared data folder is present (`CELLBRIDGE_DATA`, default `../shared/data`);
# otherwise it says so.

# %%
data = Path(os.environ.get("CELLBRIDGE_DATA", "../shared/data")) / "pbmc_fragments_tiny"
if (data / "fragments.tsv.gz").is_file():
    pbmc_rna = ad.read_h5ad(data / "rna.h5ad")
    pbmc_gam = cb.pp.gene_activity(annotation=data.parent / "annotation" / "hg19_genes.bed",
                                   fragments=data / "fragments.tsv.gz", cells=pbmc_rna)
    print(pbmc_gam)
    print({k: pbmc_gam.uns["gene_activity"][k] for k in ("n_fragments", "n_fragments_in_cells", "n_genes_with_signal")})
else:
    print(f"{data} not found: set CELLBRIDGE_DATA to the folder holding pbmc_fragments_tiny/ to run this cell")
