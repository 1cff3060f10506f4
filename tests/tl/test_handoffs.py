"""Hand-offs (cellbridge.tl._handoffs): TF activity with decoupler and cell-cell interactions with
liana, on the built-in simulation with planted signals; nothing is downloaded (the regulons and the
ligand-receptor resource are made here)."""

from __future__ import annotations

import sys
import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest

import cellbridge as cb
from cellbridge import CellBridgeInputError
from cellbridge._errors import CellBridgeWarning

N_TOP = 15  # targets per planted regulator: the top markers of one cell type


@pytest.fixture(scope="module")
def sim():
    """Simulated RNA + gene activity of 240 cells of 3 types, their top markers, and a joint
    embedding in which the types are separated (one-hot of the type plus noise)."""
    data = cb.datasets.simulate_multiome(240, n_types=3, n_genes=120, seed=0)
    rna = data["rna"]
    gam = cb.pp.gene_activity(data["atac"], data["annotation"])
    markers = cb.tl.marker_genes(rna, groupby="cell_type", n_genes=N_TOP, method="t-test")
    top = {g: d.sort_values("rank")["gene"].tolist() for g, d in markers.groupby("group")}
    truth = rna.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    onehot = pd.get_dummies(truth).to_numpy(float) * 5
    rna.obsm["X_biclum"] = onehot + rng.normal(size=onehot.shape)
    gam.obsm["X_biclum"] = onehot + rng.normal(size=onehot.shape)
    gam.obs_names = [f"atac{i}" for i in range(gam.n_obs)]  # unpaired: other cells
    gam.obs = gam.obs.drop(columns="cell_type")  # the ATAC cells carry no labels
    decoy = [g for g in rna.var_names if not any(g in t for t in top.values())]
    net = pd.DataFrame([(f"TF_{t}", g, 1.0) for t, genes in top.items() for g in genes]
                       + [("TF_decoy", g, 1.0) for g in decoy[:N_TOP]], columns=["source", "target", "weight"])
    return {"rna": rna, "gam": gam, "top": top, "truth": truth, "net": net, "decoy": decoy}


def _mudata(sim, gam=None, keep_obsm_in_mods=True):
    """A result laid out as CellBridge writes it (cellbridge.io.joint_mudata): the gene-activity
    features renamed ``gene_activity:GENE`` (input names in ``var["input_var_name"]``), the joint
    embedding at the top level (and in the modalities unless ``keep_obsm_in_mods=False``)."""
    gam = (gam if gam is not None else sim["gam"]).copy()
    return cb.io.joint_mudata({"rna": sim["rna"].copy(), "gene_activity": gam},
                              sides={"rna": "rna", "gene_activity": "atac"}, obsm_keys=("X_biclum",),
                              keep_obsm_in_mods=keep_obsm_in_mods)


def _round_trip(mdata, path):
    with md.set_options(pull_on_update=False):
        mdata.write(path)
        return md.read_h5mu(path)


# ------------------------------------------------------------------------------- TF activity
def test_public_api():
    assert cb.tl.tf_activity is cb.tl._handoffs.tf_activity
    assert cb.tl.cell_interactions is cb.tl._handoffs.cell_interactions


def test_tf_activity_per_cell_recovers_the_planted_regulators(sim):
    rna = sim["rna"].copy()
    before = rna.X.copy()
    scores = cb.tl.tf_activity(rna, regulons=sim["net"], key_added="tf")
    assert scores.shape == (rna.n_obs, 4) and list(scores.index) == list(rna.obs_names)
    mean = scores.groupby(sim["truth"]).mean()
    for t in sim["top"]:
        assert mean.loc[t].idxmax() == f"TF_{t}"  # each type's own regulator is its most active
        assert mean.loc[t, f"TF_{t}"] > 2 and mean.loc[t, "TF_decoy"] < 1
    np.testing.assert_array_equal(rna.X.toarray() if hasattr(rna.X, "toarray") else rna.X,
                                  before.toarray() if hasattr(before, "toarray") else before)  # normalised on a copy
    pd.testing.assert_frame_equal(rna.obsm["tf"], scores, check_names=False)
    padj = rna.obsm["tf_padj"]
    assert padj.shape == scores.shape and ((padj >= 0) & (padj <= 1)).all().all()


