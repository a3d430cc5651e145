"""``python -m emergence``: the ``emergence`` command (:mod:`emergence.cli`)."""

import sys

from emergence.cli import main

sys.exit(main())
