"""Non-autoregressive translation (issue 10): model, criteria, decoding.

- :mod:`.model`: :class:`NATransformer` (the AR model's encoder and decoder layers, run without
  causal mask from a copied-source or mask input) and :class:`NATConfig`.
- :mod:`.criteria`: :func:`nat_loss` over ``ce``, ``label_smoothed_ce``, ``axe``, ``ctc``,
  ``latent`` (all from :mod:`latalign.align`), plus the length-predictor term.
- :mod:`.decode`: the length beam (``ce``/``axe``) and the CTC collapse (``ctc``/``latent``).

See docs/nat.md.
"""

from latalign.translate.nat.criteria import (
    NAT_CRITERIA,
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
    nat_translate_sentences,
)
from latalign.translate.nat.model import NATConfig, NATOutput, NATransformer
from latalign.translate.nat.plugin import NAT, NATLoss, check_nat

__all__ = [
    "NAT",
    "NATLoss",
    "check_nat",
    "NAT_CRITERIA",
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
    "nat_targets",
    "nat_translate_sentences",
]
