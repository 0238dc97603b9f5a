"""Evaluate trained runs: `python evaluate.py --help` (the options are in skinseg/cli/evaluate.py)."""

import sys

from skinseg.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
