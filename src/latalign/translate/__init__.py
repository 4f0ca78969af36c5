"""The translation stack: data, BPE, transformer, criteria, regimes, training, decoding, metrics.

Imports the alignment library (:mod:`latalign.align`); the library never imports this.
Importing the package registers the built-in entries of :mod:`latalign.translate.registry`
by importing their modules explicitly (no auto-loading): the criteria, the decoder-input
regimes, and the archs ``ar``, ``ar_aux_ctc`` and ``nat``. A configuration (:class:`~latalign.translate.config.TrainConfig`)
is validated against that registry, so it knows every built-in name whichever module of the
stack was imported first.
"""

from latalign.translate import ar, aux_ctc, criteria, regimes  # noqa: F401  (registers)
from latalign.translate.nat import dag, plugin  # noqa: F401  (registers ``dag``, ``nat``)
