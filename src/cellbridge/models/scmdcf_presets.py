"""Hyper-parameter bundles (``preset=``) of scMDCF.

``"reference"`` reproduces the published code (METHODS §2.2–2.4); ``"default"`` is ours, chosen
by ``benchmarks/scmdcf_benchmark.py`` (see ``docs/scmdcf.md`` for the evidence).
"""

from __future__ import annotations

import copy
from typing import Any

from .._errors import CellBridgeInputError

PRESETS = ("default", "reference")
CLUSTER_METHODS = ("kmeans", "kmeans_dec_init", "leiden", "dec")


def _reference(modality: str) -> dict[str, Any]:
    atac = modality == "atac"
    return {
        # network (§2.2)
        "enc_hidden": (512, 64) if atac else (512, 64, 8),
        "fusion_hidden": (32,) if atac else (),
        "dec_hidden": (64, 512),
        "z_dim": 8,
        "output_activation": "relu_bn",
        "latent_activation": "relu_bn",
        # losses (§2.3)
        "lamb": 10.0 if atac else 0.5,
        "alpha": 1.0,
        # training (§2.4)
        "pretrain_epochs": 200,
        "finetune_epochs": 200,
        "pretrain_optimizer": "adam",
        "pretrain_lr": 1e-2,
        "finetune_optimizer": "adadelta",
        "finetune_lr": 1e-3,
        "rho": 0.8,
        "pretrain_weights": {"rec_rna": 1.0, "rec_other": 1.0, "cl": 0.1},
        "finetune_weights": {"rec_rna": 0.1, "rec_other": 10.0, "kl": 1.0, "cl": 5.0},
        "dec_target": "live",
        "target_update_interval": 1,
        "batch_size": None,
        "full_batch_max": None,
        # preprocessing (§2.1)
        "n_top_rna": 2500 if atac else 1000,
        "n_top_other": 2500 if atac else None,
        "atac_representation": "hvf",
        "n_lsi": 50,
        "rna_representation": "hvf",
        "n_pcs": 50,
        "clip": None,
        # per-modality loss weights from the data (not in the reference)
        "modality_weighting": "none",
        "modality_weight_power": 1.0,
        "modality_weight_floor": 0.0,
        # clustering
        "cluster_method": "kmeans",
        "n_init": 20,
        # ensemble of independently seeded models, labels by consensus (not in the reference)
        "n_models": 1,
        "ensemble_max_cells": None,
        "ensemble_combine": "consensus",
        "leiden_resolution": 1.0,
    }


def _default(modality: str) -> dict[str, Any]:
    """The reference's network, losses and training with changes chosen by benchmark
    (docs/scmdcf.md): principal components of each modality as encoder inputs (RNA; ATAC from its
    HVF peaks; proteins stay z-scored), linear decoder outputs (defect E2), reconstruction /
    contrastive weights scaled by each modality's label-free informativeness
    (``modality_weighting="agreement"``, power 4; a modality weighted below 0.2 is left out of
    the losses), and final KMeans started from the fine-tuned DEC centroids. Up to 5,000 cells an
    ensemble of 5 models whose labels are combined by consensus (above, one model); mini-batches
    of 256 above 20,000 cells."""
    hp = _reference(modality)
    hp.update(rna_representation="pca", atac_representation="pca", output_activation="linear",
              modality_weighting="agreement", modality_weight_power=4.0, modality_weight_floor=0.2,
              cluster_method="kmeans_dec_init", batch_size=256, full_batch_max=20000,
              n_models=5, ensemble_max_cells=5000)
    return hp


def resolve_hyperparams(preset: str, modality: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's hyper-parameters for ``modality`` with ``overrides`` applied (validated)."""
    if preset not in PRESETS:
        raise CellBridgeInputError(f"Unknown scMDCF preset {preset!r}; choose one of {PRESETS}.")
    hp = _reference(modality) if preset == "reference" else _default(modality)
    unknown = sorted(set(overrides) - set(hp))
    if unknown:
        raise CellBridgeInputError(
            f"Unknown scMDCF hyper-parameter(s) {unknown}; valid names: {sorted(hp)}."
        )
    hp = copy.deepcopy(hp)
    for key, value in overrides.items():
        if isinstance(hp[key], dict) and isinstance(value, dict):
            hp[key].update(value)
        else:
            hp[key] = value
    _check_choices(hp)
    return hp


def _check_choices(hp: dict[str, Any]) -> None:
    choices = {
        "output_activation": ("relu_bn", "linear"),
        "latent_activation": ("relu_bn", "linear"),
        "pretrain_optimizer": ("adam", "adadelta"),
        "finetune_optimizer": ("adam", "adadelta"),
        "dec_target": ("live", "fixed"),
        "atac_representation": ("hvf", "lsi", "pca"),
        "rna_representation": ("hvf", "pca"),
        "cluster_method": CLUSTER_METHODS,
        "modality_weighting": ("none", "agreement"),
        "ensemble_combine": ("consensus", "select"),
    }
    for key, allowed in choices.items():
        if hp[key] not in allowed:
            raise CellBridgeInputError(f"scMDCF `{key}` must be one of {allowed}, got {hp[key]!r}.")
    if int(hp["n_models"]) != hp["n_models"] or hp["n_models"] < 1:
        raise CellBridgeInputError(f"scMDCF `n_models` must be a positive integer, got {hp['n_models']!r}.")
    if hp["batch_size"] is not None and int(hp["batch_size"]) < 2:
        raise CellBridgeInputError("scMDCF `batch_size` must be at least 2 (BatchNorm) or None.")


def effective_batch_size(hp: dict[str, Any], n_cells: int) -> int | None:
    """None (full batch) when no batch size is set or the data has at most ``full_batch_max`` cells."""
    if hp["batch_size"] is None:
        return None
    if hp["full_batch_max"] is not None and n_cells <= hp["full_batch_max"]:
        return None
    return int(hp["batch_size"])


def effective_n_models(hp: dict[str, Any], n_cells: int) -> int:
    """``n_models``, or 1 above ``ensemble_max_cells`` cells (training cost grows with the members)."""
    if hp["ensemble_max_cells"] is not None and n_cells > hp["ensemble_max_cells"]:
        return 1
    return int(hp["n_models"])
