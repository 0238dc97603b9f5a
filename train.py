"""Train a segmentation model and leave a complete run folder.

python train.py --model slightly_bigger_deeper --aug --data ISIC2018/
python train.py --model baseline --width 16 --epochs 8        # synthetic data, CPU-sized
python train.py --out runs/NAME --resume                      # continue an interrupted run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _max_filters(text: str) -> int | None:
    return None if text.lower() in ("none", "0") else int(text)


def build_parser() -> argparse.ArgumentParser:
    from models.registry import model_names
    from training.config import CACHES, LOSSES, LR_SCHEDULES, OPTIMIZERS, STRATEGIES, RunConfig

    d = RunConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add(
        "--model",
        default=d.model,
        help=f"model preset: {', '.join(model_names())} (default: %(default)s)",
    )
    add(
        "--data",
        nargs="+",
        metavar="PATH",
        default=None,
        help="data set folder (ISIC 2016/2017/2018 as unzipped, or {training,testing}/{image,label}), "
        "or an images folder and a masks folder (default: the built-in synthetic set)",
    )
    add(
        "--image-size",
        type=int,
        default=d.image_size,
        help="training resolution in pixels (default: %(default)s)",
    )
    add("--epochs", type=int, default=d.epochs, help="epochs (default: %(default)s)")
    add(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="global batch size (default: %(default)s)",
    )
    add("--lr", type=float, default=d.lr, help="learning rate (default: %(default)s)")
    add("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="(default: %(default)s)")
    add(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help="AdamW weight decay (default: %(default)s)",
    )
    add("--loss", choices=LOSSES, default=d.loss, help="(default: %(default)s, as the reference)")
    add(
        "--aug",
        action="store_true",
        help="augmentation on the accelerator: flips, 90-degree rotations, "
        "rotation, zoom, translation, brightness/contrast/hue (default: off)",
    )
    add(
        "--elastic",
        type=float,
        default=d.elastic,
        help="with --aug: probability of an elastic warp per image (default: %(default)s)",
    )
    add(
        "--clahe",
        action="store_true",
        help="CLAHE on every image, at train, test and inference time (default: off)",
    )
    add(
        "--color-constancy",
        action="store_true",
        help="Shades-of-Gray colour constancy on every image, at train, test and inference time "
        "(and inside the exported SavedModel/TFLite; default: off)",
    )
    add(
        "--flooding",
        type=float,
        default=d.flooding,
        metavar="B",
        help="flood level b of |L - b| + b; 0 = off (default: %(default)s)",
    )
    add(
        "--flooding-start",
        type=int,
        default=d.flooding_start,
        help="first epoch with flooding (default: %(default)s)",
    )
    add(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=d.lr_schedule,
        help="step: x0.1 every 30 epochs (as the reference); cosine: linear warm-up then cosine; "
        "plateau: halve on a stalled validation loss (default: %(default)s)",
    )
    add(
        "--step-every",
        type=int,
        default=d.step_every,
        help="step schedule period in epochs (default: %(default)s)",
    )
    add(
        "--step-factor",
        type=float,
        default=d.step_factor,
        help="step schedule factor (default: %(default)s)",
    )
    add(
        "--warmup-epochs",
        type=int,
        default=d.warmup_epochs,
        help="cosine warm-up epochs (default: %(default)s)",
    )
    add(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of the training data held out for validation (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=d.seed,
        help="seeds Python, NumPy, TensorFlow, shuffling and augmentation (default: %(default)s)",
    )
    add(
        "--deterministic",
        action="store_true",
        help="enable TensorFlow op determinism (slower; default: off)",
    )
    add("--mixed-precision", action="store_true", help="mixed_float16 (for GPUs; default: off)")
    add(
        "--width",
        type=int,
        default=None,
        help="override the preset's width (UNet first-level filters, "
        "DeepLab ASPP filters, HarDNet RFB channels)",
    )
    add("--depth", type=int, default=None, help="override the UNet preset's number of levels")
    add(
        "--max-filters",
        type=_max_filters,
        default=d.max_filters,
        help="UNet channel cap; 'none' restores the uncapped reference (default: %(default)s)",
    )
    add(
        "--padding",
        choices=("reflect", "zeros"),
        default=d.padding,
        help="UNet convolution padding: reflect (the reference) or zeros (about 15%% faster on a CPU) "
        "(default: %(default)s)",
    )
    add(
        "--backbone",
        choices=("resnet101", "resnet50"),
        default=d.backbone,
        help="DeepLabV3+ backbone, complete and dilated to output stride 16 (default: %(default)s, "
        "the reference's)",
    )
    add(
        "--backbone-weights",
        default=d.backbone_weights,
        help="imagenet, none, or a local weights file (DeepLab: its ResNet; HarDNet: encoder) "
        "(default: %(default)s: from scratch, as the reference)",
    )
    add(
        "--strategy",
        choices=STRATEGIES,
        default=d.strategy,
        help="auto: MirroredStrategy when several GPUs are visible (default: %(default)s)",
    )
    add(
        "--logical-cpus",
        type=int,
        default=d.logical_cpus,
        help="split the CPU into N logical devices (to test tf.distribute without GPUs; default: off)",
    )
    add(
        "--cache",
        choices=CACHES,
        default=d.cache,
        help="where decoded, resized images are cached; auto: memory when they fit in a quarter of "
        "the available RAM, else disk (default: %(default)s)",
    )
    add("--monitor", default=d.monitor, help="metric that selects best.keras (default: %(default)s)")
    add(
        "--early-stopping",
        type=int,
        default=d.early_stopping,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without improvement; 0 = off (default: %(default)s)",
    )
    add(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="epochs between last.keras/resume checkpoints; best.keras is saved whenever it improves "
        "(default: %(default)s)",
    )
    add(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard logs to the run folder (default: off)",
    )
    add(
        "--skip-bad",
        action="store_true",
        help="leave out unusable files instead of stopping (default: off)",
    )
    add("--out", default="", help="run folder (default: runs/<name derived from the options>)")
    add(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last completed epoch, "
        "with its stored configuration and split",
    )
    add("--overwrite", action="store_true", help="replace an existing run folder")
    add(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="Keras progress: 0 silent, 1 bar, 2 one line per epoch",
    )
    return p


def config_from_args(args):
    from training.config import RunConfig

    data, masks = (args.data + [None])[:2] if args.data else (None, None)
    if args.data and len(args.data) > 2:
        raise ValueError("--data takes one data set folder, or an images folder and a masks folder")
    return RunConfig(
        model=args.model,
        data=os.path.abspath(data) if data else None,
        masks=os.path.abspath(masks) if masks else None,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        loss=args.loss,
        aug=args.aug,
        elastic=args.elastic,
        clahe=args.clahe,
        color_constancy=args.color_constancy,
        flooding=args.flooding,
        flooding_start=args.flooding_start,
        lr_schedule=args.lr_schedule,
        step_every=args.step_every,
        step_factor=args.step_factor,
        warmup_epochs=args.warmup_epochs,
        val_fraction=args.val_fraction,
        seed=args.seed,
        deterministic=args.deterministic,
        mixed_precision=args.mixed_precision,
        width=args.width,
        depth=args.depth,
        max_filters=args.max_filters,
        padding=args.padding,
        backbone=args.backbone,
        backbone_weights=args.backbone_weights,
        strategy=args.strategy,
        logical_cpus=args.logical_cpus,
        cache=args.cache,
        monitor=args.monitor,
        early_stopping=args.early_stopping,
        checkpoint_every=args.checkpoint_every,
        tensorboard=args.tensorboard,
        skip_bad=args.skip_bad,
        out=args.out,
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
    from data_pipeline.errors import DataError
    from models.deeplab import BackboneWeightsError
    from models.registry import UnknownModelError, resolve
    from training.config import RunConfig
    from training.distribute import StrategyError, split_cpu
    from training.run import RunFolderError, TrainingDiverged, run_training

    try:
        if args.resume:
            if not args.out:
                raise RunFolderError("--resume needs --out runs/NAME (the run to continue)")
            stored = os.path.join(args.out, "config.json")
            config = RunConfig.load(stored) if os.path.exists(stored) else RunConfig(out=args.out)
            config = config.replace(out=args.out)
        else:
            config = config_from_args(args)
            resolve(config.model)
        split_cpu(config.logical_cpus)  # before TensorFlow initialises its devices
        verbose = "auto" if args.verbose is None else args.verbose
        result = run_training(config, resume=args.resume, overwrite=args.overwrite, verbose=verbose)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (
        DataError,
        RunFolderError,
        StrategyError,
        BackboneWeightsError,
        UnknownModelError,
        ValueError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with: python train.py --out RUN --resume", file=sys.stderr)
        return 130
    print(f"run folder: {result.run_dir} ({result.completed_epochs} epochs, best epoch {result.best_epoch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
