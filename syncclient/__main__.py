"""``python -m syncclient`` is ``drive-sync``."""

import sys

from .cli import main

sys.exit(main())
