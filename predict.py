"""Segment images with a saved model: `python predict.py --help` (options in skinseg/cli/predict.py)."""

import sys

from skinseg.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
