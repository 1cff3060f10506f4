# %% [markdown]
# # Paired clustering with scMDCF
#
# When both modalities were measured in the **same cells** (CITE-seq: RNA + ADT; SNARE-seq, 10x
# Multiome, SHARE-seq: RNA + ATAC peaks), scMDCF learns one fused embedding of each cell and
# clusters it. Cells are matched by `obs_names`; cells present in one modality only are dropped
# with a warning.

# %%
import pandas as pd

import cellbridge as cb

# %%
sim = cb.datasets.simulate_multiome(600, seed=3)
rna, atac = sim["rna"], sim["atac"]  # the same 600 cells, raw counts; RNA + ADT works the same way
print(rna.n_obs, "cells;", rna.n_vars, "genes;", atac.n_vars, "peaks")

# %% [markdown]
# ## Training
#
# `n_clusters` is the number of clusters K; when omitted it is estimated by Leiden on the
# pre-trained embedding (`model.n_clusters_` says what was used). The default preset trains an
# ensemble of 5 models up to 5,000 cells and combines their clusters; `n_models=1` trains one
# model, 5 times faster, which is enough for this page. Training has two phases: pre-training of
# the autoencoders, then fine-tuning with a clustering (DEC) loss, 200 epochs each by default.
# A MuData with modalities `"rna"` and `"atac"` (or `"adt"`/`"prot"`) may be passed instead of
# the pair: `cb.scMDCF(mdata, n_clusters=6)`.

# %%
model = cb.scMDCF(rna, atac, n_clusters=6, n_models=1, seed=0)
model.train(40, 40, progress=False)  # pretrain_epochs, finetune_epochs: drop them on real data
print("modality weights (RNA, ATAC):", model.modality_weights_)
cb.pl.training_history(model)

# %% [markdown]
# The modality weights are computed before training, without labels, from how well each
# modality's own clustering agrees with the joint one; a modality that carries little signal is
# down-weighted (and left out of the losses below 0.2, with a warning), so that it cannot drown
# the other.
#
# ## Results
#
# `write_results` returns copies of the inputs with the fused embedding in `obsm["X_scmdcf"]` and
# the clusters in `obs["scmdcf_cluster"]`.

# %%
rna_out, atac_out = model.write_results(rna, atac)
cb.pl.embedding(rna_out, use_rep="X_scmdcf", color=["cell_type", "scmdcf_cluster"])

# %%
truth = rna_out.obs["cell_type"].astype(str).to_numpy()
clusters = rna_out.obs["scmdcf_cluster"].astype(str).to_numpy()
{k: round(v, 3) for k, v in cb.metrics.clustering_metrics(clusters, truth).items()}

# %% [markdown]
# How the clusters relate to the simulated types (rows: types, columns: clusters):

# %%
pd.crosstab(rna_out.obs["cell_type"], rna_out.obs["scmdcf_cluster"])

# %% [markdown]
# With one model and 40 + 40 epochs the embedding already separates the types, but the
# clustering can merge neighbouring types and leave small clusters; the default training (200 +
# 200 epochs, an ensemble of 5 models whose clusters are combined) is what the numbers on the
# {doc}`../scmdcf` page were measured with. Any other clustering of the fused embedding works too,
# e.g. Leiden at 6 clusters:

# %%
leiden = cb.tl.leiden(rna_out.obsm["X_scmdcf"], n_clusters=6, seed=0)
{k: round(v, 3) for k, v in cb.metrics.clustering_metrics(leiden.astype(str), truth).items() if k in ("nmi", "ari")}
