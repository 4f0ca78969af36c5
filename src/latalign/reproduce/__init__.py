"""``latalign reproduce``: the paper's experiments end to end, with a report.

>>> from latalign.reproduce import ReproduceOptions, run_reproduction
>>> # results = run_reproduction(ReproduceOptions(out="runs/reproduce"))

Layout (one job per module, imports only downward):

- :mod:`.presets` sizes; :mod:`.records` the typed results (``ExperimentResult``,
  ``MapResult``, ``Claim``, ``Results``); :mod:`.store` ``result.json`` and reuse;
  :mod:`.context` the shared state, ``TrainConfig``s and worker processes.
- :mod:`.trained` the one door to a trained run (load, decode as trained, gold inputs,
  distillation); :mod:`.cells` the one cell runner (reuse → train → load → decode → write);
  :mod:`.validation` teacher-forced measurements; :mod:`.analysis` pure functions.
- Experiment groups (:mod:`.groups`, listed in :mod:`.registry`): :mod:`.paper` (its
  experiments in :mod:`.experiments`, :mod:`.baseline`, :mod:`.theorem_map`; claims in
  :mod:`.claims`; section in :mod:`.report` with :mod:`.figures`), :mod:`.nat`,
  :mod:`.beyond_tf` (:mod:`.beyond_tf_rules`, :mod:`.beyond_tf_report`).
- :mod:`.render` blocks to Markdown/HTML; :mod:`.run` the runner; :mod:`.cli`.
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
