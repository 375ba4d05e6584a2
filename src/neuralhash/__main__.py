"""``python -m neuralhash``: the ``neuralhash`` command."""

import sys

from .cli import main

sys.exit(main())
