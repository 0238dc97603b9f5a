"""The evaluation metric path (overlap metrics from one confusion count; MedPy surface distances
on the joint crop, each directed set computed once) against plain per-metric MedPy calls
(dc, jc, sensitivity, specificity, hd, hd95, asd, assd on the full masks, and SimpleITK's average
Hausdorff distance), at 767x1022 (a typical
ISIC original) and 128x128. Masks: synthetic lesion outlines; predictions: the truth shifted,
dilated or eroded, as a segmenter errs. Values are checked equal before timing.
  python -m bench.metrics [--full]
"""

from __future__ import annotations

import numpy as np
from medpy.metric import binary as mb
from scipy import ndimage

from bench.report import finish, parser, timed


def cases(shape, n, seed=0):
    from skinseg.data_pipeline.synthetic import _lesion_shape

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        truth = _lesion_shape(rng, shape)
        pred = np.roll(truth, tuple(rng.integers(-shape[0] // 40 - 1, shape[0] // 40 + 2, 2)), axis=(0, 1))
        grow = int(rng.integers(1, max(2, shape[0] // 60)))
        pred = (
            ndimage.binary_dilation(pred, iterations=grow)
            if rng.random() < 0.5
            else ndimage.binary_erosion(pred, iterations=grow)
        )
        out.append((pred, truth))
    return out


def plain_medpy(pred, truth):
    return {
        "dice": mb.dc(pred, truth),
        "jaccard": mb.jc(pred, truth),
        "sensitivity": mb.sensitivity(pred, truth),
        "specificity": mb.specificity(pred, truth),
        "hd": mb.hd(pred, truth),
        "hd95": mb.hd95(pred, truth),
        "asd_medpy": mb.asd(pred, truth),
        "assd_medpy": mb.assd(pred, truth),
        "avg_hausdorff": _itk_average_hausdorff(pred, truth),
    }


def _itk_average_hausdorff(pred, truth):
    import SimpleITK as sitk

    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(*(sitk.GetImageFromArray(m.astype(np.uint8)) for m in (pred, truth)))
    return hausdorff.GetAverageHausdorffDistance()


def main(argv=None) -> None:
    p = parser(__doc__)
    args = p.parse_args(argv)
    from skinseg.metrics import image_metrics

    n = 40 if args.full else 12
    rows, ratios = [], {}
    for shape in ((767, 1022), (128, 128)):
        pairs = [c for c in cases(shape, n) if c[0].any() and c[1].any()]
        for pred, truth in pairs:  # identical values, or the speed means nothing
            ours, ref = image_metrics(pred, truth), plain_medpy(pred, truth)
            assert all(abs(ours[k] - ref[k]) <= 1e-9 for k in ref), (ours, ref)
        fast = timed(lambda pairs=pairs: [image_metrics(p, t) for p, t in pairs], repeat=3) / len(pairs)
        slow = timed(lambda pairs=pairs: [plain_medpy(p, t) for p, t in pairs], repeat=3) / len(pairs)
        label = f"{shape[0]}x{shape[1]}"
        rows.append(
            {
                "size": label,
                "images": len(pairs),
                "ours_ms": 1000 * fast,
                "plain_medpy_ms": 1000 * slow,
                "speedup": slow / fast,
            }
        )
        ratios[f"speedup_{label}"] = slow / fast
    finish("metrics", args, rows, ["size", "images", "ours_ms", "plain_medpy_ms", "speedup"], ratios)


if __name__ == "__main__":
    main()
