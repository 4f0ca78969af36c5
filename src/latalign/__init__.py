"""latalign: latent alignment objectives (CTC, AXE, causal AXE, the operator algebra).

The loss API lives in :mod:`latalign.align` and is re-exported here::

    import latalign as la
    loss = la.axe_loss(log_probs, targets, input_lengths, target_lengths)
"""

from . import align
from .align import (  # noqa: F401 (re-exported: __all__ below)
    AXE_OPERATORS,
    OPERATORS,
    SCHEMATIC_CTC_OPERATORS,
    Alignment,
    DagPath,
    Objective,
    axe_loss,
    best_alignment,
    ctc_loss,
    dag_best_path,
    dag_best_vertices,
    dag_loss,
    latent_alignment_loss,
    set_validation,
    validation_enabled,
)

__version__ = "0.1.0"

__all__ = [name for name in align.__all__ if name in globals()]  # the names imported above
