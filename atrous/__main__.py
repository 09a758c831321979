"""``python -m atrous`` (and ``torchrun -m atrous``) runs the CLI."""

import sys

from atrous.cli import main

sys.exit(main())
