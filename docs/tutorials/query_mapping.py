# %% [markdown]
# # Mapping new cells with a saved model
#
# A trained BiCLUM model embeds cells it has never seen: the training normalisation, feature
# scaling and PCA are stored with the model and applied to the new cells. A typical use: an
# integrated reference (RNA + ATAC) is saved once; new RNA samples are later projected into the
# same space and labelled by their nearest reference cells, without retraining.

# %%
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np

import cellbridge as cb

# %% [markdown]
# ## Train and save a reference model
#
# Three disjoint sets of simulated cells: reference RNA, reference ATAC (as gene activity), and a
# query RNA set that arrives later.

# %%
sim = cb.datasets.simulate_multiome(1200, seed=4)
gam_all = cb.pp.gene_activity(sim["atac"], sim["annotation"])
ref_rna, ref_atac = sim["rna"][:400].copy(), gam_all[400:800].copy()
query = sim["rna"][800:].copy()

model = cb.BiCLUM(ref_rna, ref_atac, modality="atac", seed=0)
model.train(max_epochs=20, progress=False)  # drop max_epochs on real data

folder = Path(tempfile.mkdtemp()) / "reference_model"
model.save(folder)
sorted(p.name for p in folder.iterdir())

# %% [markdown]
# The folder holds the weights (a PyTorch `state_dict`, loaded with `weights_only=True`) and a
# JSON file of the settings, feature names and fitted transforms: no pickles. `save` refuses to
# replace an existing folder unless `overwrite=True`.
#
# ## Load it and embed the new cells
#
# `BiCLUM.load(folder)` needs no training data. `get_latent(adata, "rna")` embeds cells through the
# RNA encoder; genes missing from the new cells count as zero, extra genes are ignored.

# %%
reference = cb.BiCLUM.load(folder)
z_ref = reference.get_latent(ref_rna, "rna")
z_query = reference.get_latent(query, "rna")
print(z_query.shape)
np.allclose(z_ref, model.get_latent(ref_rna, "rna"), atol=1e-5)  # the loaded model is the same model

# %% [markdown]
# ## Transfer the reference labels
#
# The query cells take the label of their 5 nearest reference cells; `confidence` is the fraction
# of those neighbours that agree, a per-cell measure of how well the cell is explained by the
# reference (low values flag cell states the reference lacks).

# %%
labels, confidence = cb.tl.transfer_labels(z_ref, ref_rna.obs["cell_type"], z_query)
query.obs["predicted"] = labels
query.obs["confidence"] = confidence
accuracy = np.mean(labels == query.obs["cell_type"].astype(str).to_numpy())
print(f"accuracy against the simulated truth: {accuracy:.2f}")

# %%
both = ad.concat({"reference": ref_rna, "query": query}, label="set", index_unique="-")
both.obsm["X_biclum"] = np.vstack([z_ref, z_query])
both.obs["cell_type"] = both.obs["cell_type"].astype(str)
cb.pl.embedding(both, use_rep="X_biclum", color=["cell_type", "set"])

# %% [markdown]
# ## From the command line
#
# The same steps without Python: `integrate` saves the model next to its result, `embed` maps new
# cells with it, and `transfer` moves labels through the joint space (see {doc}`../cli`):
#
# ```bash
# cellbridge integrate --rna rna.h5ad --atac atac.h5ad --genome-annotation genes.bed \
#     --out result.h5mu --save-model model
# cellbridge embed --model model --rna new_rna.h5ad --out new_rna_embedded.h5ad
# ```
