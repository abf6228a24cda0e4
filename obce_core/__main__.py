"""Entry point for ``python -m obce_core``."""

import sys

from obce_core.cli import main

sys.exit(main())
