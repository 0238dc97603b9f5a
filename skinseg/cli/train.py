"""Train a segmentation model and leave a complete run folder.

python train.py --model slightly_bigger_deeper --aug --data ISIC2018/
python train.py --model baseline --width 16 --epochs 8        # synthetic data, CPU-sized
python train.py --recipe best --data ISIC2018/                # the best measured CPU recipe
python train.py --recipe best --data ISIC2018/ --seeds 3      # three runs, seeds 0, 1, 2 (NAME-s0 ...)
python train.py --recipe best --data ISIC2018/ --folds 5      # 5-fold cross-validation (NAME-cv5-f0 ...)
python train.py --init-from pretrained --data clinic/ --epochs 20   # fine-tune the shipped model
python train.py --config my_run.json --epochs 30              # options from a file; typed ones win
python train.py --out runs/NAME --resume                      # continue an interrupted run
python train.py --out runs/NAME --resume --epochs 80          # extend a finished one
"""

from __future__ import annotations

import argparse
import logging
import os
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
_NOT_CONFIG = ("resume", "overwrite", "verbose", "seeds", "config")


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
        "--config",
        metavar="FILE.json",
        help="take the options from a JSON file of RunConfig fields (a run's config.json, or a few "
        "keys); options typed on the command line win; its out, created_with and capacity are not used",
        **default,
    )
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
        if getattr(args, "config", None):
            raise CommandError("--resume keeps the run's own config.json; --config starts a new run")
        given = {k: v for k, v in vars(build_parser(True).parse_args(argv)).items() if k not in _NOT_CONFIG}
        configs = [RunConfig(out=args.out)]
    else:
        given = None
        if args.config:
            typed |= _from_file(args, typed)
        if args.init_from:
            typed |= _from_source(args, typed)
        configs = repeats(config_from_args(args, typed), args.seeds)
        if not args.overwrite:
            _refuse_existing(configs)
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


# Fields of a config.json that describe one run's place and history, not options to reuse.
_RECORD_ONLY = ("out", "created_with", "capacity", "init_source")


def _from_file(args, typed: set) -> set:
    """--config FILE.json: its options replace the defaults of the options not typed. Each value is
    typed and checked as config.json's are (an unknown key or a wrong type names the file and the
    key); the options' combination is checked once, with the typed ones. Relative paths in its
    `data` are taken from the file's folder. Returns the names it set."""
    from dataclasses import fields

    from skinseg.core.atomic import read_json
    from skinseg.training.config import RunConfig, coerce_field

    try:
        data = read_json(args.config)
    except (OSError, ValueError) as err:
        raise CommandError(f"--config {args.config}: unreadable ({err})") from None
    if not isinstance(data, dict):
        raise CommandError(f"--config {args.config}: not a JSON object of options")
    known = {f.name: f for f in fields(RunConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise CommandError(
            f"--config {args.config}: unknown key(s) {', '.join(unknown)} (not options of this version)"
        )
    keys = {k for k in data if k not in _RECORD_ONLY and k not in typed}
    if "aug" in typed and not args.aug:
        # the file's augmentation policy goes with its augmentation, as a recipe's does
        # (config_from_args): --no-aug drops both
        keys.discard("aug_policy")
    for key in keys:
        try:
            value = coerce_field(known[key], data[key])
        except (TypeError, ValueError):
            raise CommandError(
                f"--config {args.config}: {key} = {data[key]!r} is not a valid value"
            ) from None
        if key == "data" and value:
            folder = os.path.dirname(os.path.abspath(args.config))
            value = tuple(tuple(os.path.join(folder, p) for p in source) for source in value)
        setattr(args, key, value)
    return keys


def _from_source(args, typed: set) -> set:
    """--init-from: the source's architecture and preprocessing replace the defaults of the options
    not typed (a recipe's included). Returns the names it set."""
    from skinseg.training.config import ConfigError
    from skinseg.training.init_from import source_options

    try:
        options = source_options(args.init_from)
    except ConfigError as err:
        raise CommandError(str(err)) from None
    keys = {k for k in options if k not in typed}
    for key in keys:
        setattr(args, key, options[key])
    if keys:
        log.info(
            "--init-from %s: %s as the source was built and trained",
            args.init_from,
            ", ".join(f"{k}={options[k]}" for k in sorted(keys)),
        )
    if "init" not in typed:  # a recipe's initialisation would be overwritten by the source's weights
        args.init = "keras"
        keys.add("init")
    return keys


def _refuse_existing(configs) -> None:
    """Every run's folder checked before the first trains: a clash found after hours of the first
    run's training is a clash found too late."""
    from skinseg.core.run_folder import RunFolder
    from skinseg.training.config import default_run_name

    for config in configs:
        run = RunFolder(config.out or os.path.join("runs", default_run_name(config)))
        if run.has_config() and run.has_completed_epoch():
            more = f" (one of the {len(configs)} runs asked for)" if len(configs) > 1 else ""
            raise CommandError(
                f"{run.path} already exists{more}; pass --resume --out {run.path} to continue it, "
                "--overwrite to replace it, or --out to choose another folder"
            )


def repeats(config, seeds: int) -> list:
    """One configuration per fold and seed. A fold goes to OUT-f<fold> (also when --fold trains
    one: the same folder as in the whole cross-validation), a repeat to ...-s<seed> (OUT: --out, or
    the name derived from the options, NAME-cv<K> for a cross-validation)."""
    from skinseg.training.config import default_run_name

    folds = range(config.folds) if config.folds and config.fold is None else [config.fold]
    if seeds == 1 and not config.folds:
        return [config]
    if config.strategy == "multiworker" and (seeds > 1 or len(folds) > 1):
        raise CommandError(
            "--seeds or --folds with --strategy multiworker: a process holds one multi-worker strategy; "
            "start the workers once per run (--seed S --fold I --out OUT)"
        )
    base = (
        os.path.normpath(config.out)
        if config.out
        else os.path.join("runs", default_run_name(config.replace(seed=0, fold=None)))
    )
    out = []
    for fold in folds:
        stem = f"{base}-f{fold}" if config.folds else base
        for seed in range(config.seed, config.seed + seeds):
            out.append(config.replace(fold=fold, seed=seed, out=stem if seeds == 1 else f"{stem}-s{seed}"))
    return out
