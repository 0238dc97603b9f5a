"""Does the input pipeline keep the model fed? tf.data delivery rate (128 px batches of 8,
pipeline alone, after the first epoch filled the cache; the first, decoding epoch reported too)
against the rate at which the baseline UNet's training step consumes them; and the cost of the
on-device augmentation (--aug) as a share of the training step.
  python -m bench.pipeline [--full] [--data PATH]
"""

from __future__ import annotations

import time

import numpy as np

from bench.data import bench_pairs
from bench.report import finish, parser


def delivery(pairs, size, batch, clahe, batches):
    from skinseg.data_pipeline.preprocess import Preprocessing
    from skinseg.data_pipeline.tfdata import make_dataset, steps_per_epoch

    ds = make_dataset(
        pairs, size, batch, training=True, seed=0, cache="memory", preprocessing=Preprocessing(clahe=clahe)
    )
    it = iter(ds)
    epoch = steps_per_epoch(len(pairs), batch)
    start = time.perf_counter()
    for _ in range(epoch):  # first epoch: decode, resize, (CLAHE), fill the cache
        next(it)
    cold = epoch * batch / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return cold, batches * batch / (time.perf_counter() - start)


def step_times(size, batch, steps, width):
    """Median step seconds without and with --aug, the two trainers' steps interleaved so that
    any drift of the machine hits both alike."""
    from skinseg.data_pipeline.augment import build_augmenter
    from skinseg.losses import get_loss
    from skinseg.models.registry import build_model
    from skinseg.training.trainer import DiceScore, SegmentationTrainer

    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3)).astype("float32")
    y = (rng.random((batch, size, size, 1)) > 0.5).astype("float32")
    trainers = []
    for aug in (False, True):
        trainer = SegmentationTrainer(
            build_model("baseline", size, width=width), build_augmenter(0) if aug else None
        )
        trainer.compile(optimizer="adam", loss=get_loss("bce"), metrics=[DiceScore()])
        for _ in range(2):
            trainer.train_on_batch(x, y)
        trainers.append(trainer)
    times = [[], []]
    for _ in range(steps):
        for k, trainer in enumerate(trainers):
            start = time.perf_counter()
            trainer.train_on_batch(x, y)
            times[k].append(time.perf_counter() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def augmenter_alone(size, batch):
    """Seconds for the --aug policy alone on one batch (compiled, as inside the train step)."""
    import tensorflow as tf

    from bench.report import timed
    from skinseg.data_pipeline.augment import build_augmenter

    augmenter = build_augmenter(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, size, size, 3)).astype("float32"))
    y = tf.constant((rng.random((batch, size, size, 1)) > 0.5).astype("float32"))
    run = tf.function(lambda: augmenter({"images": x, "segmentation_masks": y}, training=True)["images"])
    return timed(lambda: run().numpy(), repeat=20, warmup=2)


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--data", help="data set folder (default: ../shared/data/isic_seed128, else synthetic)")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    size, batch = 128, args.batch
    width = None if args.full else 32
    steps = 30 if args.full else 12
    root, pairs = bench_pairs("train", args.data)
    rows = []
    for clahe in (False, True):
        cold, warm = delivery(pairs, size, batch, clahe, batches=200)
        rows.append(
            {
                "what": f"tf.data delivery{' + CLAHE' if clahe else ''}",
                "cold_img_per_s": cold,
                "img_per_s": warm,
            }
        )
    plain, augmented = step_times(size, batch, steps, width)
    consume, consume_aug = batch / plain, batch / augmented
    rows.append(
        {"what": f"baseline (width {width or 64}) train step", "img_per_s": consume, "step_ms": 1000 * plain}
    )
    rows.append(
        {"what": "  ... with --aug on the device", "img_per_s": consume_aug, "step_ms": 1000 * augmented}
    )
    alone = augmenter_alone(size, batch)
    rows.append({"what": "  --aug policy alone, per batch", "step_ms": 1000 * alone})
    ratio = min(r["img_per_s"] for r in rows[:2]) / consume
    ratios = {
        "delivery_over_consumption": ratio,
        "aug_step_overhead_pct": 100 * (augmented - plain) / plain,
        "aug_alone_pct_of_step": 100 * alone / plain,
    }
    finish(
        "pipeline",
        args,
        rows,
        ["what", "cold_img_per_s", "img_per_s", "step_ms"],
        ratios,
        notes=f"data: {root} ({len(pairs)} training pairs), {size} px, batch {batch}",
    )


if __name__ == "__main__":
    main()
