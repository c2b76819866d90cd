"""`python -m tests.sim --seed N --steps M` (see tests/sim/runner.py)."""

import sys

from tests.sim.runner import main

sys.exit(main())
