"""``python -m medsam_kit <verb>``: the same as the ``medsam-kit`` console script."""

import sys

from medsam_kit.cli.main import main

sys.exit(main())
