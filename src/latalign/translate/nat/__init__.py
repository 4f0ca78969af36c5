"""Non-autoregressive translation (issue 10): model, criteria, decoding.

- :mod:`.model`: :class:`NATransformer` (the AR model's encoder and decoder layers, run without
  causal mask from a copied-source or mask input) and :class:`NATConfig`.
- :mod:`.criteria`: :func:`nat_loss`, the stack's criteria ``ce``, ``label_smoothed_ce``,
  ``axe``, ``ctc``, ``latent`` at the decoder's output lengths, plus the length-predictor term.
- :mod:`.decode`: the length beam (``ce``/``axe``) and the CTC collapse (``ctc``/``latent``).
- :mod:`.plugin`: the ``nat`` arch of :mod:`latalign.translate.registry`.

See docs/nat.md.
"""

from latalign.translate.nat.criteria import (
    LENGTH_MODE_OF,
    check_nat_criterion,
    length_mode,
    nat_loss,
    nat_targets,
)
from latalign.translate.nat.decode import (
    ctc_collapse,
    ctc_decode,
    decode_batch,
    length_beam_decode,
)
from latalign.translate.nat.model import NATConfig, NATOutput, NATransformer
from latalign.translate.nat.plugin import NAT, NATLoss, check_nat, nat_decoder

__all__ = [
    "NAT",
    "NATLoss",
    "check_nat",
    "LENGTH_MODE_OF",
    "NATConfig",
    "NATOutput",
    "NATransformer",
    "check_nat_criterion",
    "ctc_collapse",
    "ctc_decode",
    "decode_batch",
    "length_beam_decode",
    "length_mode",
    "nat_loss",
    "nat_decoder",
    "nat_targets",
]
