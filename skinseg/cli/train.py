"""Train a segmentation model and leave a complete run folder.

python train.py --model slightly_bigger_deeper --aug --data ISIC2018/
python train.py --model baseline --width 16 --epochs 8        # synthetic data, CPU-sized
python train.py --recipe best --data ISIC2018/                # the best measured CPU recipe
python train.py --recipe best --data ISIC2018/ --seeds 3      # three runs, seeds 0, 1, 2 (NAME-s0 ...)
python train.py --out runs/NAME --resume                      # continue an interrupted run
python train.py --out runs/NAME --resume --epochs 80          # extend a finished one
"""

from __future__ import annotations

import argparse
import logging
import sys

from skinseg.cli import (
    CommandError,
    exit_codes,
    import_tensorflow,
    positive_int,
    setup_logging,
    where_it_runs,
)

log = logging.getLogger("skinseg")
_NOT_CONFIG = ("resume", "overwrite", "verbose", "seeds")


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    from skinseg.training.config import add_options

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    add_options(parser, suppress_defaults)
    group = parser.add_argument_group("resuming and output")
    default = {"default": argparse.SUPPRESS} if suppress_defaults else {}
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last completed epoch, with its stored configuration and "
        "split (--epochs N extends it; other options are reported and ignored)",
        **default,
    )
    group.add_argument("--overwrite", action="store_true", help="replace an existing run folder", **default)
    group.add_argument(
        "--seeds",
        type=positive_int,
        metavar="N",
        help="train N runs with seeds --seed, --seed+1, ... in OUT-s<seed> (evaluate.py --all reports "
        "their mean and standard deviation as one row)",
        **({"default": argparse.SUPPRESS} if suppress_defaults else {"default": 1}),
    )
    group.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=argparse.SUPPRESS if suppress_defaults else None,
        help="0: quiet; 1: a progress bar and a line per epoch; 2: a line per epoch (default: 1 on a "
        "terminal, else 2)",
    )
    return parser


@exit_codes
def main(argv=None) -> int:
    from skinseg.training.config import RunConfig, config_from_args

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose != 0)
    typed = set(vars(build_parser(True).parse_args(argv)))
    if args.resume:
        if args.seeds > 1:
            raise CommandError("--resume continues one run: resume each of the --seeds runs by its --out")
        if not args.out:
            raise CommandError("--resume needs --out runs/NAME (the run to continue)")
        if args.overwrite:
            raise CommandError("--resume continues a run and --overwrite replaces it: give one of them")
        given = {k: v for k, v in vars(build_parser(True).parse_args(argv)).items() if k not in _NOT_CONFIG}
        configs = [RunConfig(out=args.out)]
    else:
        given = None
        configs = repeats(config_from_args(args, typed), args.seeds)
    import_tensorflow()
    log.info(where_it_runs())
    from skinseg.training.run import run_training

    for config in configs:
        result = run_training(
            config,
            resume=args.resume,
            overwrite=args.overwrite,
            given=given,
            verbose="auto" if args.verbose is None else args.verbose,
        )
        print(
            f"run folder: {result.run_dir} ({result.completed_epochs} epochs, best epoch {result.best_epoch})"
        )
    return 0


def repeats(config, seeds: int) -> list:
    """One configuration per seed; several go to OUT-s<seed> (OUT: --out, or the derived name)."""
    if seeds == 1:
        return [config]
    import os

    from skinseg.training.config import default_run_name

    if config.strategy == "multiworker":
        raise CommandError(
            "--seeds with --strategy multiworker: a process holds one multi-worker strategy; start "
            "the workers once per seed (--seed S --out OUT-sS)"
        )
    base = (
        os.path.normpath(config.out)
        if config.out
        else os.path.join("runs", default_run_name(config.replace(seed=0)))
    )
    return [config.replace(seed=config.seed + i, out=f"{base}-s{config.seed + i}") for i in range(seeds)]
