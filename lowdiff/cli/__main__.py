"""`python -m lowdiff.cli` (what torchrun launches: `torchrun ... -m lowdiff.cli COMMAND`)."""
import sys

from . import main

sys.exit(main())
