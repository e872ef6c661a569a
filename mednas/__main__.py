"""``python -m mednas`` runs the command line."""

import sys

from mednas.cli import main

sys.exit(main())
