"""``python -m resnets`` is the ``resnets`` command."""

import sys

from resnets.cli import main

sys.exit(main())
