"""``python -m fastbp.bench``: the harness's driver, and (``--worker``) each peer's process."""

import sys

from . import main

sys.exit(main())
