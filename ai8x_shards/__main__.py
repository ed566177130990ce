"""``python -m ai8x_shards`` runs the command line."""

import sys

from .cli import main

sys.exit(main())
