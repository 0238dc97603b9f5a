"""Check a run's evaluation against the references, image by image: Dice, Jaccard and
threshold-Jaccard from the ISIC challenge's scoring package; HD, HD95, ASD and ASSD from plain
MedPy calls and the average Hausdorff distance from a plain SimpleITK call, all on the full
masks. Re-predicts the test split exactly as evaluate.py did (the settings in its summary.json).
  python -m bench.verify_metrics --run runs/NAME
"""

from __future__ import annotations

import numpy as np

from bench.report import finish, parser

OVERLAP = ("dice", "jaccard", "threshold_jaccard")
DISTANCES = ("hd", "hd95", "asd_medpy", "assd_medpy", "avg_hausdorff", "hausdorff_itk")


def references(pred, truth, spacing) -> dict:
    import SimpleITK as sitk
    from isic_challenge_scoring import metrics as isic
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix
    from medpy.metric import binary as mb

    cm = create_binary_confusion_matrix(truth_binary_values=truth, prediction_binary_values=pred)
    out = {
        "dice": isic.binary_dice(cm),
        "jaccard": isic.binary_jaccard(cm),
        "threshold_jaccard": isic.binary_threshold_jaccard(cm, threshold=0.65),
    }
    if pred.any() and truth.any():
        images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in (pred, truth)]
        for image in images:
            image.SetSpacing((1.0, 1.0) if spacing is None else (spacing[1], spacing[0]))
        hausdorff = sitk.HausdorffDistanceImageFilter()
        hausdorff.Execute(*images)
        out.update(
            hd=mb.hd(pred, truth, spacing),
            hd95=mb.hd95(pred, truth, spacing),
            asd_medpy=mb.asd(pred, truth, spacing),
            assd_medpy=mb.assd(pred, truth, spacing),
            avg_hausdorff=hausdorff.GetAverageHausdorffDistance(),
            hausdorff_itk=hausdorff.GetHausdorffDistance(),
        )
    return out


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    args = p.parse_args(argv)
    from skinseg.core.run_folder import RunFolder
    from skinseg.data_pipeline.split import read_split
    from skinseg.evaluation.score_run import EvalSettings, masks_to_score
    from skinseg.evaluation.spacing import parse_spacing
    from skinseg.inference.postprocess import PostProcessing
    from skinseg.inference.segmenter import Segmenter

    run = RunFolder(args.run)
    stored = run.read_summary()["settings"]
    settings = EvalSettings(**{k: v for k, v in stored.items() if k not in ("version", "data")})
    pairs = read_split(run.split_path)["test"]
    ours = {row["id"]: row for row in run.read_per_image()}
    worst = dict.fromkeys([*OVERLAP, *DISTANCES], 0.0)
    checked = 0
    spacing_of = parse_spacing(settings.spacing)
    post = PostProcessing.from_json(run.read_summary()["postprocess"])  # the masks evaluate.py scored
    segmenter = Segmenter.from_run(run.path, tta=settings.tta, post=post)
    for pair, pred, truth, spacing, _, _ in masks_to_score(segmenter, pairs, settings, spacing_of=spacing_of):
        for key, value in references(pred, truth, spacing).items():
            worst[key] = max(worst[key], abs(float(ours[pair.id][key]) - float(value)))
        checked += 1
    rows = [
        {
            "metric": k,
            "reference": "isic-challenge-scoring"
            if k in OVERLAP
            else "SimpleITK"
            if k in ("avg_hausdorff", "hausdorff_itk")
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
            "max_overlap_diff": max(worst[k] for k in OVERLAP),
            "max_distance_diff": max(worst[k] for k in DISTANCES),
        },
        notes=f"{checked} test images of {args.run}, scored at {settings.at} size",
    )


if __name__ == "__main__":
    main()
