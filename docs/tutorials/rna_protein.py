# %% [markdown]
# # Unpaired RNA + surface protein (ADT)
#
# CITE-seq-style antibody panels measure tens to a few hundred surface proteins. BiCLUM links each
# protein to the gene that encodes it (CD3 → *CD3E*, CD16 → *FCGR3A*, ...) and uses those links
# to pair cells and features across the two modalities. Here the RNA and protein cells are
# different cells, as when a protein panel is integrated with a separate scRNA-seq atlas.

# %%
import anndata as ad
import numpy as np

import cellbridge as cb

# %%
sim = cb.datasets.simulate_multiome(800, seed=2)
rna = sim["rna"][:400].copy()
adt = sim["adt"][400:].copy()  # 20 surface proteins, raw counts
adt.var_names.tolist()

# %% [markdown]
# ## Protein → gene links
#
# {func}`cellbridge.pp.protein_to_gene` maps antibody names to gene symbols through a built-in
# table of 617 antigens (isotype controls are recognised and left out). Check the mapping before
# training: an unmapped protein still enters the cell encoder but gets no feature pair. Pass your
# own `protein_map=` to BiCLUM (a table or dict with `protein` and `gene`) to add or override
# entries.

# %%
mapping = cb.pp.protein_to_gene(adt)
mapping.head(8)

# %% [markdown]
# ## Integration
#
# `modality="protein"` selects the hyper-parameters for RNA + ADT.

# %%
model = cb.BiCLUM(rna, adt, modality="protein", seed=0)
model.train(max_epochs=20, progress=False)  # drop max_epochs on real data
rna.obsm["X_biclum"] = model.get_latent(rna)
adt.obsm["X_biclum"] = model.get_latent(adt)
cb.pl.training_history(model)

# %%
joint = ad.concat({"RNA": rna, "ADT": adt}, label="modality", index_unique="-", join="outer")
joint.obs["cell_type"] = joint.obs["cell_type"].astype(str)
cb.pl.embedding(joint, color=["cell_type", "modality"])

# %% [markdown]
# ## Transfer labels both ways
#
# {func}`cellbridge.metrics.transfer_accuracy` is the accuracy of a 5-nearest-neighbour vote in
# the joint space; the simulator's types are the truth.

# %%
z_rna, z_adt = rna.obsm["X_biclum"], adt.obsm["X_biclum"]
t_rna, t_adt = rna.obs["cell_type"].astype(str).to_numpy(), adt.obs["cell_type"].astype(str).to_numpy()
print(f"RNA -> ADT: {cb.metrics.transfer_accuracy(z_rna, t_rna, z_adt, t_adt):.2f}")
print(f"ADT -> RNA: {cb.metrics.transfer_accuracy(z_adt, t_adt, z_rna, t_rna):.2f}")

# %% [markdown]
# The protein embeddings live in the same space as the gene embeddings, so a protein's nearest
# genes can be read off `model.get_feature_embeddings()`.

# %%
features = model.get_feature_embeddings()
proteins, genes = features["other"], features["rna"]
cd19 = proteins.loc["CD19"].to_numpy()
similarity = genes.to_numpy() @ cd19 / (np.linalg.norm(genes.to_numpy(), axis=1) * np.linalg.norm(cd19))
genes.index[np.argsort(-similarity)[:5]].tolist()
