# %% [markdown]
# # Large data: subsample, project, distribute
#
# Both models work on sparse matrices and mini-batches, and both embed cells that were not used
# for training. On large data the usual plan is:
#
# 1. train on a subsample of each modality (tens of thousands of cells are usually enough to learn
#    the joint space);
# 2. embed all cells with `get_latent`, reading a file opened in **backed** mode block by block
#    (100,000 cells at a time), so the whole matrix is never in memory;
# 3. when training itself must see more cells, train data-parallel on several processes or GPUs.
#
# This page runs the plan on a few thousand simulated cells; the same code applies to millions.

# %%
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np

import cellbridge as cb

workdir = Path(tempfile.mkdtemp())

# %% [markdown]
# ## Files on disk
#
# The simulator writes its cells in chunks, so it can produce large examples
# (`cellbridge simulate --n-cells 1000000 --out-dir big` writes them as `.h5ad` files). Here:
# 4,000 cells, RNA and ATAC from disjoint halves.

# %%
sim = cb.datasets.simulate_multiome(4000, seed=5)
sim["rna"][:2000].write_h5ad(workdir / "rna.h5ad")
sim["atac"][2000:].write_h5ad(workdir / "atac.h5ad")
annotation = sim["annotation"]
del sim

# %% [markdown]
# ## Gene activity from a backed peak matrix
#
# {func}`cellbridge.pp.gene_activity` reads a backed peak matrix in blocks of 100,000 cells; the
# result (cells x genes) is sparse.

# %%
atac = ad.read_h5ad(workdir / "atac.h5ad", backed="r")
gam = cb.pp.gene_activity(atac, annotation)
gam

# %% [markdown]
# ## Train on a subsample
#
# The models read their *training* matrices into memory (training draws random mini-batches), so
# they are given a seeded subsample; 500 cells per modality here.

# %%
rna = ad.read_h5ad(workdir / "rna.h5ad", backed="r")
rng = np.random.default_rng(0)
rna_train = rna[np.sort(rng.choice(rna.n_obs, 500, replace=False))].to_memory()
gam_train = gam[np.sort(rng.choice(gam.n_obs, 500, replace=False))].copy()

model = cb.BiCLUM(rna_train, gam_train, modality="atac", seed=0)
model.train(max_epochs=20, progress=False)  # drop max_epochs on real data

# %% [markdown]
# ## Project every cell
#
# `get_latent` on the backed RNA file reads it block by block.

# %%
z_rna = model.get_latent(rna, "rna")
z_atac = model.get_latent(gam, "other")
print(z_rna.shape, z_atac.shape)

labels_rna = rna.obs["cell_type"].astype(str).to_numpy()
labels_atac = gam.obs["cell_type"].astype(str).to_numpy()
print(f"RNA -> ATAC transfer accuracy on all cells: "
      f"{cb.metrics.transfer_accuracy(z_rna, labels_rna, z_atac, labels_atac):.2f}")

# %%
joint = ad.AnnData(obs={"cell_type": np.concatenate([labels_rna, labels_atac]),
                        "modality": ["RNA"] * len(labels_rna) + ["ATAC"] * len(labels_atac)})
joint.obsm["X_biclum"] = np.vstack([z_rna, z_atac])
cb.pl.embedding(joint, use_rep="X_biclum", color=["cell_type", "modality"])

# %% [markdown]
# ## Settings that matter at scale
#
# - **MNN search**: above 20,000 cells per modality BiCLUM's default searches the cross-modal
#   mutual nearest neighbours with a faiss inverted file (`mnn_ann="ivf"`), whose time grows
#   linearly with the cells; `mnn_ann="hnsw"` uses hnswlib as the published code does.
# - **Mixed precision**: `cb.BiCLUM(..., precision="bf16-mixed")` trains and embeds under
#   bfloat16 autocast (embeddings agree with float32 within a few percent).
# - **GPU**: `accelerator="auto"` (the default) uses a CUDA GPU when there is one.
# - **scMDCF** trains in mini-batches of 256 above 20,000 cells (`full_batch_max`), with sparse
#   inputs scaled per batch, and `get_latent` embeds 4,096 cells at a time.
#
# Measured time and memory from 10^4 to 10^6 cells are on the {doc}`../methods` and
# {doc}`../scmdcf` pages.
#
# ## Data-parallel training
#
# `train(world_size=N)` trains BiCLUM or scMDCF on N processes with `torch.distributed`
# (`backend="gloo"` on CPU, `"nccl"` with one GPU per process); the result equals single-process
# training up to float rounding. It is not run on this page (it starts new Python processes):
#
# ```python
# model = cb.BiCLUM(rna_train, gam_train, modality="atac")
# model.train(world_size=4)                  # 4 processes on this machine
# ```
#
# or, to use several machines or GPUs, put the same two lines in a script and launch it with
# `torchrun`, which sets `RANK` and `WORLD_SIZE` (then `model.train()` joins the group):
#
# ```bash
# torchrun --nproc_per_node=4 train_biclum.py
# ```
#
# The global batch (`batch_size`, 256 by default) is split across the processes, and the
# contrastive loss still sees the whole global batch, so the optimisation is the same as on one
# process.
