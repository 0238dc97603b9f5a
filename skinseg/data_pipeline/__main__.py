"""`python -m skinseg.data_pipeline`: the data command (skinseg/cli/data.py)."""

import sys

from skinseg.cli.data import main

if __name__ == "__main__":
    sys.exit(main())
