"""``python -m berth.cli``: the ``berth`` command."""

import sys

from . import main

sys.exit(main())
