"""Train a segmentation model: `python train.py --help` (the options are in skinseg/cli/train.py)."""

import sys

from skinseg.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
