"""`python -m profilesync`: the same command as the `profilesync` console script."""

import sys

from profilesync.cli import main

sys.exit(main())
