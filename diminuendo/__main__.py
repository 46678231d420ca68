"""`python -m diminuendo` runs the command line."""

import sys

from diminuendo.cli import main

if __name__ == "__main__":
    sys.exit(main())
