"""The multiome simulator (cellbridge.datasets)."""

import cellbridge as cb


def test_simulator_is_seeded_and_linked():
    a = cb.datasets.simulate_multiome(300, n_genes=100, seed=4)
    b = cb.datasets.simulate_multiome(300, n_genes=100, seed=4)
    assert (a["rna"].X != b["rna"].X).nnz == 0
    assert list(a["rna"].obs_names) == list(a["atac"].obs_names) == list(a["adt"].obs_names)
    assert set(a["adt"].var_names) <= set(cb.datasets._PANEL)
    gam = cb.pp.gene_activity(a["atac"], a["annotation"])
    assert gam.uns["gene_activity"]["n_peaks_used"] >= 300  # every gene-linked peak lands in a window
