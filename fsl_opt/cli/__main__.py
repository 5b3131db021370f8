"""``python -m fsl_opt.cli``: the same as the ``fsl-opt`` command."""

import sys

from fsl_opt.cli import main

sys.exit(main())
