"""Check a run's evaluation against the references, image by image: Dice, Jaccard and
threshold-Jaccard from the ISIC challenge's scoring package, HD, HD95 and ASSD from plain MedPy
calls on the full masks. Re-predicts the test split exactly as evaluate.py does (--at input).
  python -m bench.verify_metrics --run runs/NAME
"""

from __future__ import annotations

import csv
import os

import numpy as np

from bench.report import finish, parser


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    args = p.parse_args(argv)
    from isic_challenge_scoring import metrics as isic
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix
    from medpy.metric import binary as mb

    from data_pipeline.split import read_split
    from data_pipeline.tfdata import make_dataset
    from models.inference import input_size, load_segmenter, predict_probabilities
    from training.config import RunConfig

    config = RunConfig.load(os.path.join(args.run, "config.json"))
    model = load_segmenter(os.path.join(args.run, "best.keras"))
    pairs = read_split(os.path.join(args.run, "split.json"))["test"]
    with open(os.path.join(args.run, "eval", "per_image.csv"), newline="") as handle:
        ours = {row["id"]: row for row in csv.DictReader(handle)}
    dataset = make_dataset(pairs, input_size(model), 16, training=False, cache="none", clahe=config.clahe)
    worst = dict.fromkeys(["dice", "jaccard", "threshold_jaccard", "hd", "hd95", "assd"], 0.0)
    index, checked = 0, 0
    for images, masks in dataset:
        probs = predict_probabilities(model, images.numpy())
        for k in range(len(probs)):
            row = ours[pairs[index].id]
            index += 1
            pred, truth = probs[k] > 0.5, masks[k, :, :, 0].numpy() > 0.5
            cm = create_binary_confusion_matrix(truth_binary_values=truth, prediction_binary_values=pred)
            reference = {
                "dice": isic.binary_dice(cm),
                "jaccard": isic.binary_jaccard(cm),
                "threshold_jaccard": isic.binary_threshold_jaccard(cm, threshold=0.65),
            }
            if pred.any() and truth.any():
                reference.update(hd=mb.hd(pred, truth), hd95=mb.hd95(pred, truth), assd=mb.assd(pred, truth))
            for key, value in reference.items():
                worst[key] = max(worst[key], abs(float(row[key]) - float(value)))
            checked += 1
    rows = [
        {
            "metric": k,
            "reference": "isic-challenge-scoring"
            if k in ("dice", "jaccard", "threshold_jaccard")
            else "medpy",
            "max_abs_difference": v,
        }
        for k, v in worst.items()
    ]
    assert all(np.isfinite(list(worst.values())))
    finish(
        "verify_metrics",
        args,
        rows,
        ["metric", "reference", "max_abs_difference"],
        {
            "max_overlap_diff": max(worst[k] for k in ("dice", "jaccard", "threshold_jaccard")),
            "max_distance_diff": max(worst[k] for k in ("hd", "hd95", "assd")),
        },
        notes=f"{checked} test images of {args.run}",
    )


if __name__ == "__main__":
    main()
