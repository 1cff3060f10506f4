"""scMDCF: paired multi-omics embedding and clustering (METHODS §2).

``_model`` (the user class), ``_module`` (the torch network), ``_training`` (pre-training, DEC
fine-tuning, data-parallel), ``_data`` (input preparation and batches), ``_presets``.
"""

from ._model import cluster_paired, scMDCF
from ._presets import CLUSTER_METHODS, PRESETS, ScMDCFParams, check_n_clusters, resolve_params

__all__ = ["CLUSTER_METHODS", "PRESETS", "ScMDCFParams", "check_n_clusters", "cluster_paired", "resolve_params",
           "scMDCF"]
