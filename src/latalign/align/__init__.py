"""The alignment library: CTC, AXE, causal AXE and the paper's operator algebra.

Imports nothing of the translation stack. Semantics: ``docs/SPEC.md``.
"""

from .checks import set_validation, validation_enabled
from .dag import DagPath, dag_best_path, dag_best_vertices, dag_loss
from .losses import Alignment, axe_loss, best_alignment, ctc_loss, latent_alignment_loss, path_alpha
from .objective import (
    AXE_OPERATORS,
    OPERATORS,
    SCHEMATIC_CTC_OPERATORS,
    Objective,
    axe_objective,
)

__all__ = [
    "AXE_OPERATORS",
    "OPERATORS",
    "SCHEMATIC_CTC_OPERATORS",
    "Alignment",
    "DagPath",
    "Objective",
    "axe_loss",
    "axe_objective",
    "best_alignment",
    "ctc_loss",
    "dag_best_path",
    "dag_best_vertices",
    "dag_loss",
    "latent_alignment_loss",
    "path_alpha",
    "set_validation",
    "validation_enabled",
]
