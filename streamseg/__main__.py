"""``python -m streamseg`` runs the command line."""

import sys

from streamseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
