"""The two Hausdorff distances of one model on a labelled test set: SimpleITK's region Hausdorff
(the reference's HD column: over every pixel of each mask) and the boundary Hausdorff (MedPy's
hd: over the masks' boundary pixels), with each image's difference, checked against a plain
SimpleITK call on the whole masks.

  python -m bench.hausdorff --model pretrained --data ../shared/data/isic_seed128
"""

from __future__ import annotations

import numpy as np

from bench.report import finish, parser


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", default="pretrained", help="pretrained, a run folder or a .keras file")
    p.add_argument("--data", required=True, help="a data set folder with a test split")
    args = p.parse_args(argv)
    import SimpleITK as sitk

    from skinseg.data_pipeline.discovery import discover_pairs
    from skinseg.evaluation.score_run import EvalSettings, masks_to_score
    from skinseg.inference.segmenter import Segmenter
    from skinseg.metrics import image_metrics

    pairs = discover_pairs(args.data).splits["test"]
    segmenter = Segmenter.load(args.model)
    region, boundary, worst_oracle = [], [], 0.0
    for _pair, pred, truth, _spacing, _, _ in masks_to_score(segmenter, pairs, EvalSettings()):
        metrics = image_metrics(pred, truth)
        region.append(metrics["hausdorff_itk"])
        boundary.append(metrics["hd"])
        if pred.any() and truth.any():
            f = sitk.HausdorffDistanceImageFilter()
            f.Execute(*(sitk.GetImageFromArray(m.astype(np.uint8)) for m in (pred, truth)))
            worst_oracle = max(worst_oracle, abs(f.GetHausdorffDistance() - metrics["hausdorff_itk"]))
    region, boundary = np.array(region), np.array(boundary)
    rows = [
        {"metric": "Hausdorff distance (ITK, region; the reference's HD)", "mean": float(region.mean())},
        {"metric": "Boundary HD (MedPy's hd)", "mean": float(boundary.mean())},
        {"metric": "images where they differ", "mean": int(np.sum(~np.isclose(region, boundary)))},
        {"metric": "largest difference boundary - region (px)", "mean": float((boundary - region).max())},
        {"metric": "max |ours - plain SimpleITK| on whole masks", "mean": worst_oracle},
    ]
    finish(
        "hausdorff",
        args,
        rows,
        ["metric", "mean"],
        {"images": len(region), "hd_region": float(region.mean()), "hd_boundary": float(boundary.mean())},
    )


if __name__ == "__main__":
    main()
