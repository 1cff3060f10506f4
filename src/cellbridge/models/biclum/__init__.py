"""BiCLUM: unpaired integration of RNA with ATAC gene activity or surface protein (METHODS §1).

``_model`` (the user class), ``_module`` (the torch network), ``_training`` (the loop, single
process or data-parallel), ``_data`` (input preparation, cell pairs), ``_presets``.
"""

from ._model import BiCLUM
from ._presets import DEFAULT_CHANGES, PRESETS, BiCLUMParams, resolve_params

__all__ = ["BiCLUM", "BiCLUMParams", "resolve_params", "DEFAULT_CHANGES", "PRESETS"]
