# %% [markdown]
# # Unpaired RNA + ATAC from a peak matrix
#
# Two experiments on different cells: scRNA-seq counts (cells x genes) and scATAC-seq peak counts
# (cells x peaks). BiCLUM needs both modalities in gene space, so the peaks are first summarised
# into **gene activity** (accessibility over each gene body and its promoter); then BiCLUM embeds
# the cells of both modalities in one space, where labels can be transferred from one to the other.

# %%
import anndata as ad
import numpy as np

import cellbridge as cb

# %% [markdown]
# ## Data
#
# The simulator gives paired counts of the same cells, with their type in `obs["cell_type"]`. To
# make the problem truly *unpaired*, RNA is taken from one half of the cells and ATAC from the
# other half, so no cell is measured twice. With your own data, read the two files instead:
# `rna = ad.read_h5ad("rna.h5ad")`, `atac = ad.read_h5ad("atac.h5ad")` (raw counts in `.X`, or
# pass `layer_rna=` / `layer=` when they are in a layer).

# %%
sim = cb.datasets.simulate_multiome(800, seed=0)
rna = sim["rna"][:400].copy()
atac = sim["atac"][400:].copy()
annotation = sim["annotation"]  # one row per gene: gene_name, chrom, start, end, strand, ...
print(rna)
print(atac)
atac.var.head(3)

# %% [markdown]
# ## Gene activity
#
# {func}`cellbridge.pp.gene_activity` sums the counts of the peaks overlapping each gene body
# extended 2 kb upstream of its TSS (Signac's definition; `method="archr"` and `"promoter"` are the
# alternatives). The annotation may be a BED, GTF or GFF3 file, a genome name (`"hg38"`, `"mm10"`)
# or a DataFrame like the simulator's. `uns["gene_activity"]` reports what was used.

# %%
gam = cb.pp.gene_activity(atac, annotation)
print(gam)
{k: gam.uns["gene_activity"][k] for k in ("method", "n_peaks", "n_peaks_used", "n_genes")}

# %% [markdown]
# ## Integration
#
# `modality="atac"` selects the hyper-parameters for RNA + gene activity. Training stops early
# when the loss stops improving and keeps the best weights; here it is cut short at 20 epochs so
# that the page builds quickly (`progress=False` hides the progress bar on this page).

# %%
model = cb.BiCLUM(rna, gam, modality="atac", seed=0)
model.train(max_epochs=20, progress=False)  # drop max_epochs on real data
model.train_summary_

# %%
cb.pl.training_history(model)

# %% [markdown]
# `get_latent` embeds the cells of either modality; the joint embedding of both is what you
# cluster, plot and transfer labels in.

# %%
rna.obsm["X_biclum"] = model.get_latent(rna)
gam.obsm["X_biclum"] = model.get_latent(gam)
joint = ad.concat({"RNA": rna, "ATAC": gam}, label="modality", index_unique="-")
joint.obs["cell_type"] = joint.obs["cell_type"].astype(str)
cb.pl.embedding(joint, color=["cell_type", "modality"])

# %% [markdown]
# ## Label transfer and metrics
#
# Labels known in RNA are transferred to the ATAC cells by a vote of their 5 nearest RNA cells in
# the joint space; `confidence` is the fraction of neighbours that agree. Because the simulator
# knows the ATAC cells' true types, the accuracy can be checked here.

# %%
predicted, confidence = cb.tl.transfer_labels(
    rna.obsm["X_biclum"], rna.obs["cell_type"], gam.obsm["X_biclum"]
)
accuracy = np.mean(predicted == gam.obs["cell_type"].astype(str).to_numpy())
print(f"RNA -> ATAC label transfer accuracy: {accuracy:.2f}, median confidence {np.median(confidence):.2f}")

# %% [markdown]
# {func}`cellbridge.metrics.integration_metrics` scores mixing of the modalities and conservation
# of the cell types (with `paired=False`, the metrics that need the same cells in both modalities,
# such as FOSCTTM, are left out).

# %%
metrics = cb.metrics.integration_metrics(
    gam.obsm["X_biclum"], rna.obsm["X_biclum"],
    gam.obs["cell_type"].astype(str).to_numpy(), rna.obs["cell_type"].astype(str).to_numpy(),
    paired=False,
)
{k: round(v, 3) for k, v in metrics.items()}

# %% [markdown]
# ## Feature embeddings and saving
#
# BiCLUM also embeds the features: each gene of RNA and of the gene activity gets a vector in the
# same space as the cells. `model.save(folder)` writes the weights and a small JSON of the
# settings (no pickles); {doc}`query_mapping` loads a saved model to embed new cells.

# %%
genes = model.get_feature_embeddings()
genes["rna"].iloc[:3, :5]
