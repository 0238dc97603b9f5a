"""`python -m skinseg.models`: the models command (skinseg/cli/models.py)."""

import sys

from skinseg.cli.models import main

if __name__ == "__main__":
    sys.exit(main())
