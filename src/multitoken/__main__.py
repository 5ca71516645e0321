"""`python -m multitoken ...` (and `torchrun -m multitoken ...`) runs the console script."""

import sys

from multitoken.cli.main import main

sys.exit(main())
