"""`python -m workbench.cli ARGS`: the same as `workbench ARGS`."""

import sys

from workbench.cli.core import main

sys.exit(main())
