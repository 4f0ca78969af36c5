"""``latalign reproduce``: the paper's experiments end to end, with a report.

>>> from latalign.reproduce import ReproduceOptions, run_reproduction
>>> # results = run_reproduction(ReproduceOptions(out="runs/reproduce"))  # ~10 min on 2 cores

Modules: :mod:`.presets` (sizes), :mod:`.experiments` (train / decode / analyse one
experiment), :mod:`.analysis` (the measurements, pure functions), :mod:`.groups` (experiment
groups that plug in: run, claims, report section), :mod:`.report` (claims, figures,
report.md/html), :mod:`.cli`. CTC with doubled inputs is a training option of the stack
(``latalign.translate.doubled``).
"""

from latalign.reproduce.presets import EXPERIMENTS, PRESETS, Preset, ReproduceOptions
from latalign.reproduce.run import run_reproduction, validate_options

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
    "Preset",
    "ReproduceOptions",
    "run_reproduction",
    "validate_options",
]
