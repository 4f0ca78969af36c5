"""``python -m latalign.cli``: the ``latalign`` console script."""

import sys

from latalign.cli import main

sys.exit(main())
