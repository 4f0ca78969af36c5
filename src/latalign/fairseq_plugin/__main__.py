"""``python -m latalign.fairseq_plugin``: print the folder to pass as ``--user-dir``.

Exit status 2 with one line on stderr when fairseq is not importable here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> int:
    if importlib.util.find_spec("fairseq") is None:
        print(
            "latalign.fairseq_plugin: expected fairseq importable in this Python "
            f"({sys.executable}), found none (pip install fairseq-fixed==0.12.3.1)",
            file=sys.stderr,
        )
        return 2
    print(Path(__file__).resolve().parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
