"""Probe: do two source trees train to the same embeddings? A 5-epoch BiCLUM (simulated RNA + gene
activity) and a 5+5-epoch one-model scMDCF (simulated RNA + ADT), one thread, seed 0; prints the
imported package path and the MD5 of both ``get_latent`` results. Run once per tree::

    PYTHONPATH=/path/to/other/checkout/src OMP_NUM_THREADS=1 python benchmarks/probes/bitcheck_two_trees.py
    OMP_NUM_THREADS=1 python benchmarks/probes/bitcheck_two_trees.py
"""

from __future__ import annotations

import hashlib
import warnings


def main() -> None:
    import numpy as np
    import torch

    import cellbridge as cb

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    sim = cb.datasets.simulate_multiome(400, seed=5)
    gam = cb.pp.gene_activity(sim["atac"], sim["annotation"])
    biclum = cb.BiCLUM(sim["rna"], gam, modality="atac", seed=0, max_epochs=5).train(progress=False)
    scmdcf = cb.scMDCF(sim["rna"], sim["adt"], n_clusters=4, n_models=1, seed=0).train(5, 5, progress=False)
    digest = [hashlib.md5(np.ascontiguousarray(z).tobytes()).hexdigest()
              for z in (biclum.get_latent(sim["rna"], "rna"), scmdcf.get_latent())]
    print(cb.__file__, *digest)


if __name__ == "__main__":
    main()
