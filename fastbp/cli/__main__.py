"""``python -m fastbp.cli``: the fastbp command line (as ``fastbp`` and ``python -m fastbp``)."""

import sys

from . import main

sys.exit(main())
