"""latalign's fairseq plugin: ``fairseq-train --user-dir "$(python -m latalign.fairseq_plugin)"``.

Registers the criteria ``latalign_ctc``, ``latalign_axe``, ``latalign_dag``
(:mod:`.criterions`) and the archs ``latalign_nat_upsampled``, ``latalign_nat_dag``
(:mod:`.models`) with fairseq (0.12; no fork, no CUDA build). fairseq is an optional
dependency imported only here: ``import latalign`` never imports this package, and
:mod:`.layout` (the plugin's tensor helpers) imports no fairseq. Where fairseq is not
installed, importing this package registers nothing and only :mod:`.layout` is usable.

fairseq imports a ``--user-dir`` under its folder's name (``fairseq_plugin``); the absolute
imports below make the criteria and archs modules of ``latalign.fairseq_plugin`` either way,
so they register exactly once.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if __name__ != "latalign.fairseq_plugin":  # imported by fairseq from --user-dir
    _here = Path(__file__).resolve().parent
    if "latalign" not in sys.modules and importlib.util.find_spec("latalign") is None:
        sys.path.insert(0, str(_here.parents[1]))  # a source checkout: its src/
    import latalign

    if Path(latalign.__file__).resolve().parent != _here.parent:
        raise ImportError(
            f"expected --user-dir to be the plugin of the imported latalign "
            f"({Path(latalign.__file__).resolve().parent / 'fairseq_plugin'}), found {_here}"
        )

if importlib.util.find_spec("fairseq") is not None:
    from latalign.fairseq_plugin import criterions, models  # noqa: F401  (registration)
