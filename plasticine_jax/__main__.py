"""Entry point for ``python -m plasticine_jax``."""

import sys

from plasticine_jax.cli import main

sys.exit(main())