def test_tf_activity_per_cluster_on_gene_activity_with_transferred_labels(sim, tmp_path):
    mdata = _mudata(sim, keep_obsm_in_mods=False)  # the embedding only at the top level
    assert mdata["gene_activity"].var_names[0].startswith("gene_activity:")
    table = cb.tl.tf_activity(mdata, regulons=sim["net"], modality="gene_activity", groupby="cell_type",
                              key_added="tf_activity")
    info = table.attrs["tf_activity"]
    assert info["labels"] == "transferred" and info["n_transferred"] == sim["gam"].n_obs
    assert info["from"] == ["rna"] and info["mean_confidence"] > 0.9
    sizes = pd.Series(sim["truth"]).value_counts()
    for t in sim["top"]:
        rows = table[table["group"] == t]
        assert rows.iloc[0]["source"] == f"TF_{t}"  # highest statistic: the planted regulator
        assert rows.iloc[0]["padj"] < 1e-6 and rows.iloc[0]["meanchange"] > 0
        assert int(rows.iloc[0]["n_cells"]) == sizes[t]  # labels transferred correctly
    assert "cell_type" not in mdata["gene_activity"].obs  # the user's object gets only the table
    back = _round_trip(mdata, tmp_path / "r.h5mu")
    pd.testing.assert_frame_equal(back.uns["tf_activity"], table, check_dtype=False)
    assert back.uns["tf_activity_attrs"]["tf_activity"]["method"] == "ulm"


def test_tf_activity_reads_a_tsv_without_weights(sim, tmp_path):
    path = tmp_path / "regulons.tsv"
    sim["net"].drop(columns="weight").to_csv(path, sep="\t", index=False)
    from_file = cb.tl.tf_activity(sim["rna"], regulons=path)
    pd.testing.assert_frame_equal(from_file, cb.tl.tf_activity(sim["rna"], regulons=sim["net"]))


def test_tf_activity_bad_regulons(sim):
    rna, net = sim["rna"], sim["net"]
    with pytest.raises(CellBridgeInputError, match="No target of the regulon table.*same gene identifiers"):
        cb.tl.tf_activity(rna, regulons=net.assign(target=net["target"].str.lower()))
    with pytest.raises(CellBridgeInputError, match=r"lacks columns \['target'\]"):
        cb.tl.tf_activity(rna, regulons=net.rename(columns={"target": "gene"}))
    with pytest.raises(CellBridgeInputError, match="repeats 1 source-target"):
        cb.tl.tf_activity(rna, regulons=pd.concat([net, net.iloc[:1]]))
    with pytest.raises(CellBridgeInputError, match="tmin=50"):
        cb.tl.tf_activity(rna, regulons=net, tmin=50)
    with pytest.raises(CellBridgeInputError, match="finite"):
        cb.tl.tf_activity(rna, regulons=net.assign(weight="strong"))
    with pytest.raises(CellBridgeInputError, match="decoupler method"):
        cb.tl.tf_activity(rna, regulons=net, method="magic")
    small = pd.concat([net, pd.DataFrame({"source": ["TF_tiny"], "target": [rna.var_names[0]], "weight": [1.0]})])
    with pytest.warns(CellBridgeWarning, match=r"1 regulon sources .*\['TF_tiny'\]"):
        scores = cb.tl.tf_activity(rna, regulons=small)
    assert "TF_tiny" not in scores.columns


def test_groups_of_a_single_modality(sim):
    rna_types = sim["truth"]
    keep = rna_types != "type_2"  # no ATAC cell of type_2: a group of the RNA only
    gam = sim["gam"][keep].copy()
    with pytest.warns(CellBridgeWarning, match=r"\['type_2'\].*no cell in modality 'gene_activity'"):
        table = cb.tl.tf_activity(_mudata(sim, gam), regulons=sim["net"], modality="gene_activity",
                                  groupby="cell_type")
    assert sorted(table["group"].unique()) == ["type_0", "type_1"]
    one = sim["gam"][rna_types == "type_0"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellBridgeWarning)
        with pytest.raises(CellBridgeInputError, match="at least two are needed"):
            cb.tl.tf_activity(_mudata(sim, one), regulons=sim["net"], modality="gene_activity", groupby="cell_type")
    unlabelled = _mudata(sim)
    unlabelled["rna"].obs = unlabelled["rna"].obs.drop(columns="cell_type")
    with pytest.raises(CellBridgeInputError, match="No modality .* has labels in `obs\\['cell_type'\\]`"):
        cb.tl.tf_activity(unlabelled, regulons=sim["net"], modality="gene_activity", groupby="cell_type")


