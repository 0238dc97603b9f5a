"""The reference table's data set, rebuilt from an official ISIC 2018 Task 1 download: its 800
training and 200 test images (IDs in reference_split.csv; all from the challenge's training and
validation sets), resized to 128x128 (stretched, as the reference did) with masks resampled on the
images' own geometry, in the {training,testing}/{image,label} layout.

  python -m skinseg.data_pipeline fetch isic2018 --to ISIC2018
  python -m skinseg.data_pipeline make-reference ISIC2018 reference128
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile

import numpy as np

from skinseg.core.atomic import remove_stale_staging
from skinseg.core.errors import DataError
from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.data_pipeline.image_io import read_image, read_mask, resize_image, resize_mask, write_image

SPLIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_split.csv")
SIZE = (128, 128)


def reference_ids(path: str = SPLIT_FILE) -> dict[str, str]:
    """ID -> "train" or "test"."""
    with open(path, encoding="utf-8") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {row["id"]: row["split"] for row in rows}


def make_reference(isic2018: str, out: str, ids_file: str = SPLIT_FILE) -> dict[str, int]:
    """Write the reference's set into `out` (built in a temporary folder, renamed into place)."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        raise DataError(f"{out}: already exists; choose another folder (nothing was written)")
    wanted = reference_ids(ids_file)
    found = discover_pairs(isic2018)
    if found.layout != "isic2018":
        raise DataError(
            f"{found.root}: not an ISIC 2018 download (layout {found.layout}); see `fetch isic2018`"
        )
    available = {p.id: p for name in ("train", "validation") for p in found.splits.get(name, [])}
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise DataError(
            f"{found.root}: {len(missing)} of the reference's {len(wanted)} images are not in its Task 1 "
            f"training or validation sets (e.g. {', '.join(missing[:3])})"
        )
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(parent, ".reference-")  # a killed run's, left behind
    staging = tempfile.mkdtemp(prefix=f".reference-{os.getpid()}-", dir=parent)
    counts = {"train": 0, "test": 0}
    try:
        for id_, split in sorted(wanted.items()):
            pair = available[id_]
            folder = os.path.join(staging, "training" if split == "train" else "testing")
            image = read_image(pair.image, min_size=SIZE)
            mask = read_mask(pair.mask)
            if mask.original_size != image.original_size:
                raise DataError(f"{pair.mask}: not the size of its image {pair.image}")
            write_image(
                os.path.join(folder, "image", f"{id_}.jpg"), resize_image(image.array, SIZE), quality=95
            )
            small = resize_mask(mask.array, SIZE, image.covers).astype(np.uint8) * 255
            write_image(os.path.join(folder, "label", f"{id_}_segmentation.png"), small)
            counts[split] += 1
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts
