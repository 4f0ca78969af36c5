"""``latalign reproduce``: the paper's experiments and the report (docs/reproduce.md); its
options and work are :mod:`latalign.reproduce.cli`."""

from __future__ import annotations

from latalign.reproduce.cli import add_arguments
from latalign.reproduce.cli import main as run

HELP = "run the paper's experiments and write a report (docs/reproduce.md)"

__all__ = ["HELP", "add_arguments", "run"]