def test_missing_optional_package_names_the_extra(sim, monkeypatch):
    monkeypatch.setitem(sys.modules, "decoupler", None)  # import decoupler -> ImportError
    with pytest.raises(ImportError, match=r"cellbridge\[biology\]"):
        cb.tl.tf_activity(sim["rna"], regulons=sim["net"])


# ------------------------------------------------------------------------- cell interactions
def _resource(sim):
    """One planted pair (a type_0 marker as ligand, a type_1 marker as receptor) among decoys."""
    top, decoy = sim["top"], sim["decoy"]
    pairs = [(top["type_0"][0], top["type_1"][0])] + [(decoy[i], decoy[i + 1]) for i in range(0, 8, 2)]
    pairs.append((decoy[10], f"{decoy[11]}_{decoy[12]}"))  # a complex receptor, liana's "A_B"
    return pd.DataFrame(pairs, columns=["ligand", "receptor"])


def test_cell_interactions_recover_the_planted_pair_on_both_modalities(sim, tmp_path):
    mdata = _mudata(sim)
    res = _resource(sim)
    ligand, receptor = res.iloc[0]
    on_rna = cb.tl.cell_interactions(mdata, groupby="cell_type", resource=res, n_perms=100, key_added="cci")
    best = on_rna.sort_values(["specificity_rank", "magnitude_rank"]).iloc[0]
    assert (best["source"], best["target"], best["ligand_complex"], best["receptor_complex"]) == (
        "type_0", "type_1", ligand, receptor)
    assert on_rna.attrs["cell_interactions"]["labels"] == "given"
    pd.testing.assert_frame_equal(_round_trip(mdata, tmp_path / "r.h5mu").uns["cci"], on_rna, check_dtype=False)
    # the ATAC cells, through their gene activity and labels transferred in the joint embedding
    res_path = tmp_path / "resource.csv"
    res.to_csv(res_path, index=False)
    on_gam = cb.tl.cell_interactions(mdata, groupby="cell_type", resource=res_path, modality="gene_activity",
                                     method="cellphonedb", n_perms=100)
    assert on_gam.attrs["cell_interactions"]["labels"] == "transferred"
    planted = on_gam[(on_gam["ligand_complex"] == ligand) & (on_gam["receptor_complex"] == receptor)]
    top_pair = planted.sort_values("lr_means", ascending=False).iloc[0]
    assert (top_pair["source"], top_pair["target"]) == ("type_0", "type_1")
    assert top_pair["cellphone_pvals"] < 0.05


def test_cell_interactions_bad_input(sim):
    mdata = _mudata(sim)
    res = _resource(sim)
    with pytest.raises(CellBridgeInputError, match="No ligand-receptor pair .* both partners"):
        cb.tl.cell_interactions(mdata, groupby="cell_type", resource=res.assign(ligand="NOPE"))
    with pytest.raises(CellBridgeInputError, match=r"lacks columns \['receptor'\]"):
        cb.tl.cell_interactions(mdata, groupby="cell_type", resource=res.rename(columns={"receptor": "r"}))
    with pytest.raises(CellBridgeInputError, match="one of"):
        cb.tl.cell_interactions(mdata, groupby="cell_type", resource=res, method="magic")
    with pytest.raises(CellBridgeInputError, match="does not exist"):
        cb.tl.cell_interactions(mdata, groupby="cell_type", resource="no/such/file.tsv")
    with pytest.raises(CellBridgeInputError, match="no 'X_scmdcf'"):
        cb.tl.cell_interactions(mdata, groupby="cell_type", resource=res, modality="gene_activity",
                                use_rep="X_scmdcf")
    with pytest.raises(CellBridgeInputError, match="fewer than|at least two"), warnings.catch_warnings():
        warnings.simplefilter("ignore", CellBridgeWarning)
        cb.tl.cell_interactions(mdata, groupby="cell_type", resource=res, min_cells=500)
    with pytest.raises(CellBridgeInputError, match="key_added"):
        cb.tl.cell_interactions({"rna": sim["rna"]}, groupby="cell_type", resource=res, n_perms=10,
                                key_added="cci")

